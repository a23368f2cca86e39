"""The whole product on a cluster that runs pods (fixture `cluster`: $KUBECONFIG, kind, or the
local cluster of `make cluster-up`): `helm install` the chart, `kubectl apply` the minimal
sample, and check what a user would — every pod Ready, the simulator's trades out of the API
as Gold candles equal to a Decimal recomputation, broker and Spark driver pods killed without
losing or duplicating a trade, Spark executors created through the in-cluster API, suspend and
resume, and nothing of ours left after the CR is deleted and the chart uninstalled.

The tests share one pipeline and run in file order; each step's checks use the state the steps
before left."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cryptolake.common.candles import MINUTE_US, reference_bars
from cryptolake.stack.helm import CHART_DIR, REPO_DIR, CommandFailed, Tool, helm, kubectl

# A pipeline on 2 cores: a step may take minutes, the whole tier about half an hour. Every wait
# is also capped by the tier's budget, so a broken pipeline fails the tier in bounded time.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
# A passing tier takes 25 to 35 min after the install here; a failing one stops at the budget.
BUDGET_S = float(os.environ.get("CRYPTOLAKE_E2E_BUDGET_S", "3000"))

PIPELINE = "minimal"
API_NODE_PORT = 30080
# The local cluster's node address (cluster.py); another cluster: its first InternalIP.
LOCAL_NODE_IP = "10.231.0.2"
WORKLOADS = ("producer", "ingest", "refine", "api")
# What the trades topic holds, read inside the producer pod (its image has the Kafka client;
# on a TLS broker the test logs in as the admin, since the producer may not read): every record
# from the start of each partition to the end it had when the script began.
DUMP_TOPIC = """
import sys
from confluent_kafka import Consumer, TopicPartition
from cryptolake.common.kafka_client import librdkafka_config
from cryptolake.common.settings import KafkaTopicsSettings
settings = KafkaTopicsSettings()
topic = settings.trades_topic
consumer = Consumer({**librdkafka_config(settings), "group.id": "e2e-ground-truth",
                     "enable.auto.commit": False})
partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30) for p in partitions}
consumer.assign([TopicPartition(topic, p, low) for p, (low, high) in ends.items()])
left = {p for p, (low, high) in ends.items() if high > low}
while left:
    message = consumer.poll(5)
    if message is None or message.error():
        continue
    if message.offset() < ends[message.partition()][1]:
        sys.stdout.write(message.value().decode() + "\\n")
    if message.offset() >= ends[message.partition()][1] - 1:
        left.discard(message.partition())
consumer.close()
"""


@dataclass
class Deployment:
    namespace: str
    kube: Tool
    api_url: str

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self.kube.run("-n", self.namespace, *args, stdin=stdin).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def wait_ready(self, timeout_s: int = 900) -> None:
        timeout_s = int(Budget.cap(timeout_s))
        # The Tool's own 300 s limit would cut a longer wait short.
        waiting = dataclasses.replace(self.kube, timeout_s=timeout_s + 30)
        waiting.run("-n", self.namespace, "wait", "--for=condition=Ready", f"cpl/{PIPELINE}",
                    f"--timeout={timeout_s}s")  # fmt: skip

    def api(self, path: str, **params: str | int) -> Any:
        url = f"{self.api_url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=15) as response:
            return json.load(response, parse_float=Decimal)  # every digit the API sent


class Budget:
    """What is left of the tier's time (``CRYPTOLAKE_E2E_BUDGET_S``, from the install on)."""

    deadline: float | None = None

    @classmethod
    def start(cls) -> None:
        cls.deadline = time.monotonic() + BUDGET_S

    @classmethod
    def cap(cls, timeout_s: float) -> float:
        left = BUDGET_S if cls.deadline is None else cls.deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the e2e tier's budget of {BUDGET_S:.0f} s is spent")
        return min(timeout_s, left)


def eventually(
    what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 5,
    *, budgeted: bool = True,
) -> Any:  # fmt: skip
    """``check()`` until it returns something truthy; its last complaint on timeout. Clean-up
    waits are not ``budgeted``: they run even when the steps spent the budget."""
    if budgeted:
        timeout_s = Budget.cap(timeout_s)
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        # A kubectl that failed under load (CommandFailed) is tried again like the rest.
        except (AssertionError, OSError, urllib.error.URLError, CommandFailed,
                subprocess.SubprocessError) as e:  # fmt: skip
            last = e
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


