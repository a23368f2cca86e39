"""kopf handlers: small, one per event, each calling the builders and applying the result.

- create/update/resume: parse the spec (a spec the builders cannot realise → phase Failed with
  the field named, no retry loop), create generated credentials, apply every child;
- timer: re-apply (drift repair) and write the status observed from the children;
- delete: the finalizer applies ``storage.retainPolicy``, and never blocks a namespace that
  is being deleted.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from pydantic import ValidationError

from cryptolake.operator.builders import (
    CA_CERT_KEY,
    KAFKA_USERS,
    SCRAM,
    Pipeline,
    build_ca_secret,
    build_children,
    build_kafka_secret,
    build_minio_secret,
    build_minio_tls_secret,
)
from cryptolake.operator.kafka_auth import ADMIN_USER, client_acls
from cryptolake.operator.kube import Cluster
from cryptolake.operator.models import GROUP, PLURAL, VERSION, CryptoPipelineSpec, spec_error
from cryptolake.operator.pki import KeyPair, issue, make_ca
from cryptolake.operator.services import (
    TOPICS,
    ServiceUnreachable,
    TopicSpec,
    delete_prefix,
    ensure_bucket,
    reconcile_acls,
    reconcile_topics,
)
from cryptolake.operator.settings import OperatorSettings
from cryptolake.operator.status import Observed, build_status, failed_status

log = logging.getLogger(__name__)

RECONCILES = Counter("cryptolake_operator_reconciles", "Reconciles by handler.", ["handler"])
FAILURES = Counter("cryptolake_operator_failures", "Failed reconciles by handler.", ["handler"])
DURATION = Histogram("cryptolake_operator_reconcile_seconds", "Reconcile duration.", ["handler"])
PHASE = Gauge("cryptolake_operator_phase", "1 for each pipeline's current phase.",
              ["namespace", "name", "phase"])  # fmt: skip
# Time in the current phase = now - this (Prometheus: time() - the gauge).
PHASE_SINCE = Gauge(
    "cryptolake_operator_phase_since_timestamp_seconds",
    "When each pipeline entered its current phase.",
    ["namespace", "name"],
)


class State:
    """Process-wide: the API client, the settings, and when a reconcile last succeeded."""

    cluster: Cluster | None = None
    settings: OperatorSettings | None = None
    last_success: float = time.monotonic()


def _cluster() -> Cluster:
    if State.cluster is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return State.cluster


def _pipeline(name: str, namespace: str, uid: str, spec: dict[str, Any]) -> Pipeline:
    assert State.settings is not None
    parsed = CryptoPipelineSpec.model_validate(dict(spec))
    return Pipeline(name, namespace, uid, parsed, State.settings.images())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    operator_settings = OperatorSettings()
    State.settings = operator_settings
    # Progress in annotations, not in .status (our status schema is ours alone).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    try:
        config.load_incluster_config()
    except config.ConfigException:
        # The client's default path is read at import time; $KUBECONFIG may be set later.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    State.cluster = Cluster(client.ApiClient())
    if operator_settings.metrics_port:
        start_http_server(operator_settings.metrics_port)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod its service account, else $KUBECONFIG as it is now."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.probe(id="last_reconcile_age_s")
def last_reconcile_age(**_: Any) -> float:
    """Reported by the liveness endpoint, never failing it: kopf serves /healthz from its event
    loop, so it answers exactly while the loop runs. An idle operator (no pipelines) or a
    standby replica is alive; a pipeline that cannot be reconciled shows in its status."""
    return round(time.monotonic() - State.last_success, 1)


def _answering(observed: Observed, component: str, external: bool) -> bool:
    """Talk to a service only when it is external or has a ready pod (no false alarms while
    it is still starting)."""
    state = observed.workloads.get(component)
    return external or (state is not None and state.ready > 0)


def _kafka_admin_client(pipeline: Pipeline, cluster: Cluster) -> dict[str, str]:
    """librdkafka's properties for the operator as the broker's admin (a TLS broker)."""
    if not pipeline.kafka_tls:
        return {}
    keys = cluster.secret_keys(pipeline.namespace, pipeline.kafka_secret)
    ca = cluster.secret_keys(pipeline.namespace, pipeline.ca_secret)
    return {
        "security.protocol": "SASL_SSL", "sasl.mechanisms": SCRAM,
        "sasl.username": ADMIN_USER, "sasl.password": keys[ADMIN_USER],
        "ssl.ca.pem": ca[CA_CERT_KEY],
    }  # fmt: skip


def _check_broker(pipeline: Pipeline, cluster: Cluster, observed: Observed) -> str | None:
    """Topics to the spec (and on a TLS broker the clients' ACLs) once the broker answers;
    the reason when it does not."""
    broker = pipeline.spec.broker
    if not _answering(observed, "broker", broker.engine == "external"):
        return None
    wanted = TopicSpec(
        broker.topic.partitions, broker.topic.replication_factor,
        broker.topic.retention_hours * 3_600_000,
    )  # fmt: skip
    try:
        client = _kafka_admin_client(pipeline, cluster)
        if client:
            reconcile_acls(pipeline.bootstrap_servers, client_acls(*TOPICS), client)
        reconcile_topics(pipeline.bootstrap_servers, wanted, client=client)
    except KeyError as error:
        return f"Secret {pipeline.kafka_secret} has no key {error}"
    except ApiException as error:
        return f"Secret {pipeline.kafka_secret}: {error.reason}"
    except ServiceUnreachable as error:
        return str(error)
    return None


def _missing(cluster: Cluster, namespace: str, name: str) -> bool:
    try:
        cluster.secret_keys(namespace, name)
    except ApiException as error:
        if error.status != 404:
            raise
        return True
    return False


def _pipeline_ca(pipeline: Pipeline, cluster: Cluster, body: kopf.Body) -> KeyPair:
    """The pipeline's CA, made once. A Kafka Secret of an older operator held the CA itself:
    that CA is kept (its broker certificate stays valid for the clients)."""
    namespace = pipeline.namespace
    try:
        keys = cluster.secret_keys(namespace, pipeline.ca_secret)
        return KeyPair(keys[CA_CERT_KEY], keys["ca.key"])
    except ApiException as error:
        if error.status != 404:
            raise
    try:
        older = cluster.secret_keys(namespace, pipeline.kafka_secret)
        ca = KeyPair(older[CA_CERT_KEY], older["ca.key"])
    except (ApiException, KeyError):
        ca = make_ca(f"{pipeline.name}.{namespace} pipeline CA")
    if cluster.create_if_absent(build_ca_secret(pipeline, ca)):
        kopf.info(body, reason="Created", message="generated the pipeline's CA")
    keys = cluster.secret_keys(namespace, pipeline.ca_secret)  # another writer may have won
    return KeyPair(keys[CA_CERT_KEY], keys["ca.key"])


def _ensure_tls_secrets(pipeline: Pipeline, cluster: Cluster, body: kopf.Body) -> None:
    """The CA, the broker's certificate and passwords, MinIO's certificate: each made once (a
    Secret that exists is kept: rotation is deleting it, see docs/security.md)."""
    if not (pipeline.kafka_tls or pipeline.minio_tls):
        return
    namespace = pipeline.namespace
    kafka = pipeline.kafka_tls and _missing(cluster, namespace, pipeline.kafka_secret)
    minio = pipeline.minio_tls and _missing(cluster, namespace, pipeline.minio_tls_secret)
    ca = _pipeline_ca(pipeline, cluster, body)
    if kafka:
        server = issue(ca, pipeline.child("broker"), pipeline.broker_hosts())
        passwords = {user: secrets.token_hex(24) for user in KAFKA_USERS}
        if cluster.create_if_absent(build_kafka_secret(pipeline, server, passwords)):
            kopf.info(body, reason="Created", message="generated the Kafka certificate and users")
    if minio:
        server = issue(ca, pipeline.child("minio"), pipeline.minio_hosts())
        if cluster.create_if_absent(build_minio_tls_secret(pipeline, server)):
            kopf.info(body, reason="Created", message="generated MinIO's certificate")


def _ca_file(pipeline: Pipeline, cluster: Cluster) -> str | None:
    """The CA certificate as a file, for boto3 (which takes a path): None for plain HTTP."""
    if not pipeline.minio_tls:
        return None
    certificate = cluster.secret_keys(pipeline.namespace, pipeline.ca_secret)[CA_CERT_KEY]
    path = Path(tempfile.gettempdir(), "cryptolake-ca", f"{pipeline.uid}.crt")
    if not path.exists() or path.read_text() != certificate:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(certificate)
    return str(path)


def _check_storage(pipeline: Pipeline, cluster: Cluster, observed: Observed) -> str | None:
    """The bucket once S3 answers; the reason when it does not."""
    storage = pipeline.spec.storage
    if not _answering(observed, "storage", storage.engine == "external"):
        return None
    try:
        keys = cluster.secret_keys(pipeline.namespace, pipeline.credentials_secret)
        ensure_bucket(
            pipeline.s3_endpoint, keys["accessKey"], keys["secretKey"], storage.bucket,
            ca_file=_ca_file(pipeline, cluster),
        )  # fmt: skip
    except KeyError as error:
        return f"Secret {pipeline.credentials_secret} (or {pipeline.ca_secret}) has no key {error}"
    except ApiException as error:
        return f"Secret {pipeline.credentials_secret}: {error.reason}"
    except ServiceUnreachable as error:
        return str(error)
    return None


def _reconcile(handler: str, *, body: kopf.Body, patch: kopf.Patch) -> None:
    """Apply every child and write the observed status (both handlers below)."""
    RECONCILES.labels(handler).inc()
    meta, status = body.meta, body.status
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    generation = int(meta.get("generation", 0))
    with DURATION.labels(handler).time():
        try:
            pipeline = _pipeline(name, namespace, uid, dict(body.spec))
        except ValidationError as error:
            field, message = spec_error(error)
            FAILURES.labels(handler).inc()
            patch.status.update(failed_status(generation, field, message))
            kopf.warn(body, reason="InvalidSpec", message=f"{field}: {message}")
            raise kopf.PermanentError(f"{field}: {message}") from error
        cluster = _cluster()
        if pipeline.generates_credentials:
            secret = build_minio_secret(pipeline, secrets.token_hex(10), secrets.token_urlsafe(30))
            if cluster.create_if_absent(secret):
                kopf.info(body, reason="Created", message="generated the S3 credentials Secret")
        _ensure_tls_secrets(pipeline, cluster, body)
        children = build_children(pipeline)
        for child in children:
            cluster.apply(child)
        for gone in cluster.prune(pipeline, children):
            kopf.info(body, reason="Pruned", message=f"deleted {gone}, no longer part of it")
        observed = Observed(cluster.workload_states(pipeline))
        observed.broker_error = _check_broker(pipeline, cluster, observed)
        observed.storage_error = _check_storage(pipeline, cluster, observed)
        endpoint = f"http://{pipeline.child('api')}.{namespace}.svc:8000"
        new_status = build_status(
            pipeline.spec, observed, generation, previous=dict(status), api_endpoint=endpoint
        )
    old_phase = status.get("phase")
    if new_status["phase"] != old_phase:
        kopf.info(body, reason="Phase", message=f"{old_phase or 'None'} → {new_status['phase']}")
        for phase in ("Pending", "Provisioning", "Running", "Degraded", "Suspended", "Failed"):
            PHASE.labels(namespace, name, phase).set(1 if phase == new_status["phase"] else 0)
        PHASE_SINCE.labels(namespace, name).set_to_current_time()
    patch.status.update(new_status)
    State.last_success = time.monotonic()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def cryptopipeline_apply(*, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    _reconcile("apply", body=body, patch=patch)


@kopf.timer(GROUP, VERSION, PLURAL, interval=5, idle=0, initial_delay=2)
def cryptopipeline_observe(*, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    status, meta = body.status, body.meta
    if status.get("phase") == "Failed" and status.get("observedGeneration") == meta.get(
        "generation"
    ):
        return  # an invalid spec stays Failed until it changes
    _reconcile("observe", body=body, patch=patch)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def cryptopipeline_delete(*, body: kopf.Body, logger: Any, **_: Any) -> None:
    """Children go by garbage collection (ownerReferences). Volumes are not children of the
    pipeline: Retain keeps them, Delete removes them. A namespace being deleted takes
    everything with it, so nothing here may block it."""
    cluster = _cluster()
    meta = body.meta
    namespace = meta["namespace"]
    if cluster.namespace_terminating(namespace):
        logger.info("namespace %s is terminating: nothing to clean up", namespace)
        return
    try:
        pipeline = _pipeline(meta["name"], namespace, meta["uid"], dict(body.spec))
    except ValidationError as error:
        # Deletion must go on; what retainPolicy meant is unknown, so nothing is deleted.
        field, message = spec_error(error)
        kopf.warn(body, reason="CleanupSkipped",
                  message=f"invalid spec ({field}: {message}): volumes and data kept")  # fmt: skip
        logger.warning("invalid spec at deletion (%s: %s): volumes and data kept", field, message)
        return
    storage = pipeline.spec.storage
    if storage.retain_policy == "Retain":
        logger.info("retainPolicy Retain: volume claims and data kept")
        return
    # Clean-up problems are reported, never retried forever: a deletion must not hang.
    try:
        deleted = cluster.delete_volumes(pipeline)
        logger.info("retainPolicy Delete: removed %d volume claims", deleted)
        if storage.engine == "external" and storage.prefix:
            keys = cluster.secret_keys(namespace, pipeline.credentials_secret)
            objects = delete_prefix(
                pipeline.s3_endpoint, keys["accessKey"], keys["secretKey"],
                storage.bucket, storage.prefix,
            )  # fmt: skip
            logger.info("retainPolicy Delete: removed %d objects under %s/%s/",
                        objects, storage.bucket, storage.prefix)  # fmt: skip
    except (ApiException, KeyError, ServiceUnreachable) as error:
        kopf.warn(body, reason="CleanupFailed", message=f"retainPolicy Delete: {error}")
        logger.warning("retainPolicy Delete incomplete, deleting anyway: %s", error)
