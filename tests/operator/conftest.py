"""Fixtures for the operator tests on a real API server (``kube_control_plane`` from
cryptolake.stack): the official client on it, and the CRD installed once per session."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from cryptolake.operator.crd import build_crd
from cryptolake.operator.kube import Cluster


@pytest.fixture(scope="session")
def kube_api(kube_control_plane: Any) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(str(kube_control_plane.kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="session")
def crd_installed(kube_api: client.ApiClient) -> dict[str, Any]:
    """The generated CRD, server-side applied, waited for until Established."""
    crd = build_crd()
    Cluster(kube_api).apply(crd)
    extensions = client.ApiextensionsV1Api(kube_api)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = extensions.read_custom_resource_definition(crd["metadata"]["name"]).status
        if any(c.type == "Established" and c.status == "True" for c in status.conditions or []):
            return crd
        time.sleep(0.2)
    raise AssertionError("the CRD was not Established within 30 s")


@pytest.fixture
def pipelines(
    kube_api: client.ApiClient, crd_installed: dict[str, Any], kube_namespace: str
) -> Any:
    """CryptoPipeline create/get/patch/delete in this test's namespace."""
    objects = client.CustomObjectsApi(kube_api)

    class Pipelines:
        namespace = kube_namespace

        def create(self, resource: dict[str, Any]) -> dict[str, Any]:
            return objects.create_namespaced_custom_object(  # type: ignore[no-any-return]
                "cryptolake.io", "v1alpha1", kube_namespace, "cryptopipelines", resource
            )

        def get(self, name: str) -> dict[str, Any]:
            return objects.get_namespaced_custom_object(  # type: ignore[no-any-return]
                "cryptolake.io", "v1alpha1", kube_namespace, "cryptopipelines", name
            )

        def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
            return objects.patch_namespaced_custom_object(  # type: ignore[no-any-return]
                "cryptolake.io", "v1alpha1", kube_namespace, "cryptopipelines", name, body
            )

        def delete(self, name: str) -> None:
            objects.delete_namespaced_custom_object(
                "cryptolake.io", "v1alpha1", kube_namespace, "cryptopipelines", name
            )

    return Pipelines()


@pytest.fixture
def eventually() -> Callable[..., Any]:
    """``eventually(fn, timeout_s, what)``: poll until fn() returns a truthy value."""

    def poll(fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = fn()
            except client.exceptions.ApiException as error:
                value, last_error = None, error
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what} ({last_error})")

    return poll


def sample(name: str) -> dict[str, Any]:
    from pathlib import Path  # noqa: PLC0415

    path = Path(__file__).resolve().parents[2] / "k8s" / "samples" / f"{name}.yaml"
    resource: dict[str, Any] = yaml.safe_load(path.read_text())
    return resource


@pytest.fixture
def load_sample() -> Callable[[str], dict[str, Any]]:
    return sample