log = logging.getLogger(__name__)

# Namespaces this tier creates carry this label, so a later run can clean up after a killed one.
E2E_LABEL = "cryptolake.io/e2e"
_current: list[Deployment] = []


def remove_stale_releases(kube: Tool, chart: Tool) -> None:
    """What a killed run left: its namespace (pods still running after the next cluster-up,
    doubling the load) and its release's cluster roles (which block a new install)."""
    stale = kube.run("get", "namespaces", "-l", E2E_LABEL, "-o", "name").stdout.split()
    for name in (n.removeprefix("namespace/") for n in stale):
        chart.run("uninstall", "cryptolake", "--namespace", name, "--ignore-not-found", "--wait")
        # With its operator gone (a running one would put it back), the CR's finalizer would
        # keep the namespace terminating forever.
        for resource in kube.run("get", "cpl", "-n", name, "-o", "name").stdout.split():
            kube.run("patch", resource, "-n", name, "--type=merge",
                     "-p", '{"metadata":{"finalizers":[]}}')  # fmt: skip
        kube.run("delete", "namespace", name, "--wait", "--timeout=300s")


def diagnostics() -> str:
    """The pipeline's state for a failed step's report: pods, the CR's conditions, warnings,
    and the last lines of every container that restarted or is not ready."""
    if not _current:
        return "no release installed"
    deployment = _current[0]
    out: list[str] = []

    def run(*args: str) -> str:
        try:
            return deployment.kubectl(*args)
        except CommandFailed as exc:
            return f"({' '.join(args)}: {exc})"

    out.append(run("get", "pods", "-o", "wide"))
    out.append(run("get", "cpl", PIPELINE, "-o", "jsonpath={.status.conditions}"))
    out.append(run("get", "events", "--field-selector", "type=Warning",
                   "--sort-by=.lastTimestamp"))  # fmt: skip
    try:
        pods = deployment.json("pods")["items"]
    except (CommandFailed, ValueError) as exc:
        return "\n".join([*out, f"(pods: {exc})"])
    for pod in pods:
        for status in pod["status"].get("containerStatuses", []):
            if status.get("ready") and not status.get("restartCount"):
                continue
            name, container = pod["metadata"]["name"], status["name"]
            previous = ["--previous"] if status.get("restartCount") else []
            tail = run("logs", name, "-c", container, "--tail=25", *previous)
            out.append(f"--- {name}/{container} (restarts {status.get('restartCount', 0)})")
            out.extend(line[:300] for line in tail.splitlines())
    return "\n".join(out)


@pytest.fixture(scope="module")
def release(cluster: Any) -> Iterator[Deployment]:
    """The chart installed (its own namespace) and, at the end, uninstalled: nothing of ours
    may be left."""
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    kube, chart = kubectl(cluster.kubeconfig), helm(cluster.kubeconfig)
    remove_stale_releases(kube, chart)
    Budget.start()
    kube.run("create", "namespace", namespace)
    # Every pod of the chart and of the pipeline must meet Pod Security "restricted".
    kube.run("label", "namespace", namespace, f"{E2E_LABEL}=true",
             "pod-security.kubernetes.io/enforce=restricted")  # fmt: skip
    node_ip = LOCAL_NODE_IP
    if cluster.server != f"https://{LOCAL_NODE_IP}:6443":
        nodes = json.loads(kube.run("get", "nodes", "-o", "json").stdout)["items"]
        addresses = nodes[0]["status"]["addresses"]
        node_ip = next(a["address"] for a in addresses if a["type"] == "InternalIP")
    # A kept cluster may hold an older CRD, which Helm never upgrades: `make crd-upgrade`.
    kube.run("apply", "--server-side", "--force-conflicts", "-f", str(CHART_DIR / "crds"))
    chart.run(
        "install", "cryptolake", str(CHART_DIR), "--namespace", namespace,
        "--values", str(CHART_DIR / "ci" / "local-cluster-values.yaml"),
        "--wait", "--timeout", "10m",
    )  # fmt: skip
    deployment = Deployment(namespace, kube, f"http://{node_ip}:{API_NODE_PORT}")
    _current.append(deployment)
    yield deployment
    _current.clear()
    kube.run("delete", "cryptopipelines", "--all", "-n", namespace, "--wait", "--timeout=300s")
    # Retained volumes (retainPolicy Retain) of a run that stopped before test 8.
    kube.run("delete", "pvc", "--all", "-n", namespace, "--wait", "--timeout=120s")
    chart.run("uninstall", "cryptolake", "--namespace", namespace, "--wait")

    def nothing_left() -> bool:
        ours = kube.run(
            "get",
            "all,configmaps,secrets,pvc,roles,rolebindings,cryptopipelines",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/part-of=cryptolake",
            "-o",
            "name",
        ).stdout.split()
        cluster_scoped = kube.run(
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            "app.kubernetes.io/instance=cryptolake",
            "-o",
            "name",
        ).stdout.split()
        assert not ours and not cluster_scoped, (ours, cluster_scoped)
        return True

    # Pods terminate a little after their owners are gone.
    eventually("nothing of ours left after helm uninstall", nothing_left, timeout_s=180,
               budgeted=False)  # fmt: skip
    kube.run("delete", "namespace", namespace, "--wait=false")


