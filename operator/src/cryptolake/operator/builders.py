"""Pure builders: a ``CryptoPipeline`` → the manifests of its children. No I/O here.

Every child carries the pipeline's ownerReference (garbage collection deletes it with the
pipeline) and the ``app.kubernetes.io/*`` labels. Workloads read the shared pipeline config
from one ConfigMap; its checksum and ``restartNonce`` sit in the pod templates, so a config
change or a new nonce rolls them. ``suspend`` scales producer, Spark drivers and API to zero
and leaves broker and storage running.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from cryptolake.common.kafka_client import jaas_config
from cryptolake.operator.kafka_auth import ADMIN_USER, JOBS_USER, PRODUCER_USER
from cryptolake.operator.models import (
    GROUP,
    KIND,
    SPARK_APPLICATIONS,
    VERSION,
    CryptoPipelineSpec,
    Resources,
    SparkApplication,
    Volume,
)
from cryptolake.operator.pki import KeyPair, java_truststore

Manifest = dict[str, Any]

MANAGED_BY: Final = "cryptolake-operator"
CONFIG_HASH: Final = f"{GROUP}/config-hash"
RESTART_NONCE: Final = f"{GROUP}/restart-nonce"
KAFKA_PORT, CONTROLLER_PORT, REDPANDA_RPC_PORT, REDPANDA_ADMIN_PORT = 9092, 9093, 33145, 9644
MINIO_PORT, API_PORT, PRODUCER_METRICS_PORT, JOBS_METRICS_PORT = 9000, 8000, 9400, 9401
SPARK_DRIVER_PORT, SPARK_BLOCK_MANAGER_PORT = 7078, 7079
ALERTS_METRICS_PORT: Final = 9500
PRODUCER_FLUSH_TIMEOUT_S: Final = 20
# Probes answer in microseconds, but a node busy starting JVMs may delay them for seconds.
PROBE_TIMING: Final = {"timeoutSeconds": 5}
# Also for `:latest` tags: images loaded into a node (kind load, make images) are used as they are.
PULL_POLICY: Final = "IfNotPresent"
# Every pod runs as this uid/gid (the user of the project's images; any image works, since all
# it writes goes to volumes) under Pod Security Standards "restricted".
RUN_AS: Final = 10001
POD_SECURITY: Final = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: Final = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}
# Spark's executors read their pod template from here (the driver mounts it from a ConfigMap).
SPARK_TEMPLATES_DIR: Final = "/etc/cryptolake/spark"
# Where TLS clients find the pipeline's CA (keys of the <name>-ca Secret): the certificate
# as PEM, and as a Java trust store for the JVMs' S3 client.
CA_DIR: Final = "/etc/cryptolake/ca"
CA_CERT_KEY: Final = "ca.crt"
TRUSTSTORE_KEY: Final = "truststore.p12"
# MinIO reads public.crt and private.key from its certs dir (a read-only mount is fine).
MINIO_CERTS_DIR: Final = "/etc/cryptolake/minio-certs"
SCRAM: Final = "SCRAM-SHA-512"
EXECUTOR_TEMPLATE: Final = "executor-pod.yaml"


@dataclass(frozen=True)
class Images:
    """Default images (the operator's settings); a spec's own image wins."""

    kafka: str = "apache/kafka:4.1.1"
    redpanda: str = "docker.redpanda.com/redpandadata/redpanda:v25.2.10"
    minio: str = "localhost/cryptolake/minio:latest"
    producer: str = "localhost/cryptolake/producer:0.1.0"
    jobs: str = "localhost/cryptolake/jobs:0.1.0"
    api: str = "localhost/cryptolake/api:0.1.0"


@dataclass(frozen=True)
class Pipeline:
    """What the builders need to know about one CryptoPipeline."""

    name: str
    namespace: str
    uid: str
    spec: CryptoPipelineSpec
    images: Images = field(default_factory=Images)

    def child(self, component: str) -> str:
        return f"{self.name}-{component}"

    @property
    def broker_headless(self) -> str:
        return self.child("broker-headless")

    @property
    def bootstrap_servers(self) -> str:
        broker = self.spec.broker
        if broker.engine == "external":
            assert broker.bootstrap_servers is not None  # the CRD's CEL rule guarantees it
            return broker.bootstrap_servers
        return f"{self.child('broker')}.{self.namespace}.svc:{KAFKA_PORT}"

    @property
    def s3_endpoint(self) -> str:
        storage = self.spec.storage
        if storage.engine == "external":
            assert storage.endpoint is not None
            return storage.endpoint
        scheme = "https" if self.minio_tls else "http"
        return f"{scheme}://{self.child('minio')}.{self.namespace}.svc:{MINIO_PORT}"

    @property
    def table_root(self) -> str:
        storage = self.spec.storage
        return "/".join(filter(None, (f"s3a://{storage.bucket}", storage.prefix)))

    @property
    def generates_credentials(self) -> bool:
        """MinIO run by the operator with no Secret named: it draws the keys itself."""
        storage = self.spec.storage
        return storage.engine == "minio" and not storage.credentials_secret

    @property
    def credentials_secret(self) -> str:
        return self.spec.storage.credentials_secret or self.child("s3-credentials")

    @property
    def kafka_tls(self) -> bool:
        """The operator's Kafka with TLS, SCRAM users and ACLs (``broker.tls``)."""
        return self.spec.broker.engine == "kafka" and self.spec.broker.tls

    @property
    def minio_tls(self) -> bool:
        """The operator's MinIO serving HTTPS with a certificate of the pipeline's CA."""
        return self.spec.storage.engine == "minio" and self.spec.storage.tls

    @property
    def ca_secret(self) -> str:
        """The pipeline's CA (operator-made): its key, its certificate, a Java trust store."""
        return self.child("ca")

    @property
    def kafka_secret(self) -> str:
        """The brokers' certificate and the SCRAM users' passwords (operator-made)."""
        return self.child("kafka-auth")

    @property
    def minio_tls_secret(self) -> str:
        """MinIO's server certificate (operator-made, kubernetes.io/tls)."""
        return self.child("minio-tls")

    def minio_hosts(self) -> list[str]:
        service, namespace = self.child("minio"), self.namespace
        return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc"]

    @property
    def broker_principal(self) -> str:
        """The brokers' certificate subject: their identity to each other's controllers."""
        return f"CN={self.child('broker')},O=CryptoLake"

    def broker_hosts(self) -> list[str]:
        """The names clients reach the brokers by: the Service, and each pod."""
        service, namespace = self.child("broker"), self.namespace
        return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
                f"*.{self.broker_headless}.{namespace}.svc"]  # fmt: skip


