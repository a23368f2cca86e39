"""Operator reaction times against the source-built control plane (etcd + kube-apiserver +
kube-controller-manager on loopback): for each of N pipelines, the time from the
CryptoPipeline's creation to all of its children existing (goal ≤ 2 s), and from a spec change
to ``status.observedGeneration`` matching it (goal ≤ 2 s); the operator's peak RSS; the
control plane's warm start. Last line: ``children_s=<median> generation_s=<median>``.

    make bench-operator
    .venv/bin/python benchmarks/bench_operator.py --pipelines 20

The operator runs as users run it (``cryptolake-operator run``, a separate process) with the
generated CRD; the minimal sample is the pipeline (20 children).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from benchlib import HelpFormatter, peak_rss_mib, scratch_dir
from kubernetes import client, config

from cryptolake.operator.builders import Pipeline, build_children
from cryptolake.operator.crd import build_crd
from cryptolake.operator.kube import Cluster
from cryptolake.operator.models import CryptoPipelineSpec
from cryptolake.stack.kafka import free_port
from cryptolake.stack.kube import ControlPlane, ControlPlaneConfig

SAMPLE = Path(__file__).resolve().parents[1] / "k8s" / "samples" / "minimal.yaml"
GROUP, VERSION, PLURAL = "cryptolake.io", "v1alpha1", "cryptopipelines"


def wait(predicate: Any, timeout_s: float, what: str) -> float:
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
    return time.perf_counter() - started


def existing_children(api: client.ApiClient, namespace: str, name: str) -> set[tuple[str, str]]:
    selector = f"app.kubernetes.io/instance={name}"
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    found = set()
    for kind, items in (
        ("Deployment", apps.list_namespaced_deployment(namespace, label_selector=selector).items),
        (
            "StatefulSet",
            apps.list_namespaced_stateful_set(namespace, label_selector=selector).items,
        ),
        ("Service", core.list_namespaced_service(namespace, label_selector=selector).items),
        ("ConfigMap", core.list_namespaced_config_map(namespace, label_selector=selector).items),
    ):
        found |= {(kind, item.metadata.name) for item in items}
    return found


def measure_one(
    api: client.ApiClient, namespace: str, name: str, sample: dict[str, Any]
) -> tuple[float, float]:
    """Create one pipeline and time its children; change its spec and time the status."""
    objects = client.CustomObjectsApi(api)
    resource = copy.deepcopy(sample)
    resource["metadata"] = {"name": name}
    spec = CryptoPipelineSpec.model_validate(resource["spec"])
    expected = {
        (c["kind"], c["metadata"]["name"])
        for c in build_children(Pipeline(name, namespace, "x", spec))
        if c["kind"] in ("Deployment", "StatefulSet", "Service", "ConfigMap")
    }
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, resource)
    children = wait(lambda: expected <= existing_children(api, namespace, name), 30, "children")
    patch = {"spec": {"processing": {"refine": {"trigger": "3 seconds"}}}}
    changed = objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)
    generation = changed["metadata"]["generation"]

    def observed() -> bool:
        body = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return bool(body.get("status", {}).get("observedGeneration") == generation)

    return children, wait(observed, 30, "observedGeneration")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--pipelines", type=int, default=10, help="pipelines to create")
    parser.add_argument("--work-dir", type=Path, help="parent of the scratch folder")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    with scratch_dir("bench-operator-", args.work_dir, args.keep) as root:
        plane_config = ControlPlaneConfig(
            data_dir=root / "kube", apiserver_port=free_port(), etcd_client_port=free_port(),
            etcd_peer_port=free_port(), controller_manager_port=free_port(),
        )  # fmt: skip
        plane = ControlPlane(plane_config)
        started = time.perf_counter()
        plane.start()
        print(f"control plane ready in {time.perf_counter() - started:.1f} s", flush=True)
        operator = None
        try:
            api = config.new_client_from_config(str(plane.kubeconfig))
            Cluster(api).apply(build_crd())
            core = client.CoreV1Api(api)
            namespace = "bench"
            core.create_namespace({"metadata": {"name": namespace}})
            time.sleep(2)  # the CRD becomes Established
            env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig),
                   "CRYPTOLAKE_OPERATOR_METRICS_PORT": "0"}  # fmt: skip
            operator = subprocess.Popen(
                [sys.executable, "-m", "cryptolake.operator", "run", "--standalone",
                 "--namespace", namespace, "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
                env=env, stdout=(root / "operator.log").open("wb"), stderr=subprocess.STDOUT,
            )  # fmt: skip
            time.sleep(3)  # the operator logs in and starts watching
            sample = yaml.safe_load(SAMPLE.read_text())
            children_s, generation_s = [], []
            for index in range(args.pipelines):
                name = f"bench-{index}"
                children, generation = measure_one(api, namespace, name, sample)
                children_s.append(children)
                generation_s.append(generation)
                print(f"{name}: children {children:.2f} s, observedGeneration {generation:.2f} s",
                      flush=True)  # fmt: skip
            rss = peak_rss_mib(operator.pid)
            for label, values in (("children", children_s), ("generation", generation_s)):
                ordered = sorted(values)
                p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
                print(f"{label}: median {statistics.median(values):.2f} s, p95 {p95:.2f} s, "
                      f"max {max(values):.2f} s (goal ≤ 2 s)", flush=True)  # fmt: skip
            print(f"operator peak RSS: {rss:.0f} MiB" if rss else "operator RSS: unknown")
            print(f"children_s={statistics.median(children_s):.2f} "
                  f"generation_s={statistics.median(generation_s):.2f}", flush=True)  # fmt: skip
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(timeout=30)
            plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