@pytest.fixture(scope="module")
def pipeline(release: Deployment) -> Deployment:
    release.kubectl("apply", "-f", str(REPO_DIR / "k8s" / "samples" / "minimal.yaml"))
    release.wait_ready()
    return release


# --- ground truth ---------------------------------------------------------------------------


def ground_truth(deployment: Deployment) -> list[dict[str, Any]]:
    """Every trade the producer put into Kafka, duplicates removed as Silver removes them."""
    admin: list[str] = []
    secret = deployment.json("secrets", "-l", f"app.kubernetes.io/instance={PIPELINE}")
    for item in secret["items"]:
        if item["metadata"]["name"] == f"{PIPELINE}-kafka-auth":
            password = base64.b64decode(item["data"]["admin"]).decode()
            admin = ["CRYPTOLAKE_KAFKA_USERNAME=admin", f"CRYPTOLAKE_KAFKA_PASSWORD={password}"]
    text = deployment.kubectl(
        "exec", "-i", f"deploy/{PIPELINE}-producer", "--", "env", *admin, "python", "-",
        stdin=DUMP_TOPIC,
    )  # fmt: skip
    trades: dict[tuple[str, str, str], dict[str, Any]] = {}
    for line in text.splitlines():
        trade = json.loads(line)
        trades.setdefault((trade["exchange"], trade["symbol"], trade["trade_id"]), trade)
    return list(trades.values())