# --- metadata -------------------------------------------------------------------------------


def labels(pipeline: Pipeline, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "cryptolake",
        "app.kubernetes.io/instance": pipeline.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "cryptolake",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(pipeline: Pipeline, component: str) -> dict[str, str]:
    """The stable subset of the labels (selectors are immutable)."""
    return {
        "app.kubernetes.io/instance": pipeline.name,
        "app.kubernetes.io/component": component,
    }


def owner_reference(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": pipeline.name,
        "uid": pipeline.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(pipeline: Pipeline, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": pipeline.namespace,
        "labels": labels(pipeline, component),
        "ownerReferences": [owner_reference(pipeline)],
    }


# --- shared config --------------------------------------------------------------------------


def pipeline_config(pipeline: Pipeline) -> dict[str, str]:
    """The CRYPTOLAKE_* variables every workload shares (data contract of docs/design.md)."""
    spec = pipeline.spec
    ingest, refine = spec.processing.ingest, spec.processing.refine
    config = {
        "CRYPTOLAKE_BOOTSTRAP_SERVERS": pipeline.bootstrap_servers,
        "CRYPTOLAKE_TABLE_ROOT": pipeline.table_root,
        "CRYPTOLAKE_S3_ENDPOINT": pipeline.s3_endpoint,
        "CRYPTOLAKE_TOPIC_PARTITIONS": str(spec.broker.topic.partitions),
        "CRYPTOLAKE_TOPIC_REPLICATION": str(spec.broker.topic.replication_factor),
        "CRYPTOLAKE_TOPIC_RETENTION_MS": str(spec.broker.topic.retention_hours * 3_600_000),
        "CRYPTOLAKE_BRONZE_TRIGGER": ingest.trigger,
        "CRYPTOLAKE_REFINE_TRIGGER": refine.trigger,
        "CRYPTOLAKE_SILVER_WATERMARK": refine.dedup_watermark,
        "CRYPTOLAKE_GOLD_WATERMARK": refine.lateness,
        "CRYPTOLAKE_GOLD_DERIVED_INTERVAL": refine.derived_interval,
    }
    if spec.telemetry.otlp_endpoint:
        config["OTEL_EXPORTER_OTLP_ENDPOINT"] = spec.telemetry.otlp_endpoint
    if spec.broker.topic.adopt_id:
        config["CRYPTOLAKE_ADOPT_TOPIC_ID"] = spec.broker.topic.adopt_id
    return config


def config_hash(config: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def build_config_map(pipeline: Pipeline) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(pipeline, pipeline.child("config"), "config"),
        "data": pipeline_config(pipeline),
    }


def _s3_env(pipeline: Pipeline) -> list[dict[str, Any]]:
    secret = pipeline.credentials_secret
    return [
        {
            "name": f"CRYPTOLAKE_S3_{key.upper()}_KEY",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": f"{key}Key"}},
        }
        for key in ("access", "secret")
    ]


def _pod_annotations(pipeline: Pipeline) -> dict[str, str]:
    annotations = {CONFIG_HASH: config_hash(pipeline_config(pipeline))}
    if pipeline.spec.restart_nonce:
        annotations[RESTART_NONCE] = pipeline.spec.restart_nonce
    return annotations


def _workload_replicas(pipeline: Pipeline, wanted: int) -> int:
    return 0 if pipeline.spec.suspend else wanted


def resources(wanted: Resources) -> dict[str, Any]:
    """Requests from the spec; memory is also the limit (no CPU limit: throttling a JVM or an
    event loop hurts latency more than sharing spare cores)."""
    return {
        "requests": {"cpu": wanted.cpu, "memory": wanted.memory},
        "limits": {"memory": wanted.memory},
    }


def restricted(pod_spec: dict[str, Any], scratch: dict[str, str]) -> dict[str, Any]:
    """A pod spec made to meet Pod Security Standards "restricted": non-root, RuntimeDefault
    seccomp, no privilege escalation, no capabilities, a read-only root filesystem; ``scratch``
    (volume name → path) are the emptyDirs every container may write to."""
    mounts = [{"name": name, "mountPath": path} for name, path in scratch.items()]
    containers = [
        {
            **container,
            "securityContext": dict(CONTAINER_SECURITY),
            "volumeMounts": [*container.get("volumeMounts", []), *mounts],
        }
        for container in pod_spec["containers"]
    ]
    volumes = [*pod_spec.get("volumes", []), *({"name": n, "emptyDir": {}} for n in scratch)]
    return {
        **pod_spec,
        "securityContext": dict(POD_SECURITY),
        "containers": containers,
        "volumes": volumes,
    }


def _container(
    name: str, image: str, args: list[str], pipeline: Pipeline, port: int, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": PULL_POLICY,
        "args": args,
        "envFrom": [{"configMapRef": {"name": pipeline.child("config")}}],
        "env": _s3_env(pipeline) + extra.pop("env", []),
        "ports": [
            {"name": "http" if port != JOBS_METRICS_PORT else "metrics", "containerPort": port}
        ],
        **extra,
    }


SCRATCH: Final = {"tmp": "/tmp"}


def _deployment(
    pipeline: Pipeline,
    component: str,
    replicas: int,
    pod_spec: dict[str, Any],
    scratch: dict[str, str] = SCRATCH,
) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(pipeline, pipeline.child(component), component),
        "spec": {
            "replicas": _workload_replicas(pipeline, replicas),
            "selector": {"matchLabels": selector(pipeline, component)},
            "template": {
                "metadata": {
                    "labels": labels(pipeline, component),
                    "annotations": _pod_annotations(pipeline),
                },
                "spec": restricted(pod_spec, scratch),
            },
        },
    }


def _service(
    pipeline: Pipeline, name: str, component: str, ports: dict[str, int], **spec: Any
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(pipeline, name, component),
        "spec": {
            "selector": selector(pipeline, component),
            "ports": [{"name": n, "port": p, "targetPort": p} for n, p in ports.items()],
            **spec,
        },
    }


def _volume_claim(pipeline: Pipeline, component: str, volume: Volume) -> dict[str, Any]:
    """A StatefulSet's claim template; its labels let the finalizer find the claims."""
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": volume.size}},
    }
    if volume.storage_class_name:
        spec["storageClassName"] = volume.storage_class_name
    return {"metadata": {"name": "data", "labels": selector(pipeline, component)}, "spec": spec}


