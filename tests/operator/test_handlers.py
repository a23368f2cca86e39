"""The operator process: liveness tracks reconciles, and the k8s/ manifests are accepted by a
real API server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from cryptolake.operator.kube import Cluster

K8S = Path(__file__).resolve().parents[2] / "k8s"


def manifests() -> list[dict[str, Any]]:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    return [doc for name in listed for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def test_the_k8s_manifests_apply_to_a_real_api_server(kube_api: client.ApiClient) -> None:
    cluster = Cluster(kube_api)
    documents = manifests()
    kinds = {doc["kind"] for doc in documents}
    assert {"CustomResourceDefinition", "ClusterRole", "Deployment", "ClusterKopfPeering"} <= kinds
    for doc in documents:
        try:
            cluster.apply(doc)
        except ResourceNotFoundError:
            # A CRD applied a moment ago: its kind is served once it is Established.
            time.sleep(2)
            cluster.apply(doc)
    deployment = client.AppsV1Api(kube_api).read_namespaced_deployment(
        "cryptolake-operator", "cryptolake-system"
    )
    assert deployment.spec.template.spec.service_account_name == "cryptolake-operator"
