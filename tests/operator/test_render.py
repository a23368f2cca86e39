"""``cryptolake-operator render``: what a CryptoPipeline becomes, without a cluster; and what it
renders is admitted by a real API server whose namespace enforces Pod Security "restricted"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from cryptolake.operator.builders import EXECUTOR_TEMPLATE
from cryptolake.operator.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "k8s" / "samples"
EXECUTORS = {"processing": {"refine": {"executors": {"instances": 2}}}}


def rendered(sample: str, capsys: pytest.CaptureFixture[str], **spec: Any) -> list[dict]:
    resource = yaml.safe_load((SAMPLES / f"{sample}.yaml").read_text())
    resource["spec"] |= spec
    capsys.readouterr()  # what earlier renders printed
    source = yaml.safe_dump(resource)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", __import__("io").StringIO(source))
        assert main(["render", "-f", "-", "-n", "markets"]) == 0
    return [doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc]


def pods_of(objects: list[dict]) -> dict[str, dict]:
    """Every pod the objects would start: workload templates and Spark's executor template."""
    pods = {}
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            name, template = obj["metadata"]["name"], obj["spec"]["template"]
            spec = dict(template["spec"])
            # The volumes the StatefulSet controller adds from its claim templates.
            claims = obj["spec"].get("volumeClaimTemplates", [])
            spec["volumes"] = [*spec.get("volumes", []), *(
                {"name": c["metadata"]["name"],
                 "persistentVolumeClaim": {"claimName": f"{c['metadata']['name']}-{name}-0"}}
                for c in claims
            )]  # fmt: skip
            pods[name] = {"metadata": template["metadata"], "spec": spec}
        if obj["kind"] == "ConfigMap" and EXECUTOR_TEMPLATE in obj.get("data", {}):
            executor = json.loads(obj["data"][EXECUTOR_TEMPLATE])
            executor["spec"]["containers"][0]["image"] = "localhost/cryptolake/jobs:0.1.0"
            pods["executor"] = executor
    return pods


def test_render_prints_every_child_without_a_cluster() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cryptolake.operator", "render", "-f",
         str(SAMPLES / "minimal.yaml"), "-n", "markets"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    kinds = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(done.stdout)]
    # Generated: placeholders for the keys, passwords and certificates.
    assert kinds[:4] == [
        ("Secret", "minimal-s3-credentials"),
        ("Secret", "minimal-ca"),
        ("Secret", "minimal-kafka-auth"),
        ("Secret", "minimal-minio-tls"),
    ]
    assert ("Deployment", "minimal-refine") in kinds and ("StatefulSet", "minimal-broker") in kinds
    assert all(d["metadata"]["namespace"] == "markets" for d in yaml.safe_load_all(done.stdout))


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ("kind: Deployment\napiVersion: apps/v1\nmetadata: {name: x}\n", "not a cryptolake.io"),
        ("apiVersion: cryptolake.io/v1alpha1\nkind: CryptoPipeline\nmetadata: {name: x}\n"
         "spec: {sources: []}\n", "spec.sources: List should have at least 1 item"),
        ("apiVersion: cryptolake.io/v1alpha1\nkind: CryptoPipeline\nspec: {}\n",
         "metadata.name is missing"),
        ("- just\n- a list\n", "not a mapping"),
        ("kind: [unclosed\n", "not YAML"),
        ("apiVersion: cryptolake.io/v1alpha1\nkind: CryptoPipeline\nmetadata: {name: x}\n"
         "spec: [1, 2]\n", "spec: Input should be"),
    ],
)  # fmt: skip
def test_render_refuses_what_is_no_pipeline_and_says_why(document: str, reason: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cryptolake.operator", "render", "-f", "-"],
        input=document, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and reason in done.stderr, done.stderr


def test_executors_get_rbac_and_a_template_local_mode_gets_no_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    local = {(o["kind"], o["metadata"]["name"]) for o in rendered("minimal", capsys)}
    assert ("Role", "minimal-spark") not in local
    with_executors = rendered("minimal", capsys, **EXECUTORS)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in with_executors}
    assert {("Role", "minimal-spark"), ("ConfigMap", "minimal-spark-templates")} <= kinds
    drivers = {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in with_executors
               if o["kind"] == "Deployment" and o["metadata"]["name"] in
               ("minimal-ingest", "minimal-refine")}  # fmt: skip
    assert drivers["minimal-refine"]["automountServiceAccountToken"] is True
    assert drivers["minimal-ingest"]["automountServiceAccountToken"] is False


@pytest.fixture
def restricted_namespace(kube_api: client.ApiClient, kube_namespace: str) -> str:
    labels = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}  # fmt: skip
    client.CoreV1Api(kube_api).patch_namespace(kube_namespace, {"metadata": {"labels": labels}})
    return kube_namespace


@pytest.mark.parametrize(
    ("sample", "spec"), [("minimal", {}), ("minimal", EXECUTORS), ("production", {})]
)
def test_every_pod_is_admitted_under_pod_security_restricted(
    kube_api: client.ApiClient,
    restricted_namespace: str,
    capsys: pytest.CaptureFixture[str],
    sample: str,
    spec: dict,
) -> None:
    core = client.CoreV1Api(kube_api)
    pods = pods_of(rendered(sample, capsys, **spec))
    assert {"minimal-broker", "minimal-minio", "minimal-api"} <= set(pods) or sample != "minimal"
    accounts = {pod["spec"].get("serviceAccountName", "default") for pod in pods.values()}
    for account in accounts:  # "default" comes from the controller manager, a moment later
        try:
            core.create_namespaced_service_account(
                restricted_namespace, {"metadata": {"name": account}}
            )
        except client.exceptions.ApiException as error:
            assert error.status == 409, error  # already made: fine
    for name, template in pods.items():
        pod = {"apiVersion": "v1", "kind": "Pod", **template}
        pod["metadata"] = {**pod.get("metadata", {}), "name": f"check-{name}"[:60]}
        core.create_namespaced_pod(restricted_namespace, pod, dry_run="All")
    # The check can fail: a pod as the operator built them before is refused.
    container = {"name": "c", "image": "localhost/cryptolake/api:0.1.0"}
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
             "spec": {"containers": [container]}}  # fmt: skip
    with pytest.raises(client.exceptions.ApiException, match="violates PodSecurity"):
        core.create_namespaced_pod(restricted_namespace, plain, dry_run="All")


def test_every_rendered_object_is_accepted_by_the_api_server(
    kube_api: client.ApiClient, kube_namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Server-side dry run of everything (network policies, RBAC, the executor template…)."""
    from kubernetes.dynamic import DynamicClient  # noqa: PLC0415

    dynamic = DynamicClient(kube_api)
    objects = rendered("production", capsys, **EXECUTORS)
    assert {o["kind"] for o in objects} >= {"NetworkPolicy", "Role", "StatefulSet", "ConfigMap"}
    for obj in objects:
        obj["metadata"]["namespace"] = kube_namespace
        obj["metadata"].pop("ownerReferences")  # the owner does not exist here
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        resource.create(body=obj, namespace=kube_namespace, query_params=[("dryRun", "All")])