# --- broker ---------------------------------------------------------------------------------


def kafka_cluster_id(uid: str) -> str:
    """A KRaft cluster id (22 base64url characters) derived from the pipeline's uid."""
    return base64.urlsafe_b64encode(hashlib.sha256(uid.encode()).digest()[:16]).decode()[:22]


def _broker_pod_address(pipeline: Pipeline, ordinal: int | str) -> str:
    return (
        f"{pipeline.child('broker')}-{ordinal}.{pipeline.broker_headless}.{pipeline.namespace}.svc"
    )


KAFKA_USERS: Final = (ADMIN_USER, PRODUCER_USER, JOBS_USER)


def kafka_tls_env(pipeline: Pipeline, advertised: str) -> list[dict[str, Any]]:
    """A TLS broker (engine kafka): clients on SASL_SSL with SCRAM-SHA-512, the controllers on
    mutual TLS, the StandardAuthorizer denying what no ACL allows, every key from the
    kafka-auth Secret (PEM values inline). The SCRAM users are stored when the storage is first
    formatted (``SCRAM_USERS``, read by the image's run script)."""
    secret = pipeline.kafka_secret

    def from_secret(name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    passwords = [from_secret(f"SCRAM_PASSWORD_{user.upper()}", user) for user in KAFKA_USERS]
    jaas = jaas_config(SCRAM, ADMIN_USER, f"$(SCRAM_PASSWORD_{ADMIN_USER.upper()})")
    users = " ".join(f"{user}=$(SCRAM_PASSWORD_{user.upper()})" for user in KAFKA_USERS)
    return [
        *passwords,  # first: the values below refer to them
        {"name": "SCRAM_USERS", "value": users},
        {"name": "KAFKA_LISTENERS",
         "value": f"SASL_SSL://:{KAFKA_PORT},CONTROLLER://:{CONTROLLER_PORT}"},
        {"name": "KAFKA_ADVERTISED_LISTENERS", "value": f"SASL_SSL://{advertised}:{KAFKA_PORT}"},
        {"name": "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
         "value": "SASL_SSL:SASL_SSL,CONTROLLER:SSL"},
        {"name": "KAFKA_INTER_BROKER_LISTENER_NAME", "value": "SASL_SSL"},
        {"name": "KAFKA_SASL_ENABLED_MECHANISMS", "value": SCRAM},
        {"name": "KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL", "value": SCRAM},
        {"name": "KAFKA_LISTENER_NAME_SASL__SSL_SCRAM___SHA___512_SASL_JAAS_CONFIG", "value": jaas},
        {"name": "KAFKA_LISTENER_NAME_CONTROLLER_SSL_CLIENT_AUTH", "value": "required"},
        {"name": "KAFKA_SSL_KEYSTORE_TYPE", "value": "PEM"},
        from_secret("KAFKA_SSL_KEYSTORE_KEY", "tls.key"),
        from_secret("KAFKA_SSL_KEYSTORE_CERTIFICATE_CHAIN", "tls.crt"),
        {"name": "KAFKA_SSL_TRUSTSTORE_TYPE", "value": "PEM"},
        {"name": "KAFKA_SSL_TRUSTSTORE_CERTIFICATES",
         "valueFrom": {"secretKeyRef": {"name": pipeline.ca_secret, "key": CA_CERT_KEY}}},
        {"name": "KAFKA_AUTHORIZER_CLASS_NAME",
         "value": "org.apache.kafka.metadata.authorizer.StandardAuthorizer"},
        {"name": "KAFKA_SUPER_USERS",
         "value": f"User:{ADMIN_USER};User:{pipeline.broker_principal}"},
    ]  # fmt: skip


def build_broker_statefulset(pipeline: Pipeline) -> Manifest:
    broker = pipeline.spec.broker
    replicas = broker.replicas
    advertised = f"$(POD_NAME).{pipeline.broker_headless}.{pipeline.namespace}.svc"
    if broker.engine == "redpanda":
        seeds = ",".join(
            f"{_broker_pod_address(pipeline, i)}:{REDPANDA_RPC_PORT}" for i in range(replicas)
        )
        script = (
            "exec rpk redpanda start --overprovisioned --smp 1 "
            f"--memory {broker.resources.memory.replace('i', '').upper()} "
            "--node-id ${HOSTNAME##*-} "
            f"--seeds {seeds} --kafka-addr internal://0.0.0.0:{KAFKA_PORT} "
            f"--advertise-kafka-addr internal://{advertised}:{KAFKA_PORT} "
            f"--rpc-addr 0.0.0.0:{REDPANDA_RPC_PORT} "
            f"--advertise-rpc-addr {advertised}:{REDPANDA_RPC_PORT}"
        ).replace("$(POD_NAME)", "${POD_NAME}")
        image, data_dir = broker.image or pipeline.images.redpanda, "/var/lib/redpanda/data"
        env: list[dict[str, Any]] = []
        ports = {"kafka": KAFKA_PORT, "rpc": REDPANDA_RPC_PORT, "admin": REDPANDA_ADMIN_PORT}
        probe = {"httpGet": {"path": "/v1/status/ready", "port": REDPANDA_ADMIN_PORT}}
        config_dir = "/etc/redpanda"  # rpk writes redpanda.yaml here
    else:
        voters = ",".join(
            f"{i}@{_broker_pod_address(pipeline, i)}:{CONTROLLER_PORT}" for i in range(replicas)
        )
        script = "export KAFKA_NODE_ID=${HOSTNAME##*-}; exec /etc/kafka/docker/run"
        image, data_dir = broker.image or pipeline.images.kafka, "/var/lib/kafka/data"
        internal_rf = str(min(replicas, 3))
        env = [
            {"name": "CLUSTER_ID", "value": kafka_cluster_id(pipeline.uid)},
            {"name": "KAFKA_PROCESS_ROLES", "value": "broker,controller"},
            {"name": "KAFKA_CONTROLLER_QUORUM_VOTERS", "value": voters},
            {"name": "KAFKA_LISTENERS",
             "value": f"PLAINTEXT://:{KAFKA_PORT},CONTROLLER://:{CONTROLLER_PORT}"},
            {"name": "KAFKA_ADVERTISED_LISTENERS", "value": f"PLAINTEXT://{advertised}:{KAFKA_PORT}"},
            {"name": "KAFKA_CONTROLLER_LISTENER_NAMES", "value": "CONTROLLER"},
            {"name": "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
             "value": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"},
            {"name": "KAFKA_LOG_DIRS", "value": data_dir},
            {"name": "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "value": internal_rf},
            {"name": "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "value": internal_rf},
            {"name": "KAFKA_HEAP_OPTS", "value": "-Xms512m -Xmx512m"},
        ]  # fmt: skip
        if pipeline.kafka_tls:
            secured = kafka_tls_env(pipeline, advertised)
            replaced = {variable["name"] for variable in secured}
            env = [*secured, *(v for v in env if v["name"] not in replaced)]
        ports = {"kafka": KAFKA_PORT, "controller": CONTROLLER_PORT}
        probe = {"tcpSocket": {"port": KAFKA_PORT}}
        config_dir = "/opt/kafka/config"  # the run script renders server.properties here
    pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    volume_claim = _volume_claim(pipeline, "broker", broker.storage)
    container = {
        "name": "broker",
        "image": image,
        "imagePullPolicy": PULL_POLICY,
        "command": ["bash", "-c", script],
        "env": [pod_name, *env],
        "ports": [{"name": n, "containerPort": p} for n, p in ports.items()],
        "readinessProbe": {**probe, **PROBE_TIMING, "periodSeconds": 5},
        "resources": resources(broker.resources),
        "volumeMounts": [{"name": "data", "mountPath": data_dir}],
    }
    pod = {"containers": [container], "terminationGracePeriodSeconds": 60}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(pipeline, pipeline.child("broker"), "broker"),
        "spec": {
            "serviceName": pipeline.broker_headless,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector(pipeline, "broker")},
            "template": {
                "metadata": {"labels": labels(pipeline, "broker")},
                "spec": restricted(pod, {"tmp": "/tmp", "config": config_dir}),
            },
            "volumeClaimTemplates": [volume_claim],
        },
    }


def build_broker_services(pipeline: Pipeline) -> list[Manifest]:
    ports = {"kafka": KAFKA_PORT}
    headless_ports = {"kafka": KAFKA_PORT, "controller": CONTROLLER_PORT}
    if pipeline.spec.broker.engine == "redpanda":
        headless_ports = {"kafka": KAFKA_PORT, "rpc": REDPANDA_RPC_PORT}
    return [
        _service(
            pipeline, pipeline.broker_headless, "broker", headless_ports,
            clusterIP="None", publishNotReadyAddresses=True,
        ),
        _service(pipeline, pipeline.child("broker"), "broker", ports),
    ]  # fmt: skip


def build_broker_pdb(pipeline: Pipeline) -> Manifest:
    replicas = pipeline.spec.broker.replicas
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(pipeline, pipeline.child("broker"), "broker"),
        "spec": {
            "maxUnavailable": 1 if replicas > 1 else 0,
            "selector": {"matchLabels": selector(pipeline, "broker")},
        },
    }


# --- storage --------------------------------------------------------------------------------


def build_ca_secret(pipeline: Pipeline, ca: KeyPair) -> Manifest:
    """The pipeline's CA (the caller draws it, so this stays pure). Its key never leaves this
    Secret: pods mount the certificate and the trust store alone."""
    truststore = base64.b64encode(java_truststore(ca)).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(pipeline, pipeline.ca_secret, "config"),
        "type": "Opaque",
        "stringData": {CA_CERT_KEY: ca.certificate, "ca.key": ca.key},
        "data": {TRUSTSTORE_KEY: truststore},
    }