def expected_bars(trades: list[dict[str, Any]], upto_minute: int) -> dict[tuple[str, int], dict]:
    """1-minute bars recomputed with Decimal, for minutes before ``upto_minute`` (epoch min)."""
    return reference_bars(t for t in trades if t["event_time"] // MINUTE_US < upto_minute)


def served_bars(deployment: Deployment, symbol: str, first: int, upto: int) -> dict[int, dict]:
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first * 60))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(upto * 60))
    body = deployment.api("/v1/candles", symbol=symbol, interval="1m", start=start, end=end,
                          limit=1000)  # fmt: skip
    return {bar["time_ms"] // 60_000: bar for bar in body["bars"]}


def assert_gold_equals_ground_truth(deployment: Deployment, since_minute: int = 0) -> int:
    """Gold, as the API serves it, equals the recomputation for every complete minute of the
    ground truth (waiting for Gold to catch up); returns how many bars were compared."""

    def complete_minutes() -> tuple[int, dict]:
        truth = ground_truth(deployment)
        assert truth, "the producer has put no trade into Kafka"
        last_minute = max(t["event_time"] for t in truth) // MINUTE_US
        # The newest minute may still be filling (and the one before may get late trades).
        expected = {
            key: bar
            for key, bar in expected_bars(truth, last_minute - 1).items()
            if key[1] >= since_minute
        }
        assert len({minute for _, minute in expected}) >= 2, "under 2 complete minutes so far"
        return last_minute, expected

    last_minute, expected = eventually(
        "two complete minutes of trades in Kafka", complete_minutes, timeout_s=600, every_s=20
    )
    symbols = sorted({symbol for symbol, _ in expected})
    first = min(minute for _, minute in expected)

    def caught_up() -> dict[tuple[str, int], dict]:
        served = {
            (symbol, minute): bar
            for symbol in symbols
            for minute, bar in served_bars(deployment, symbol, first, last_minute - 1).items()
        }
        behind = [
            k for k, bar in expected.items() if served.get(k, {}).get("trades") != bar["trades"]
        ]
        assert not behind, f"{len(behind)} of {len(expected)} bars differ, e.g. {behind[:3]}"
        return served

    served = eventually("Gold catches up with the ground truth", caught_up, timeout_s=600)
    fields = ("open", "high", "low", "close", "volume", "quote_volume", "vwap", "trades",
              "buy_volume", "sell_volume")  # fmt: skip
    for key, bar in expected.items():
        got = served[key]
        for field in fields:
            assert got[field] == bar[field], (key, field, got[field], bar[field])
    return len(expected)


# --- the steps ------------------------------------------------------------------------------


def test_1_the_operator_is_installed_and_passes_helm_test(
    release: Deployment, cluster: Any
) -> None:
    operator = release.json("deployment", "cryptolake-operator")
    assert operator["status"].get("availableReplicas") == 1
    done = helm(cluster.kubeconfig).run("test", "cryptolake", "--namespace", release.namespace)
    assert "Phase:          Succeeded" in done.stdout, done.stdout


def test_2_the_minimal_sample_becomes_ready(pipeline: Deployment) -> None:
    status = pipeline.json("cpl", PIPELINE)["status"]
    assert status["phase"] == "Running"
    pods = pipeline.json("pods", "-l", f"app.kubernetes.io/instance={PIPELINE}")["items"]
    components = {pod["metadata"]["labels"]["app.kubernetes.io/component"] for pod in pods}
    assert {*WORKLOADS, "broker", "storage"} <= components
    for pod in pods:
        ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", pod["metadata"]["name"]
    # Started before the operator granted their ACLs, the clients waited instead of failing.
    restarts = {pod["metadata"]["name"]: sum(c["restartCount"] for c in
                pod["status"]["containerStatuses"]) for pod in pods}  # fmt: skip
    assert not any(restarts.values()), restarts


def test_3_gold_candles_from_the_api_equal_the_ground_truth(pipeline: Deployment) -> None:
    compared = assert_gold_equals_ground_truth(pipeline)
    assert compared >= 2


# Which of the pipeline's services a pod can open a TCP connection to, in 5 s each (the
# addresses from the pipeline's ConfigMap and its API Service).
PROBE_SERVICES = """
import json, os, socket, urllib.parse
def address(url):
    parsed = urllib.parse.urlsplit(url if "://" in url else "tcp://" + url)
    return parsed.hostname, parsed.port
targets = {"broker": address(os.environ["CRYPTOLAKE_BOOTSTRAP_SERVERS"].split(",")[0]),
           "minio": address(os.environ["CRYPTOLAKE_S3_ENDPOINT"]),
           "api": (os.environ["API_HOST"], 8000)}
reached = {}
for name, (host, port) in targets.items():
    try:
        socket.create_connection((host, port), timeout=5).close()
        reached[name] = "connected"
    except OSError as exc:
        reached[name] = type(exc).__name__
print(json.dumps(reached))
"""


def probe_from(pipeline: Deployment, workload: str) -> dict[str, str]:
    text = pipeline.kubectl("exec", "-i", f"deploy/{PIPELINE}-{workload}", "--",
                            "env", f"API_HOST={PIPELINE}-api", "python", "-",
                            stdin=PROBE_SERVICES)  # fmt: skip
    return json.loads(text.splitlines()[-1])


def probe_from_outsider(pipeline: Deployment) -> dict[str, str]:
    """The probe from a pod of the namespace that is no part of the pipeline (the producer's
    image and configuration, none of its labels)."""
    image = pipeline.json("deploy", f"{PIPELINE}-producer")["spec"]["template"]["spec"][
        "containers"][0]["image"]  # fmt: skip
    name = f"outsider-{uuid.uuid4().hex[:6]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {E2E_LABEL: "outsider"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "Never",
                "command": ["python", "-c", PROBE_SERVICES],
                "env": [{"name": "API_HOST", "value": f"{PIPELINE}-api"}],
                "envFrom": [{"configMapRef": {"name": f"{PIPELINE}-config"}}],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }  # fmt: skip
    pipeline.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    try:
        eventually(
            "the outsider's probe finishes",
            lambda: pipeline.json("pod", name)["status"].get("phase") in ("Succeeded", "Failed"),
            timeout_s=180,
        )
        return json.loads(pipeline.kubectl("logs", name).splitlines()[-1])
    finally:
        pipeline.kubectl("delete", "pod", name, "--wait=false")


