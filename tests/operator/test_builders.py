"""The pure builders over spec variants: names, owners, labels, config roll, suspend."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from cryptolake.operator.builders import (
    CONFIG_HASH,
    RESTART_NONCE,
    Pipeline,
    build_ca_secret,
    build_children,
    build_kafka_secret,
    build_minio_secret,
    build_minio_tls_secret,
    kafka_cluster_id,
)
from cryptolake.operator.models import CryptoPipelineSpec
from cryptolake.operator.pki import issue, make_ca

SAMPLES = Path(__file__).resolve().parents[2] / "k8s" / "samples"


def pipeline(sample: str = "minimal", **changes: Any) -> Pipeline:
    spec = yaml.safe_load((SAMPLES / f"{sample}.yaml").read_text())["spec"]
    for path, value in changes.items():
        node = spec
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return Pipeline("lake", "markets", "uid-1234", CryptoPipelineSpec.model_validate(spec))


def by_kind_name(children: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def workloads(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in children if c["kind"] == "Deployment"]


def test_minimal_pipeline_children() -> None:
    children = by_kind_name(build_children(pipeline()))
    assert set(children) - {k for k in children if k[0] == "NetworkPolicy"} == {
        ("ConfigMap", "lake-config"),
        ("Service", "lake-broker-headless"), ("Service", "lake-broker"),
        ("StatefulSet", "lake-broker"), ("PodDisruptionBudget", "lake-broker"),
        ("Service", "lake-minio"), ("StatefulSet", "lake-minio"),
        ("Deployment", "lake-producer"),
        ("ServiceAccount", "lake-spark"),  # no executors: no Role
        ("Deployment", "lake-ingest"), ("Service", "lake-ingest"),
        ("Deployment", "lake-refine"), ("Service", "lake-refine"),
        ("Deployment", "lake-api"), ("Service", "lake-api"),
    }  # fmt: skip


def test_every_child_is_owned_labelled_and_namespaced() -> None:
    for child in build_children(pipeline("production")):
        meta = child["metadata"]
        assert meta["namespace"] == "markets"
        (owner,) = meta["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "CryptoPipeline",
            "lake",
            "uid-1234",
        )
        assert owner["controller"] is True
        assert meta["labels"]["app.kubernetes.io/instance"] == "lake"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "cryptolake-operator"


def test_kafka_kraft_quorum_follows_replicas() -> None:
    children = by_kind_name(build_children(pipeline(broker__replicas=3)))
    broker = children[("StatefulSet", "lake-broker")]
    assert broker["spec"]["replicas"] == 3
    env = env_of(broker["spec"]["template"]["spec"]["containers"][0])
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert voters[2] == "2@lake-broker-2.lake-broker-headless.markets.svc:9093"
    assert env["CLUSTER_ID"] == kafka_cluster_id("uid-1234")
    assert len(env["CLUSTER_ID"]) == 22
    pdb = children[("PodDisruptionBudget", "lake-broker")]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_redpanda_seeds_and_external_storage() -> None:
    children = by_kind_name(build_children(pipeline("production")))
    script = children[("StatefulSet", "lake-broker")]["spec"]["template"]["spec"]["containers"][0]
    assert "rpk redpanda start" in script["command"][2]
    assert "lake-broker-2.lake-broker-headless.markets.svc:33145" in script["command"][2]
    assert ("StatefulSet", "lake-minio") not in children
    config = children[("ConfigMap", "lake-config")]["data"]
    assert config["CRYPTOLAKE_S3_ENDPOINT"] == "https://s3.eu-west-1.amazonaws.com"
    assert config["CRYPTOLAKE_TABLE_ROOT"] == "s3a://cryptolake-prod"
    api = children[("Deployment", "lake-api")]["spec"]["template"]["spec"]
    assert {"name": "api-keys", "secret": {"secretName": "cryptolake-api-keys"}} in api["volumes"]
    assert env_of(api["containers"][0])["CRYPTOLAKE_S3_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "lakehouse-s3", "key": "accessKey"}
    }


def test_external_broker_has_no_broker_children() -> None:
    p = pipeline(broker__engine="external", broker__bootstrapServers="kafka-0.infra:9092")
    children = build_children(p)
    assert not [
        c for c in children if c["metadata"]["labels"]["app.kubernetes.io/component"] == "broker"
    ]
    config = by_kind_name(children)[("ConfigMap", "lake-config")]["data"]
    assert config["CRYPTOLAKE_BOOTSTRAP_SERVERS"] == "kafka-0.infra:9092"


def test_producer_streams_live_sources_or_the_simulator() -> None:
    live = by_kind_name(build_children(pipeline("production")))[("Deployment", "lake-producer")]
    env = env_of(live["spec"]["template"]["spec"]["containers"][0])
    assert env["CRYPTOLAKE_SOURCE"] == "live"
    assert env["CRYPTOLAKE_EXCHANGES"] == "binance,kraken,coinbase"
    assert {"kraken:BTC-USD", "binance:BTC-USDT-PERP"} <= set(env["CRYPTOLAKE_SYMBOLS"].split(","))
    sim = by_kind_name(build_children(pipeline()))[("Deployment", "lake-producer")]
    env = env_of(sim["spec"]["template"]["spec"]["containers"][0])
    assert (env["CRYPTOLAKE_SOURCE"], env["CRYPTOLAKE_SIMULATOR_RATE"]) == ("simulator", "50")


def test_spark_local_mode_without_executors_else_kubernetes_client_mode() -> None:
    local = by_kind_name(build_children(pipeline()))
    ingest = local[("Deployment", "lake-ingest")]["spec"]["template"]["spec"]["containers"][0]
    refine = local[("Deployment", "lake-refine")]
    container = refine["spec"]["template"]["spec"]["containers"][0]
    assert (ingest["args"], container["args"]) == (["bronze"], ["refine"])
    assert env_of(container)["CRYPTOLAKE_SPARK_MASTER"] == "local[1]"
    assert refine["spec"]["strategy"] == {"type": "Recreate"}
    cluster = by_kind_name(build_children(pipeline("production")))
    driver = cluster[("Deployment", "lake-refine")]["spec"]["template"]["spec"]
    env = env_of(driver["containers"][0])
    assert env["CRYPTOLAKE_SPARK_MASTER"] == "k8s://https://kubernetes.default.svc"
    assert "--conf spark.executor.instances=2" in env["PYSPARK_SUBMIT_ARGS"]
    assert "spark.driver.host=lake-refine.markets.svc" in env["PYSPARK_SUBMIT_ARGS"]
    assert driver["serviceAccountName"] == "lake-spark"
    assert cluster[("Service", "lake-refine")]["spec"]["clusterIP"] == "None"
    # Each application has its own resources: the sample gives ingest no executors.
    ingest_env = env_of(
        cluster[("Deployment", "lake-ingest")]["spec"]["template"]["spec"]["containers"][0]
    )
    assert ingest_env["CRYPTOLAKE_SPARK_MASTER"] == "local[1]"


def test_suspend_scales_workloads_to_zero_and_keeps_broker_and_storage() -> None:
    children = build_children(pipeline(suspend=True))
    assert all(d["spec"]["replicas"] == 0 for d in workloads(children))
    kinds = by_kind_name(children)
    assert kinds[("StatefulSet", "lake-broker")]["spec"]["replicas"] == 1
    assert kinds[("StatefulSet", "lake-minio")]["spec"]["replicas"] == 1


def pod_annotations(p: Pipeline) -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]
        for d in workloads(build_children(p))
    }


def test_a_config_change_or_a_nonce_rolls_the_workloads() -> None:
    before = pod_annotations(pipeline())
    changed = pod_annotations(pipeline(processing={"refine": {"trigger": "5 seconds"}}))
    assert all(changed[n][CONFIG_HASH] != before[n][CONFIG_HASH] for n in before)
    assert pod_annotations(pipeline()) == before  # same spec, same manifests
    nonce = pod_annotations(pipeline(restartNonce="2026-11-24"))
    assert all(nonce[n][RESTART_NONCE] == "2026-11-24" for n in before)


def test_an_adopted_topic_id_reaches_the_jobs_and_rolls_them() -> None:
    """The jobs stop on a recreated trades topic until its id is adopted (jobs/topic.py)."""
    plain = by_kind_name(build_children(pipeline()))[("ConfigMap", "lake-config")]
    assert "CRYPTOLAKE_ADOPT_TOPIC_ID" not in plain["data"]
    adopted = pipeline(broker__topic__adoptId="r60kAmcCSjeXn0m0wYgaCQ")
    config = by_kind_name(build_children(adopted))[("ConfigMap", "lake-config")]
    assert config["data"]["CRYPTOLAKE_ADOPT_TOPIC_ID"] == "r60kAmcCSjeXn0m0wYgaCQ"
    rolled = pod_annotations(adopted)
    assert all(rolled[n][CONFIG_HASH] != pod_annotations(pipeline())[n][CONFIG_HASH]
               for n in rolled)  # fmt: skip
    with pytest.raises(ValueError, match="adoptId"):
        pipeline(broker__topic__adoptId="not an id")


def test_generated_credentials_secret() -> None:
    secret = build_minio_secret(pipeline(), "AKIA", "s3cr3t-s3cr3t")
    assert secret["metadata"]["name"] == "lake-s3-credentials"
    assert secret["stringData"] == {"accessKey": "AKIA", "secretKey": "s3cr3t-s3cr3t"}


@pytest.mark.parametrize("sample", ["minimal", "production"])
def test_building_twice_gives_the_same_manifests(sample: str) -> None:
    assert build_children(pipeline(sample)) == build_children(pipeline(sample))


def test_network_policies_deny_by_default_then_allow_who_needs_it() -> None:
    policies = {c["metadata"]["name"]: c["spec"] for c in build_children(pipeline())
                if c["kind"] == "NetworkPolicy"}  # fmt: skip
    deny = policies["lake-default-deny"]
    assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/instance": "lake"}
    assert deny["ingress"] == [] and deny["policyTypes"] == ["Ingress"]

    def sources(name: str, port: int) -> set[str]:
        found = set()
        for rule in policies[name]["ingress"]:
            if port not in {p["port"] for p in rule["ports"]}:
                continue
            for peer in rule.get("from", [{"podSelector": {"matchLabels": {"*": "anyone"}}}]):
                labels = peer["podSelector"]["matchLabels"]
                found.add(labels.get("app.kubernetes.io/component", labels.get("*")))
        return found

    assert sources("lake-broker", 9092) == {"producer", "ingest", "refine", "executor",
                                            "operator", "broker"}  # fmt: skip
    assert sources("lake-broker", 9093) == {"broker"}  # the KRaft controllers
    assert sources("lake-storage", 9000) == {"ingest", "refine", "executor", "api", "operator",
                                             "producer"}  # its kline checks  # fmt: skip
    assert sources("lake-api", 8000) == {"anyone"}
    assert sources("lake-refine", 7078) == {"ingest", "refine", "executor"}


def _env_names(container: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container["env"]]


def test_a_kafka_pipeline_is_tls_and_scram_by_default_with_one_user_per_client() -> None:
    children = by_kind_name(build_children(pipeline()))
    broker = children[("StatefulSet", "lake-broker")]["spec"]["template"]["spec"]
    (container,) = broker["containers"]
    names = _env_names(container)
    assert len(names) == len(set(names))  # server-side apply keys env by name
    env = env_of(container)
    assert env["KAFKA_LISTENERS"] == "SASL_SSL://:9092,CONTROLLER://:9093"
    assert env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert env["KAFKA_SUPER_USERS"] == "User:admin;User:CN=lake-broker,O=CryptoLake"
    assert env["KAFKA_SSL_KEYSTORE_KEY"] == {"secretKeyRef": {"name": "lake-kafka-auth",
                                                              "key": "tls.key"}}  # fmt: skip
    # Kubernetes expands $(VAR) only for variables defined before.
    assert names.index("SCRAM_PASSWORD_ADMIN") < names.index("SCRAM_USERS")
    assert env["SCRAM_USERS"].split() == [
        "admin=$(SCRAM_PASSWORD_ADMIN)", "producer=$(SCRAM_PASSWORD_PRODUCER)",
        "jobs=$(SCRAM_PASSWORD_JOBS)",
    ]  # fmt: skip
    # No password and no CA key in any property file or plain value.
    assert not any("BEGIN" in str(v) for v in env.values())
    users = {}
    for name in ("lake-producer", "lake-ingest", "lake-refine"):
        spec = children[("Deployment", name)]["spec"]["template"]["spec"]
        client = env_of(spec["containers"][0])
        users[name] = client["CRYPTOLAKE_KAFKA_USERNAME"]
        assert client["CRYPTOLAKE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert client["CRYPTOLAKE_KAFKA_PASSWORD"] == {
            "secretKeyRef": {"name": "lake-kafka-auth", "key": users[name]}}  # fmt: skip
        (volume,) = [v for v in spec["volumes"] if v["name"] == "ca"]
        assert volume["secret"]["secretName"] == "lake-ca"
        assert {"key": "ca.crt", "path": "ca.crt"} in volume["secret"]["items"]
        assert "ca.key" not in json.dumps(volume)
    assert users == {"lake-producer": "producer", "lake-ingest": "jobs", "lake-refine": "jobs"}
    api = children[("Deployment", "lake-api")]["spec"]["template"]["spec"]
    assert "CRYPTOLAKE_KAFKA_PASSWORD" not in env_of(api["containers"][0])


def test_executors_mount_the_ca_and_plaintext_brokers_get_no_kafka_auth() -> None:
    executors = pipeline(processing={"refine": {"executors": {"instances": 1}}})
    template = by_kind_name(build_children(executors))[("ConfigMap", "lake-spark-templates")]
    pod = json.loads(template["data"]["executor-pod.yaml"])
    assert {"name": "ca", "mountPath": "/etc/cryptolake/ca", "readOnly": True} in (
        pod["spec"]["containers"][0]["volumeMounts"])  # fmt: skip
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "ca"]
    assert [item["key"] for item in volume["secret"]["items"]] == ["ca.crt", "truststore.p12"]
    for plain in (pipeline(broker__tls=False), pipeline("production")):
        for child in build_children(plain):
            assert "KAFKA_SSL" not in json.dumps(child) and "kafka-auth" not in json.dumps(child)


def test_the_secrets_hold_the_ca_the_certificate_chains_and_one_password_per_user() -> None:
    ca = make_ca("lake CA")
    secret = build_ca_secret(pipeline(), ca)
    assert secret["stringData"] == {"ca.crt": ca.certificate, "ca.key": ca.key}
    store = pkcs12.load_pkcs12(base64.b64decode(secret["data"]["truststore.p12"]), b"changeit")
    (trusted,) = store.additional_certs
    assert trusted.certificate == x509.load_pem_x509_certificate(ca.certificate.encode())
    server = issue(ca, "lake-broker", pipeline().broker_hosts())
    data = build_kafka_secret(pipeline(), server, {"admin": "a", "producer": "p", "jobs": "j"})[
        "stringData"
    ]
    assert set(data) == {"tls.crt", "tls.key", "admin", "producer", "jobs"}  # no CA key
    assert data["tls.crt"].endswith(ca.certificate)  # leaf, then the CA: the chain
    minio = build_minio_tls_secret(pipeline(), issue(ca, "lake-minio", pipeline().minio_hosts()))
    assert minio["type"] == "kubernetes.io/tls"
    assert set(minio["stringData"]) == {"tls.crt", "tls.key"}


def test_minio_is_https_by_default_and_its_clients_trust_the_pipeline_ca() -> None:
    children = by_kind_name(build_children(pipeline()))
    config = children[("ConfigMap", "lake-config")]["data"]
    assert config["CRYPTOLAKE_S3_ENDPOINT"] == "https://lake-minio.markets.svc:9000"
    minio = children[("StatefulSet", "lake-minio")]["spec"]["template"]["spec"]
    (server,) = minio["containers"]
    assert server["args"][-2:] == ["--certs-dir", "/etc/cryptolake/minio-certs"]
    assert server["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    (certs,) = [v for v in minio["volumes"] if v["name"] == "certs"]
    assert certs["secret"] == {
        "secretName": "lake-minio-tls",
        "items": [
            {"key": "tls.crt", "path": "public.crt"},
            {"key": "tls.key", "path": "private.key"},
        ],
    }
    for driver in ("lake-ingest", "lake-refine"):
        spec = children[("Deployment", driver)]["spec"]["template"]["spec"]
        env = env_of(spec["containers"][0])
        assert env["CRYPTOLAKE_S3_TRUSTSTORE"] == "/etc/cryptolake/ca/truststore.p12"
    # delta-rs (the API, the producer's kline checks): the CA as a PEM file, no trust store.
    for component in ("lake-api", "lake-producer"):
        spec = children[("Deployment", component)]["spec"]["template"]["spec"]
        env = env_of(spec["containers"][0])
        assert env["CRYPTOLAKE_S3_CA_FILE"] == "/etc/cryptolake/ca/ca.crt", component
        assert "CRYPTOLAKE_S3_TRUSTSTORE" not in env, component
        (ca,) = [v for v in spec["volumes"] if v["name"] == "ca"]
        assert ca["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


def test_the_producer_checks_klines_every_minute_unless_turned_off() -> None:
    on = by_kind_name(build_children(pipeline()))[("Deployment", "lake-producer")]
    assert env_of(on["spec"]["template"]["spec"]["containers"][0])[
        "CRYPTOLAKE_RECONCILE_INTERVAL_S"] == "60"  # fmt: skip
    off = by_kind_name(
        build_children(pipeline(broker__tls=False, producer__klineCheckIntervalSeconds=0))
    )
    spec = off[("Deployment", "lake-producer")]["spec"]["template"]["spec"]
    env = env_of(spec["containers"][0])
    assert env["CRYPTOLAKE_RECONCILE_INTERVAL_S"] == "0"
    # Without the checks the producer never talks to S3: no CA for it, no way to MinIO.
    assert "CRYPTOLAKE_S3_CA_FILE" not in env
    assert not any(v["name"] == "ca" for v in spec["volumes"])
    (storage,) = off[("NetworkPolicy", "lake-storage")]["spec"]["ingress"]
    assert "producer" not in json.dumps(storage)


def test_plain_http_minio_and_external_storage_get_no_s3_trust() -> None:
    for plain in (pipeline(storage__tls=False, broker__tls=False), pipeline("production")):
        rendered = json.dumps(build_children(plain))
        for word in ("minio-tls", "truststore", "S3_CA_FILE", "lake-ca"):
            assert word not in rendered, word
    plain = by_kind_name(build_children(pipeline(storage__tls=False)))
    endpoint = plain[("ConfigMap", "lake-config")]["data"]["CRYPTOLAKE_S3_ENDPOINT"]
    assert endpoint == "http://lake-minio.markets.svc:9000"


ALERTS = [
    {"name": "spike", "kind": "volatility", "window": "5m", "threshold": "2.5",
     "markets": ["binance:BTC-USDT"],
     "webhook": {"format": "discord", "secretRef": {"name": "hooks", "key": "discord"}}},
    {"name": "level", "kind": "price_cross", "threshold": "100000", "direction": "up",
     "webhook": {"format": "slack", "secretRef": {"name": "hooks", "key": "slack"}}},
]  # fmt: skip


def test_alerts_run_a_worker_on_the_rules_with_each_webhook_from_its_secret() -> None:
    from cryptolake.alerts.rules import parse_rules  # noqa: PLC0415 (the worker's own reader)

    without = by_kind_name(build_children(pipeline()))
    assert ("Deployment", "lake-alerts") not in without
    children = by_kind_name(build_children(pipeline(alerts=ALERTS)))
    rules_file = children[("ConfigMap", "lake-alerts")]["data"]["alerts.yaml"]
    rules = parse_rules(rules_file)  # what the worker will read, validated as it will be
    assert [(r.name, r.window, str(r.threshold), r.webhook.url_env) for r in rules.rules] == [
        ("spike", 5, "2.5", "CRYPTOLAKE_ALERT_WEBHOOK_0"),
        ("level", 1, "100000", "CRYPTOLAKE_ALERT_WEBHOOK_1"),
    ]
    assert rules.rules[0].markets == ("binance:BTC-USDT",)
    worker = children[("Deployment", "lake-alerts")]
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["cryptolake-alerts"]
    assert container["image"] == children[("Deployment", "lake-api")]["spec"]["template"][
        "spec"]["containers"][0]["image"]  # fmt: skip
    env = env_of(container)
    assert env["CRYPTOLAKE_ALERT_WEBHOOK_1"] == {"secretKeyRef": {"name": "hooks", "key": "slack"}}
    assert env["CRYPTOLAKE_ALERTS_FILE"] == "/etc/cryptolake/alerts/alerts.yaml"
    assert {"name": "rules", "configMap": {"name": "lake-alerts"}} in pod["volumes"]
    # New rules roll the worker (it reads them once).
    changed = by_kind_name(build_children(pipeline(alerts=[ALERTS[0]])))
    hash_of = lambda c: c[("Deployment", "lake-alerts")]["spec"]["template"]["metadata"][  # noqa: E731
        "annotations"]["cryptolake.io/alerts-hash"]  # fmt: skip
    assert hash_of(changed) != hash_of(children)
    # The worker may reach MinIO; its metrics port is open.
    storage = children[("NetworkPolicy", "lake-storage")]["spec"]["ingress"][0]["from"]
    assert {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/instance": "lake",
                "app.kubernetes.io/component": "alerts",
            }
        }
    } in storage


def test_an_alert_the_worker_would_refuse_is_refused_in_the_spec() -> None:
    bad = [{**ALERTS[1], "window": "5m"}]
    with pytest.raises(ValueError, match="alert level: price_cross compares consecutive bars"):
        pipeline(alerts=bad)
    with pytest.raises(ValueError, match=r"alert spike: window: .*less than or equal to 60"):
        pipeline(alerts=[{**ALERTS[0], "window": "2h"}])