def build_kafka_secret(pipeline: Pipeline, server: KeyPair, passwords: dict[str, str]) -> Manifest:
    """The TLS broker's certificate chain and key (from the pipeline's CA) and one SCRAM
    password per user; the caller draws them."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(pipeline, pipeline.kafka_secret, "broker"),
        "type": "Opaque",
        "stringData": {"tls.crt": server.certificate, "tls.key": server.key, **passwords},
    }


def build_minio_tls_secret(pipeline: Pipeline, server: KeyPair) -> Manifest:
    """MinIO's certificate chain and key, from the pipeline's CA (the caller issues them)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(pipeline, pipeline.minio_tls_secret, "storage"),
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": server.certificate, "tls.key": server.key},
    }


def kafka_client_env(pipeline: Pipeline, user: str) -> list[dict[str, Any]]:
    """How a client logs in to the pipeline's broker as ``user`` (common/kafka_client.py reads
    these); nothing for a plaintext broker."""
    if not pipeline.kafka_tls:
        return []
    secret = pipeline.kafka_secret
    return [
        {"name": "CRYPTOLAKE_KAFKA_SECURITY_PROTOCOL", "value": "SASL_SSL"},
        {"name": "CRYPTOLAKE_KAFKA_SASL_MECHANISM", "value": SCRAM},
        {"name": "CRYPTOLAKE_KAFKA_USERNAME", "value": user},
        {"name": "CRYPTOLAKE_KAFKA_PASSWORD",
         "valueFrom": {"secretKeyRef": {"name": secret, "key": user}}},
        {"name": "CRYPTOLAKE_KAFKA_CA_FILE", "value": f"{CA_DIR}/{CA_CERT_KEY}"},
    ]  # fmt: skip