def test_3b_network_policies_keep_other_pods_off_the_broker_and_minio(
    pipeline: Deployment,
) -> None:
    """Enforced NetworkPolicies (the local cluster runs kube-router's firewall): the pipeline's
    own pods reach what they use (the producer MinIO too, for its kline checks); another pod
    of the namespace reaches only the API."""
    producer = probe_from(pipeline, "producer")
    assert producer["broker"] == producer["minio"] == "connected", producer  # kline checks
    assert probe_from(pipeline, "api")["minio"] == "connected"
    outsider = probe_from_outsider(pipeline)
    # The API answers it, so the pod has a network: the other two are refused by policy
    # (kube-router rejects; an enforcer that drops would leave them to time out).
    assert outsider["api"] == "connected", outsider
    denied = {"ConnectionRefusedError", "TimeoutError"}
    assert outsider["broker"] in denied and outsider["minio"] in denied, outsider


# Run in the producer pod: a plaintext client, and the producer's own login reading trades.
BROKER_REFUSALS = """
import json
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from cryptolake.common.kafka_client import librdkafka_config
from cryptolake.common.settings import KafkaTopicsSettings
settings = KafkaTopicsSettings()
refused = {}
plain = AdminClient({"bootstrap.servers": settings.bootstrap_servers, "socket.timeout.ms": 3000})
try:
    plain.list_topics(timeout=8)
    refused["plaintext"] = "answered"
except KafkaException as exc:
    refused["plaintext"] = exc.args[0].name()
consumer = Consumer({**librdkafka_config(settings), "group.id": "e2e-producer-reads"})
consumer.assign([TopicPartition(settings.trades_topic, 0, 0)])
message = consumer.poll(15)
refused["producer_reads"] = (message.error().name() if message is not None and message.error()
                             else "read" if message is not None else "nothing")
consumer.close()
print(json.dumps(refused))
"""


def test_3c_the_broker_speaks_tls_and_each_client_may_only_do_its_job(
    pipeline: Deployment,
) -> None:
    """broker.tls (the default): no plaintext client gets an answer, and the producer's login
    may not read the trades it writes (the jobs' may: test 3 needs it)."""
    text = pipeline.kubectl("exec", "-i", f"deploy/{PIPELINE}-producer", "--", "python", "-",
                            stdin=BROKER_REFUSALS)  # fmt: skip
    refused = json.loads(text.splitlines()[-1])
    assert refused["plaintext"] in ("_TRANSPORT", "_TIMED_OUT", "_ALL_BROKERS_DOWN"), refused
    # Refused either way: its consumer group or the topic, whichever the broker checks first.
    assert refused["producer_reads"] in ("GROUP_AUTHORIZATION_FAILED",
                                         "TOPIC_AUTHORIZATION_FAILED"), refused  # fmt: skip


# Run in the API pod: MinIO by its Service name over HTTPS, trusting the CA file the operator
# gives the pod (CRYPTOLAKE_S3_CA_FILE) and nothing else, and the same address in plain HTTP.
MINIO_TLS = """
import json, os, ssl, urllib.error, urllib.request
https = os.environ["CRYPTOLAKE_S3_ENDPOINT"]
pipeline_ca = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
pipeline_ca.load_verify_locations(os.environ["CRYPTOLAKE_S3_CA_FILE"])
seen = {}
for name, url in {"https": https, "http": "http://" + https.split("://", 1)[1]}.items():
    try:
        with urllib.request.urlopen(url + "/minio/health/ready", timeout=5,
                                    context=pipeline_ca) as response:
            seen[name] = response.status
    except urllib.error.HTTPError as exc:
        seen[name] = exc.code
    except (OSError, ssl.SSLError) as exc:
        seen[name] = type(exc).__name__
print(json.dumps(seen))
"""


def test_3d_minio_speaks_tls_with_a_certificate_of_the_pipeline_ca(pipeline: Deployment) -> None:
    """storage.tls (the default): the certificate verifies for MinIO's Service name against
    the pipeline's CA alone; plain HTTP is refused."""
    text = pipeline.kubectl("exec", "-i", f"deploy/{PIPELINE}-api", "--", "python", "-",
                            stdin=MINIO_TLS)  # fmt: skip
    seen = json.loads(text.splitlines()[-1])
    assert seen["https"] == 200, seen
    assert seen["http"] == 400, seen  # MinIO: "client sent an HTTP request to an HTTPS server"


