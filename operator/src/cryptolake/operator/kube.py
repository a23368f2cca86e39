"""The operator's I/O against the API server: server-side apply of the children, reading
their real state, and the cleanup the finalizer does. The builders and status stay pure."""

from __future__ import annotations

import base64
import logging
from typing import Any, Final

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from cryptolake.operator.builders import MANAGED_BY, Manifest, Pipeline
from cryptolake.operator.status import FAILING_REASONS, WorkloadState

log = logging.getLogger(__name__)
FIELD_MANAGER: Final = "cryptolake-operator"
# Kinds whose set of children changes with the spec or between releases (the old drivers and
# CronJob; the executors' Role and pod template): those the pipeline no longer builds go.
PRUNED_KINDS: Final = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("batch/v1", "CronJob"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)


class Cluster:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.dynamic = DynamicClient(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)

    def apply(self, manifest: Manifest) -> None:
        """Server-side apply with one field manager: idempotent, and it takes back fields
        someone else changed (drift) while leaving fields it never set alone."""
        resource = self._resource(manifest)
        meta = manifest["metadata"]
        self.dynamic.server_side_apply(
            resource,
            body=manifest,
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )

    def prune(self, pipeline: Pipeline, children: list[Manifest]) -> list[str]:
        """Delete the pipeline's workloads and services the operator made before but builds
        no more (after an upgrade: two drivers of the old layout would write the tables the
        refine driver owns). Returns "Kind/name" of each deleted object."""
        keep = {(child["kind"], child["metadata"]["name"]) for child in children}
        selector = (f"app.kubernetes.io/instance={pipeline.name},"
                    f"app.kubernetes.io/managed-by={MANAGED_BY}")  # fmt: skip
        deleted = []
        for api_version, kind in PRUNED_KINDS:
            resource = self._resource({"apiVersion": api_version, "kind": kind})
            found = self.dynamic.get(resource, namespace=pipeline.namespace,
                                     label_selector=selector)  # fmt: skip
            for item in found.items:
                if (kind, item.metadata.name) in keep:
                    continue
                self.dynamic.delete(resource, name=item.metadata.name,
                                    namespace=pipeline.namespace,
                                    body={"propagationPolicy": "Background"})  # fmt: skip
                deleted.append(f"{kind}/{item.metadata.name}")
        return deleted

    def _resource(self, manifest: Manifest) -> Any:
        """The API resource for a manifest's kind; a kind added since the discovery cache was
        filled (a CRD just applied) is looked up once more."""
        wanted = {"api_version": manifest["apiVersion"], "kind": manifest["kind"]}
        try:
            return self.dynamic.resources.get(**wanted)
        except ResourceNotFoundError:
            self.dynamic.resources.invalidate_cache()
            return self.dynamic.resources.get(**wanted)

    def create_if_absent(self, manifest: Manifest) -> bool:
        """Create (generated credentials); an existing object is kept as it is."""
        resource = self._resource(manifest)
        try:
            self.dynamic.create(
                resource, body=manifest, namespace=manifest["metadata"]["namespace"]
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def workload_states(self, pipeline: Pipeline) -> dict[str, WorkloadState]:
        """Per component label: desired and ready replicas, restarts, a failing reason."""
        selector = f"app.kubernetes.io/instance={pipeline.name}"
        states: dict[str, WorkloadState] = {}
        workloads: list[Any] = [
            *self.apps.list_namespaced_deployment(
                pipeline.namespace, label_selector=selector
            ).items,
            *self.apps.list_namespaced_stateful_set(
                pipeline.namespace, label_selector=selector
            ).items,
        ]
        pods = self.core.list_namespaced_pod(pipeline.namespace, label_selector=selector).items
        for workload in workloads:
            component = workload.metadata.labels.get("app.kubernetes.io/component", "")
            restarts, failing = 0, None
            for pod in pods:
                if pod.metadata.labels.get("app.kubernetes.io/component") != component:
                    continue
                for container in pod.status.container_statuses or []:
                    restarts += container.restart_count or 0
                    waiting = container.state.waiting if container.state else None
                    if waiting is not None and waiting.reason in FAILING_REASONS:
                        failing = f"{waiting.reason}: {waiting.message or pod.metadata.name}"
            states[component] = WorkloadState(
                desired=workload.spec.replicas or 0,
                ready=(workload.status.ready_replicas or 0) if workload.status else 0,
                restarts=restarts,
                failing=failing,
            )
        return states

    def secret_keys(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's text values, decoded (credentials, PEM); binary ones (a Java trust store)
        are left out."""
        data = self.core.read_namespaced_secret(name, namespace).data or {}
        decoded = {key: base64.b64decode(value) for key, value in data.items()}
        texts = {}
        for key, value in decoded.items():
            try:
                texts[key] = value.decode()
            except UnicodeDecodeError:
                continue  # not text: no caller reads it
        return texts

    def namespace_terminating(self, namespace: str) -> bool:
        try:
            phase = self.core.read_namespace(namespace).status.phase
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return bool(phase == "Terminating")

    def delete_volumes(self, pipeline: Pipeline) -> int:
        """retainPolicy Delete: the broker's and MinIO's volume claims."""
        selector = f"app.kubernetes.io/instance={pipeline.name}"
        claims = self.core.list_namespaced_persistent_volume_claim(
            pipeline.namespace, label_selector=selector
        ).items
        for claim in claims:
            self.core.delete_namespaced_persistent_volume_claim(
                claim.metadata.name, pipeline.namespace
            )
        return len(claims)