def s3_trust_env(pipeline: Pipeline, *, jvm: bool) -> list[dict[str, Any]]:
    """How an S3 client trusts a TLS MinIO: a JVM (the jobs) through the Java trust store,
    delta-rs (the API, the producer's kline checks) through the CA as a PEM file, which they
    add to the public CAs. Nothing for plain HTTP or external S3."""
    if not pipeline.minio_tls:
        return []
    if jvm:
        return [{"name": "CRYPTOLAKE_S3_TRUSTSTORE", "value": f"{CA_DIR}/{TRUSTSTORE_KEY}"}]
    return [{"name": "CRYPTOLAKE_S3_CA_FILE", "value": f"{CA_DIR}/{CA_CERT_KEY}"}]


def ca_volume(
    pipeline: Pipeline, *, kafka: bool, s3: bool, jvm: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(mounts, volumes) that put the pipeline's CA at CA_DIR for a Kafka client and/or an S3
    client (``jvm``: with the Java trust store) of the TLS services; nothing when none is."""
    keys = []
    if (kafka and pipeline.kafka_tls) or (s3 and pipeline.minio_tls):
        keys.append(CA_CERT_KEY)
    if s3 and jvm and pipeline.minio_tls:
        keys.append(TRUSTSTORE_KEY)
    if not keys:
        return [], []
    mount = {"name": "ca", "mountPath": CA_DIR, "readOnly": True}
    volume = {"name": "ca", "secret": {
        "secretName": pipeline.ca_secret,
        "items": [{"key": key, "path": key} for key in keys],
    }}  # fmt: skip
    return [mount], [volume]


def build_minio_secret(pipeline: Pipeline, access_key: str, secret_key: str) -> Manifest:
    """The generated credentials (the caller draws the keys, so this stays pure)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(pipeline, pipeline.credentials_secret, "storage"),
        "type": "Opaque",
        "stringData": {"accessKey": access_key, "secretKey": secret_key},
    }


def build_minio_statefulset(pipeline: Pipeline) -> Manifest:
    storage = pipeline.spec.storage
    secret = pipeline.credentials_secret
    volume_claim = _volume_claim(pipeline, "storage", storage.volume)
    # Its certs dir defaults to ~/.minio/certs, on the read-only root filesystem.
    certs_dir, scheme, mounts, volumes = "/tmp/certs", "HTTP", [], []
    if pipeline.minio_tls:
        certs_dir, scheme = MINIO_CERTS_DIR, "HTTPS"
        mounts = [{"name": "certs", "mountPath": MINIO_CERTS_DIR, "readOnly": True}]
        volumes = [{"name": "certs", "secret": {
            "secretName": pipeline.minio_tls_secret,
            "items": [{"key": "tls.crt", "path": "public.crt"},
                      {"key": "tls.key", "path": "private.key"}],
        }}]  # fmt: skip
    container = {
        "name": "minio",
        "image": pipeline.images.minio,
        "imagePullPolicy": PULL_POLICY,
        "args": ["server", "/data", "--address", f":{MINIO_PORT}", "--certs-dir", certs_dir],
        "env": [
            {
                "name": "MINIO_ROOT_USER",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": "accessKey"}},
            },
            {
                "name": "MINIO_ROOT_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": "secretKey"}},
            },
        ],
        "ports": [{"name": "s3", "containerPort": MINIO_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/minio/health/ready", "port": MINIO_PORT, "scheme": scheme},
            **PROBE_TIMING,
        },
        "resources": resources(storage.resources),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, *mounts],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(pipeline, pipeline.child("minio"), "storage"),
        "spec": {
            "serviceName": pipeline.child("minio"),
            "replicas": 1,
            "selector": {"matchLabels": selector(pipeline, "storage")},
            "template": {
                "metadata": {"labels": labels(pipeline, "storage")},
                "spec": restricted({"containers": [container], "volumes": volumes}, SCRATCH),
            },
            "volumeClaimTemplates": [volume_claim],
        },
    }


# --- producer, Spark drivers, API -----------------------------------------------------------


def producer_env(pipeline: Pipeline) -> list[dict[str, str]]:
    sources = pipeline.spec.sources
    live = [s for s in sources if s.exchange != "simulator"]
    env = {
        "CRYPTOLAKE_METRICS_PORT": str(PRODUCER_METRICS_PORT),
        "CRYPTOLAKE_FLUSH_TIMEOUT_S": str(PRODUCER_FLUSH_TIMEOUT_S),
        "CRYPTOLAKE_RECONCILE_INTERVAL_S": str(pipeline.spec.producer.kline_check_interval_seconds),
    }
    if live:
        env["CRYPTOLAKE_SOURCE"] = "live"
        env["CRYPTOLAKE_EXCHANGES"] = ",".join(s.exchange for s in live)
        env["CRYPTOLAKE_SYMBOLS"] = ",".join(
            f"{s.exchange}:{symbol}" for s in live for symbol in s.symbols
        )
    else:
        simulator = sources[0]
        env["CRYPTOLAKE_SOURCE"] = "simulator"
        env["CRYPTOLAKE_SYMBOLS"] = ",".join(simulator.symbols)
        env["CRYPTOLAKE_SIMULATOR_RATE"] = str(simulator.rate or 50)
    return [{"name": k, "value": v} for k, v in env.items()]


def _checks_klines(pipeline: Pipeline) -> bool:
    """The producer's kline checks read gold/candles_1m and write gold/kline_checks."""
    return pipeline.spec.producer.kline_check_interval_seconds > 0