def _restart_and_recheck(pipeline: Deployment, selector: str, what: str) -> None:
    (old,) = [p["metadata"]["uid"] for p in pipeline.json("pods", "-l", selector)["items"]]
    killed_at = int(time.time() // 60)
    pipeline.kubectl("delete", "pod", "-l", selector, "--grace-period=0", "--force")

    def replaced() -> bool:
        pods = pipeline.json("pods", "-l", selector)["items"]
        return any(
            p["metadata"]["uid"] != old
            and any(
                # A pod just created has no conditions yet.
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
            for p in pods
        )

    eventually(f"a new {what} pod is Ready", replaced, timeout_s=600)
    pipeline.wait_ready()
    # Minutes around the kill: every trade exactly once (counts equal, prices equal).
    eventually(
        f"trades after the {what} kill reach Gold",
        lambda: (
            assert_gold_equals_ground_truth(pipeline, since_minute=killed_at - 2)
            and max(t["event_time"] for t in ground_truth(pipeline)) // 60_000_000 > killed_at + 2
        ),
        timeout_s=900,
        every_s=20,
    )


def test_4_killing_the_broker_loses_and_duplicates_nothing(pipeline: Deployment) -> None:
    _restart_and_recheck(pipeline, f"app.kubernetes.io/instance={PIPELINE},"
                         "app.kubernetes.io/component=broker", "broker")  # fmt: skip


def test_5_a_killed_spark_driver_resumes_from_its_checkpoint(pipeline: Deployment) -> None:
    _restart_and_recheck(pipeline, f"app.kubernetes.io/instance={PIPELINE},"
                         "app.kubernetes.io/component=refine", "refine driver")  # fmt: skip
    logs = pipeline.kubectl("logs", f"deploy/{PIPELINE}-refine")
    assert "query refine started" in logs


# Run in the producer pod: its kline-check counters from its own metrics endpoint.
KLINE_CHECKS = """
import json, os, urllib.request
port = os.environ["CRYPTOLAKE_METRICS_PORT"]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
counts = {}
for line in text.splitlines():
    if line.startswith("cryptolake_producer_kline_checks_total{"):
        status = line.split('status="')[1].split('"')[0]
        counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
print(json.dumps(counts))
"""


def test_5b_the_producer_checks_gold_against_the_simulators_klines(pipeline: Deployment) -> None:
    """spec.producer.klineCheckIntervalSeconds (default 60): the producer reads Gold from the
    TLS MinIO (its CA added to the public ones) and finds the minutes equal to the klines."""

    def counts() -> dict[str, float]:
        text = pipeline.kubectl("exec", "-i", f"deploy/{PIPELINE}-producer", "--", "python",
                                "-", stdin=KLINE_CHECKS)  # fmt: skip
        return json.loads(text.splitlines()[-1])

    eventually("the producer's kline checks find matching minutes",
               lambda: counts().get("match", 0) >= 1, timeout_s=420, every_s=15)  # fmt: skip
    # Not asserted: no mismatch. The drivers killed before may leave a minute half-written in
    # Gold when it is checked (its trades then asked again: docs/gaps.md).
    logs = pipeline.kubectl("logs", f"deploy/{PIPELINE}-producer")
    assert "klines: simulator" in logs
    assert "certificate" not in logs.lower(), logs[-3000:]


# Run in the producer pod: its market-snapshot and poll counters from its metrics endpoint.
MARKET_SNAPSHOTS = """
import json, os, re, urllib.request
port = os.environ["CRYPTOLAKE_METRICS_PORT"]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
counts = {}
for line in text.splitlines():
    found = re.match(r'cryptolake_producer_market_(snapshots|polls)_total[{](.*)[}] (.*)', line)
    if found:
        outcome = re.search(r'outcome="([a-z]+)"', found.group(2))
        key = found.group(1) + (":" + outcome.group(1) if outcome else "")
        counts[key] = counts.get(key, 0) + float(found.group(3))
    if line.startswith('cryptolake_producer_delivery_errors_total{topic="crypto.markets.v1"}'):
        counts["delivery_errors"] = float(line.rsplit(" ", 1)[1])
print(json.dumps(counts))
"""


def test_5d_the_producer_publishes_coin_market_snapshots_under_its_acls(
    pipeline: Deployment,
) -> None:
    """The producer polls the simulator's CoinGecko into crypto.markets.v1, a topic the
    operator created and the producer's login may write (no delivery error)."""

    def counts() -> dict[str, float]:
        text = pipeline.kubectl("exec", "-i", f"deploy/{PIPELINE}-producer", "--", "python",
                                "-", stdin=MARKET_SNAPSHOTS)  # fmt: skip
        return json.loads(text.splitlines()[-1])

    found = eventually("market snapshots published",
                       lambda: (c := counts()).get("snapshots", 0) >= 10 and c,
                       timeout_s=180, every_s=10)  # fmt: skip
    assert found.get("polls:failed", 0) == 0 and found.get("polls:ok", 0) >= 1, found
    assert found.get("delivery_errors", 0) == 0, found


# A webhook receiver in the cluster: prints each body it is posted as one JSON line.
WEBHOOK_RECEIVER = """
import http.server, sys
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        sys.stdout.write(body.decode() + "\\n"); sys.stdout.flush()
        self.send_response(204); self.end_headers()
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Hook).serve_forever()
"""


def _start_webhook_receiver(pipeline: Deployment, name: str) -> None:
    """A Pod and Service ``name`` (the API's image), no part of the pipeline."""
    image = pipeline.json("deploy", f"{PIPELINE}-api")["spec"]["template"]["spec"][
        "containers"][0]["image"]  # fmt: skip
    labels = {E2E_LABEL: name}
    receiver = {
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
             "spec": {
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                     "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{
                     "name": "hook", "image": image, "imagePullPolicy": "Never",
                     "command": ["python", "-c", WEBHOOK_RECEIVER],
                     "ports": [{"containerPort": 8080}],
                     "securityContext": {"allowPrivilegeEscalation": False,
                                         "readOnlyRootFilesystem": True,
                                         "capabilities": {"drop": ["ALL"]}},
                 }]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
             "spec": {"selector": labels, "ports": [{"port": 8080, "targetPort": 8080}]}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
             "stringData": {"url": f"http://{name}:8080/hook"}},
        ],
    }  # fmt: skip
    pipeline.kubectl("apply", "-f", "-", stdin=json.dumps(receiver))