def build_producer_deployment(pipeline: Pipeline) -> Manifest:
    checks_klines = _checks_klines(pipeline)
    mounts, volumes = ca_volume(pipeline, kafka=True, s3=checks_klines)
    s3_trust = s3_trust_env(pipeline, jvm=False) if checks_klines else []
    container = _container(
        "producer", pipeline.images.producer, [], pipeline, PRODUCER_METRICS_PORT,
        env=producer_env(pipeline) + kafka_client_env(pipeline, PRODUCER_USER) + s3_trust,
        volumeMounts=mounts,
        readinessProbe={
            "httpGet": {"path": "/healthz", "port": PRODUCER_METRICS_PORT},
            **PROBE_TIMING,
        },
        resources=resources(pipeline.spec.producer.resources),
    )  # fmt: skip
    # On SIGTERM the producer flushes for up to its flush timeout: the grace period outlasts it.
    pod = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": PRODUCER_FLUSH_TIMEOUT_S + 15,
    }
    return _deployment(pipeline, "producer", 1, pod)


def spark_application(pipeline: Pipeline, app: str) -> SparkApplication:
    processing = pipeline.spec.processing
    applications: dict[str, SparkApplication] = {"ingest": processing.ingest,
                                                 "refine": processing.refine}  # fmt: skip
    return applications[app]


def spark_settings(pipeline: Pipeline, app: str) -> list[dict[str, Any]]:
    """Local mode inside the driver pod with no executors; else client mode against the
    in-cluster API server, so Spark creates its executor pods itself."""
    processing = pipeline.spec.processing
    application = spark_application(pipeline, app)
    executors, driver = application.executors, application.driver
    driver_service = pipeline.child(app)
    env: list[dict[str, Any]] = [
        {"name": "CRYPTOLAKE_DRIVER_MEMORY", "value": driver.memory},
        {"name": "CRYPTOLAKE_METRICS_PORT", "value": str(JOBS_METRICS_PORT)},
    ]
    if executors.instances == 0:
        master = f"local[{driver.cores}]"
        return [{"name": "CRYPTOLAKE_SPARK_MASTER", "value": master}, *env]
    confs = {
        "spark.kubernetes.namespace": pipeline.namespace,
        "spark.kubernetes.container.image": processing.image or pipeline.images.jobs,
        "spark.kubernetes.authenticate.driver.serviceAccountName": pipeline.child("spark"),
        "spark.kubernetes.driver.pod.name": "$(POD_NAME)",
        "spark.kubernetes.executor.podNamePrefix": pipeline.child(app),
        "spark.executor.instances": str(executors.instances),
        "spark.executor.cores": str(executors.cores),
        "spark.executor.memory": executors.memory,
        "spark.kubernetes.executor.request.cores": executors.cpu or str(executors.cores),
        "spark.driver.host": f"{driver_service}.{pipeline.namespace}.svc",
        "spark.driver.bindAddress": "0.0.0.0",
        "spark.driver.port": str(SPARK_DRIVER_PORT),
        "spark.blockManager.port": str(SPARK_BLOCK_MANAGER_PORT),
        "spark.kubernetes.executor.podTemplateFile": f"{SPARK_TEMPLATES_DIR}/{EXECUTOR_TEMPLATE}",
    }
    submit = " ".join(f"--conf {k}={v}" for k, v in confs.items()) + " pyspark-shell"
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "CRYPTOLAKE_SPARK_MASTER", "value": "k8s://https://kubernetes.default.svc"},
        {"name": "PYSPARK_SUBMIT_ARGS", "value": submit},
        *env,
    ]


def spark_pod_memory(heap: str) -> str:
    """A driver pod's memory limit for its JVM heap (``2g``): the heap twice (off-heap, the
    local-mode tasks' Python) plus 512 MiB, in MiB."""
    units = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
    heap_mib = int(heap[:-1]) * units[heap[-1]]
    return f"{int(2 * heap_mib + 512)}Mi"


SPARK_SCRATCH: Final = {"tmp": "/tmp", "home": "/home/cryptolake"}


def runs_executors(pipeline: Pipeline) -> bool:
    return any(spark_application(pipeline, app).executors.instances for app in SPARK_APPLICATIONS)


def build_executor_template(pipeline: Pipeline) -> Manifest:
    """The pod template Spark starts its executors from: restricted like every other pod
    (Spark adds its own local-dir volumes, image, resources and environment)."""
    # Executors read Kafka and write S3: they trust the CA like their driver (the trust store
    # path is in the driver's spark.executor.extraJavaOptions).
    mounts, volumes = ca_volume(pipeline, kafka=True, s3=True, jvm=True)
    executor = {"name": "executor", "volumeMounts": mounts}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        # Spark adds its own labels; these let the network policies find the executors.
        "metadata": {"labels": labels(pipeline, "executor")},
        "spec": restricted({"containers": [executor], "volumes": volumes}, SPARK_SCRATCH),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(pipeline, pipeline.child("spark-templates"), "processing"),
        "data": {EXECUTOR_TEMPLATE: json.dumps(pod, indent=2, sort_keys=True)},
    }