def test_5c_alerts_fire_and_reach_a_webhook_through_the_worker_the_operator_runs(
    pipeline: Deployment,
) -> None:
    """spec.alerts: the operator runs the alerts worker (API image) with the rules and the
    webhook URL from its Secret; a firing reaches a receiver in the cluster, is listed as
    delivered by /v1/alerts, and removing the rules removes the worker."""
    receiver = "e2e-webhook"
    _start_webhook_receiver(pipeline, receiver)
    # Any minute whose high is above its low fires: the simulator's minutes do.
    webhook = {"format": "json", "secretRef": {"name": receiver, "key": "url"}}
    rule = {"name": "e2e-any-move", "kind": "volatility", "threshold": "0.000000000001",
            "cooldown": "0m", "webhook": webhook}  # fmt: skip
    patch = {"spec": {"alerts": [rule]}}
    pipeline.kubectl("patch", "cpl", PIPELINE, "--type=merge", "-p", json.dumps(patch))
    try:

        def posted() -> list[dict[str, Any]]:
            lines = pipeline.kubectl("logs", receiver).splitlines()
            return [json.loads(line) for line in lines if line.startswith("{")]

        bodies = eventually("an alert posted to the receiver", posted, timeout_s=420, every_s=10)
        first = bodies[0]
        assert first["rule"] == "e2e-any-move" and first["exchange"] == "simulator"

        def delivered() -> list[dict[str, Any]]:
            listed = pipeline.api("/v1/alerts", rule="e2e-any-move")["alerts"]
            return [a for a in listed if a["alert_id"] == first["alert_id"]
                    and a["delivery"] == "delivered"]  # fmt: skip

        (listed,) = eventually("the firing listed as delivered", delivered, timeout_s=120)
        assert listed["value"] == first["value"] and listed["attempts"] == 1
        pipeline.wait_ready()  # ApiReady counts the alerts worker
        status = pipeline.json("cpl", PIPELINE)["status"]
        assert status["components"]["alerts"]["ready"] == 1
    finally:
        pipeline.kubectl("patch", "cpl", PIPELINE, "--type=merge", "-p",
                         json.dumps({"spec": {"alerts": []}}))  # fmt: skip
        pipeline.kubectl("delete", "pod,service,secret", receiver, "--wait=false")
    eventually(
        "the alerts worker removed with its rules",
        lambda: not pipeline.json("deploy", "-l", "app.kubernetes.io/component=alerts")["items"],
        timeout_s=180,
    )