def build_spark_driver(pipeline: Pipeline, app: str) -> list[Manifest]:
    """One driver Deployment per Spark application (ingest, refine) and its headless Service
    (executors call back)."""
    processing = pipeline.spec.processing
    application = spark_application(pipeline, app)
    driver = application.driver
    component = app
    mounts, volumes = ca_volume(pipeline, kafka=True, s3=True, jvm=True)
    if application.executors.instances:
        mounts.append({"name": "spark-templates", "mountPath": SPARK_TEMPLATES_DIR,
                       "readOnly": True})  # fmt: skip
        volumes.append({"name": "spark-templates",
                        "configMap": {"name": pipeline.child("spark-templates")}})  # fmt: skip
    env = [
        *spark_settings(pipeline, app),
        *kafka_client_env(pipeline, JOBS_USER),
        *s3_trust_env(pipeline, jvm=True),
    ]
    container = _container(
        "driver", processing.image or pipeline.images.jobs, [SPARK_APPLICATIONS[app]], pipeline,
        JOBS_METRICS_PORT, env=env,
        resources={
            "requests": {"cpu": driver.cpu or str(driver.cores),
                         "memory": driver.memory.upper() + "i"},
            "limits": {"memory": spark_pod_memory(driver.memory)},
        },
        volumeMounts=mounts,
    )  # fmt: skip
    pod = {
        "serviceAccountName": pipeline.child("spark"),
        # Only a driver that runs executors talks to the API server.
        "automountServiceAccountToken": bool(application.executors.instances),
        "containers": [container],
        "volumes": volumes,
        # Queries stop between batches on SIGTERM (jobs' 15 s budget).
        "terminationGracePeriodSeconds": 30,
    }
    deployment = _deployment(pipeline, component, 1, pod, SPARK_SCRATCH)
    # Never two drivers of one application: they would share a checkpoint and its tables.
    deployment["spec"]["strategy"] = {"type": "Recreate"}
    service = _service(
        pipeline, pipeline.child(component), component,
        {"driver": SPARK_DRIVER_PORT, "blockmanager": SPARK_BLOCK_MANAGER_PORT},
        clusterIP="None",
    )  # fmt: skip
    return [deployment, service]


def build_spark_rbac(pipeline: Pipeline) -> list[Manifest]:
    """The drivers' ServiceAccount; and, only when a driver runs executors, what it needs for
    them: pods, their services, config maps and volume claims in its own namespace."""
    name = pipeline.child("spark")
    account = {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": metadata(pipeline, name, "processing"),
               "automountServiceAccountToken": False}  # fmt: skip
    if not runs_executors(pipeline):
        return [account]
    rules = [
        {"apiGroups": [""], "resources": ["pods"],
         "verbs": ["create", "get", "list", "watch", "delete", "deletecollection"]},
        {"apiGroups": [""], "resources": ["services", "configmaps", "persistentvolumeclaims"],
         "verbs": ["create", "get", "list", "watch", "delete", "deletecollection"]},
    ]  # fmt: skip
    return [
        account,
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": metadata(pipeline, name, "processing"), "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": metadata(pipeline, name, "processing"),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name,
                       "namespace": pipeline.namespace}]},
        build_executor_template(pipeline),
    ]  # fmt: skip


# --- alerts ----------------------------------------------------------------------------------

ALERTS_DIR: Final = "/etc/cryptolake/alerts"
ALERTS_FILE_KEY: Final = "alerts.yaml"
ALERTS_HASH: Final = "cryptolake.io/alerts-hash"
ALERTS_RESOURCES: Final = Resources(cpu="50m", memory="512Mi")


def alert_webhook_env(index: int) -> str:
    """The variable that carries the webhook URL of spec.alerts[index] (from its Secret)."""
    return f"CRYPTOLAKE_ALERT_WEBHOOK_{index}"


def alert_rules_document(pipeline: Pipeline) -> str:
    """spec.alerts as the alerts worker's rules file (cryptolake.common.alert_rules)."""
    rules = [
        alert.rule(alert_webhook_env(index)).model_dump(mode="json", exclude_none=True)
        for index, alert in enumerate(pipeline.spec.alerts)
    ]
    return str(yaml.safe_dump({"rules": rules}, sort_keys=False))


def build_alerts(pipeline: Pipeline) -> list[Manifest]:
    """With spec.alerts: the rules (a ConfigMap) and the alerts worker (the API's image: both
    read Gold with delta-rs), each webhook URL from its Secret; the pods roll when the rules
    change."""
    if not pipeline.spec.alerts:
        return []
    document = alert_rules_document(pipeline)
    rules = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(pipeline, pipeline.child("alerts"), "alerts"),
        "data": {ALERTS_FILE_KEY: document},
    }
    env = [
        {"name": "CRYPTOLAKE_ALERTS_FILE", "value": f"{ALERTS_DIR}/{ALERTS_FILE_KEY}"},
        {"name": "CRYPTOLAKE_METRICS_PORT", "value": str(ALERTS_METRICS_PORT)},
        {"name": "OTEL_SERVICE_NAME",
         "value": f"{pipeline.spec.telemetry.service_name_prefix}-alerts"},
        *s3_trust_env(pipeline, jvm=False),
        *({"name": alert_webhook_env(index),
           "valueFrom": {"secretKeyRef": {"name": alert.webhook.secret_ref.name,
                                          "key": alert.webhook.secret_ref.key}}}
          for index, alert in enumerate(pipeline.spec.alerts)),
    ]  # fmt: skip
    mounts, volumes = ca_volume(pipeline, kafka=False, s3=True)
    mounts.append({"name": "rules", "mountPath": ALERTS_DIR, "readOnly": True})
    volumes.append({"name": "rules", "configMap": {"name": pipeline.child("alerts")}})
    container = _container(
        "alerts", pipeline.spec.api.image or pipeline.images.api, [], pipeline,
        ALERTS_METRICS_PORT, command=["cryptolake-alerts"], env=env, volumeMounts=mounts,
        readinessProbe={"httpGet": {"path": "/metrics", "port": ALERTS_METRICS_PORT},
                        **PROBE_TIMING},
        resources=resources(ALERTS_RESOURCES),
    )  # fmt: skip
    deployment = _deployment(pipeline, "alerts", 1, {"containers": [container], "volumes": volumes})
    template = deployment["spec"]["template"]["metadata"]
    template["annotations"][ALERTS_HASH] = config_hash({ALERTS_FILE_KEY: document})
    return [rules, deployment]


def build_api(pipeline: Pipeline) -> list[Manifest]:
    api = pipeline.spec.api
    env = [
        {"name": "CRYPTOLAKE_HOST", "value": "0.0.0.0"},
        {"name": "CRYPTOLAKE_PORT", "value": str(API_PORT)},
        {
            "name": "OTEL_SERVICE_NAME",
            "value": f"{pipeline.spec.telemetry.service_name_prefix}-api",
        },
    ]
    env += s3_trust_env(pipeline, jvm=False)
    mounts, volumes = ca_volume(pipeline, kafka=False, s3=True)
    if api.auth_secret:
        env.append({"name": "CRYPTOLAKE_API_KEYS_FILE", "value": "/etc/cryptolake/api-keys/keys"})
        mounts.append(
            {"name": "api-keys", "mountPath": "/etc/cryptolake/api-keys", "readOnly": True}
        )
        volumes.append({"name": "api-keys", "secret": {"secretName": api.auth_secret}})
    container = _container(
        "api", api.image or pipeline.images.api, [], pipeline, API_PORT, env=env,
        readinessProbe={
            "httpGet": {"path": "/readyz", "port": API_PORT}, **PROBE_TIMING, "periodSeconds": 5
        },
        # A slow answer while the node is busy (Spark starting) is no reason for a restart.
        livenessProbe={
            "httpGet": {"path": "/healthz", "port": API_PORT},
            **PROBE_TIMING,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        resources=resources(api.resources),
        volumeMounts=mounts,
    )  # fmt: skip
    deployment = _deployment(
        pipeline, "api", api.replicas, {"containers": [container], "volumes": volumes}
    )
    service = _service(pipeline, pipeline.child("api"), "api", {"http": API_PORT},
                       type=api.service_type)  # fmt: skip
    return [deployment, service]


# --- network policies -----------------------------------------------------------------------

# The operator's pods (any namespace): it creates topics and the bucket.
OPERATOR_PEER: Final = {
    "namespaceSelector": {},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "cryptolake",
                                    "app.kubernetes.io/component": "operator"}},
}  # fmt: skip


def _peers(pipeline: Pipeline, *components: str) -> list[dict[str, Any]]:
    return [{"podSelector": {"matchLabels": selector(pipeline, c)}} for c in components]


def _policy(
    pipeline: Pipeline, name: str, component: str | None, ingress: list[dict[str, Any]]
) -> Manifest:
    """Ingress to the pipeline's pods of ``component`` (None: all of them) only as listed."""
    pods = (selector(pipeline, component) if component
            else {"app.kubernetes.io/instance": pipeline.name})  # fmt: skip
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(pipeline, pipeline.child(name), "network"),
        "spec": {"podSelector": {"matchLabels": pods}, "policyTypes": ["Ingress"],
                 "ingress": ingress},
    }  # fmt: skip


def _ports(*ports: int | str) -> list[dict[str, Any]]:
    return [{"port": p, "protocol": "TCP"} for p in ports]


def build_network_policies(pipeline: Pipeline) -> list[Manifest]:
    """Default deny for every pod of the pipeline, then who may talk to whom: the broker only
    from the producer, the Spark pods, its peers and the operator; MinIO only from the Spark
    pods, the API, the producer's kline checks (when on) and the operator; drivers and
    executors among themselves; the API and the metrics ports from anywhere (Prometheus,
    users). Egress stays open: live exchanges, external brokers and S3 have addresses no
    policy can know."""
    spark = ("ingest", "refine", "executor")
    policies = [_policy(pipeline, "default-deny", None, [])]
    if pipeline.spec.broker.engine != "external":
        broker_ports = [KAFKA_PORT, CONTROLLER_PORT, REDPANDA_RPC_PORT, REDPANDA_ADMIN_PORT]
        policies.append(_policy(pipeline, "broker", "broker", [
            {"from": [*_peers(pipeline, "producer", *spark), OPERATOR_PEER],
             "ports": _ports(KAFKA_PORT)},
            {"from": _peers(pipeline, "broker"), "ports": _ports(*broker_ports)},
        ]))  # fmt: skip
    if pipeline.spec.storage.engine == "minio":
        lake_users = (*spark, "api", *(["producer"] if _checks_klines(pipeline) else []),
                      *(["alerts"] if pipeline.spec.alerts else []))  # fmt: skip
        policies.append(_policy(pipeline, "storage", "storage", [
            {"from": [*_peers(pipeline, *lake_users), OPERATOR_PEER],
             "ports": _ports(MINIO_PORT)},
        ]))  # fmt: skip
    for component in spark:
        policies.append(_policy(pipeline, component, component, [
            {"from": _peers(pipeline, *spark), "ports": _ports(SPARK_DRIVER_PORT,
                                                               SPARK_BLOCK_MANAGER_PORT)},
            {"ports": _ports(JOBS_METRICS_PORT)},
        ]))  # fmt: skip
    policies.append(_policy(pipeline, "producer", "producer",
                            [{"ports": _ports(PRODUCER_METRICS_PORT)}]))  # fmt: skip
    policies.append(_policy(pipeline, "api", "api", [{"ports": _ports(API_PORT)}]))
    if pipeline.spec.alerts:
        policies.append(_policy(pipeline, "alerts", "alerts",
                                [{"ports": _ports(ALERTS_METRICS_PORT)}]))  # fmt: skip
    return policies


# --- all children ---------------------------------------------------------------------------


def build_children(pipeline: Pipeline) -> list[Manifest]:
    """Every child the pipeline owns, in apply order (config and storage before users).
    Generated credentials and certificates are not here: see ``build_minio_secret``,
    ``build_ca_secret``, ``build_kafka_secret`` and ``build_minio_tls_secret``."""
    spec = pipeline.spec
    children = [build_config_map(pipeline), *build_network_policies(pipeline)]
    if spec.broker.engine != "external":
        children += [
            *build_broker_services(pipeline),
            build_broker_statefulset(pipeline),
            build_broker_pdb(pipeline),
        ]
    if spec.storage.engine == "minio":
        children += [
            _service(pipeline, pipeline.child("minio"), "storage", {"s3": MINIO_PORT}),
            build_minio_statefulset(pipeline),
        ]
    children.append(build_producer_deployment(pipeline))
    children += build_spark_rbac(pipeline)
    for app in SPARK_APPLICATIONS:
        children += build_spark_driver(pipeline, app)
    children += build_api(pipeline)
    children += build_alerts(pipeline)
    return children