def test_6_with_executors_spark_creates_executor_pods(pipeline: Deployment) -> None:
    # Small requests: the refine driver starts one executor on a 2-core node.
    executors = {"instances": 1, "memory": "1g", "cpu": "100m"}
    patch = {"spec": {"processing": {"refine": {"executors": executors}}}}
    pipeline.kubectl("patch", "cpl", PIPELINE, "--type=merge", "-p", json.dumps(patch))
    try:

        def executors_running() -> list[str]:
            pods = pipeline.json("pods", "-l", "spark-role=executor")["items"]
            return [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]

        running = eventually("executor pods Running", executors_running, timeout_s=900)
        assert any(name.startswith(f"{PIPELINE}-") for name in running), running
    finally:
        back = {"spec": {"processing": {"refine": {"executors": {"instances": 0}}}}}
        pipeline.kubectl("patch", "cpl", PIPELINE, "--type=merge", "-p", json.dumps(back))
    pipeline.wait_ready()


def test_7_suspend_keeps_the_broker_and_the_data(pipeline: Deployment) -> None:
    before = len(ground_truth(pipeline))
    pipeline.kubectl("patch", "cpl", PIPELINE, "--type=merge", "-p", '{"spec":{"suspend":true}}')

    def workloads_gone() -> bool:
        pods = pipeline.json("pods", "-l", f"app.kubernetes.io/instance={PIPELINE}")["items"]
        running = {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods}
        return not running & set(WORKLOADS) and {"broker", "storage"} <= running

    started = time.monotonic()
    eventually("suspended: workloads gone, broker and storage kept", workloads_gone, 300)
    log.info("suspended in %.0f s", time.monotonic() - started)
    assert pipeline.json("pvc", "-l", f"app.kubernetes.io/instance={PIPELINE}")["items"]
    pipeline.kubectl("patch", "cpl", PIPELINE, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    pipeline.wait_ready()
    log.info("Ready again %.0f s after the suspend", time.monotonic() - started)
    assert len(ground_truth(pipeline)) >= before
    resumed_at = int(time.time() // 60)
    eventually(
        "trades after the resume reach Gold",
        lambda: (
            assert_gold_equals_ground_truth(pipeline)
            # A trade of the minute after the resume: the resume's own minute is complete.
            and max(t["event_time"] for t in ground_truth(pipeline)) // 60_000_000 > resumed_at
        ),
        # Three JVMs restarting at once on 2 cores: this step took 13 min in one CI run.
        timeout_s=1500,
        every_s=20,
    )
    log.info("trades after the resume in Gold %.0f s after the suspend", time.monotonic() - started)


def test_8_deleting_the_pipeline_removes_its_children_and_keeps_the_volumes(
    pipeline: Deployment,
) -> None:
    selector = f"app.kubernetes.io/instance={PIPELINE}"
    pipeline.kubectl("delete", "cpl", PIPELINE, "--wait", "--timeout=300s")
    eventually(
        "children gone",
        lambda: not pipeline.kubectl(
            "get", "deployments,statefulsets,services,configmaps,cronjobs", "-l", selector,
            "-o", "name",
        ).split(),
        timeout_s=120,
    )  # fmt: skip
    # retainPolicy Retain (the default): the broker's and MinIO's volumes stay.
    claims = pipeline.json("pvc", "-l", selector)["items"]
    assert {c["metadata"]["name"] for c in claims} == {
        f"data-{PIPELINE}-broker-0",
        f"data-{PIPELINE}-minio-0",
    }
    pipeline.kubectl("delete", "pvc", "-l", selector, "--wait", "--timeout=120s")


def test_the_local_cluster_keeps_traffic_inside(cluster: Any) -> None:
    """The node's namespace has no default route: pods cannot reach beyond this machine."""
    if cluster.server != f"https://{LOCAL_NODE_IP}:6443":
        pytest.skip("not the local cluster")
    routes = subprocess.run(
        ["ip", "netns", "exec", "cryptolake", "ip", "route", "show", "default"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert routes.strip() == ""
    assert Path("/var/run/netns/cryptolake").exists()
