"""The API server itself rejects bad CryptoPipelines (OpenAPI + CEL from the generated CRD),
with a message that says what to fix; good ones get every default."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

MINIMAL_SPEC: dict[str, Any] = {"sources": [{"exchange": "simulator", "symbols": ["BTC-USDT"]}]}


def with_spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(MINIMAL_SPEC)
    spec.update(changes)
    return spec


ALERT: dict[str, Any] = {
    "name": "spike", "kind": "volatility", "threshold": "2.5",
    "webhook": {"format": "discord", "secretRef": {"name": "hooks", "key": "discord"}},
}  # fmt: skip

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no sources", {"sources": []}, "spec.sources"),
    ("unknown exchange", {"sources": [{"exchange": "bitmex", "symbols": ["BTC-USD"]}]},
     'Unsupported value: "bitmex"'),
    ("lower-case symbol", {"sources": [{"exchange": "binance", "symbols": ["btc-usdt"]}]},
     "spec.sources[0].symbols[0]"),
    ("no symbols", {"sources": [{"exchange": "binance", "symbols": []}]}, "symbols"),
    ("a perpetual contract on kraken", {"sources": [{"exchange": "kraken",
                                                      "symbols": ["BTC-USD-PERP"]}]},
     "-PERP symbols (perpetual contracts) stream from exchange binance only"),
    ("a contract suffix other than PERP",
     {"sources": [{"exchange": "binance", "symbols": ["BTC-USDT-QUARTER"]}]},
     "spec.sources[0].symbols[0]"),
    ("rate on a live exchange", {"sources": [{"exchange": "kraken", "symbols": ["BTC-USD"],
                                              "rate": 10}]},
     "rate applies only to the simulator source"),
    ("one exchange twice", {"sources": [{"exchange": "binance", "symbols": ["BTC-USDT"]},
                                        {"exchange": "binance", "symbols": ["ETH-USDT"]}]},
     "each exchange may appear in only one source"),
    ("unknown engine", with_spec(broker={"engine": "pulsar"}), 'Unsupported value: "pulsar"'),
    ("too many brokers", with_spec(broker={"replicas": 12}), "spec.broker.replicas"),
    ("replication above replicas",
     with_spec(broker={"replicas": 1, "topic": {"replicationFactor": 3}}),
     "broker replicas must be at least topic.replicationFactor"),
    ("TLS on redpanda", with_spec(broker={"engine": "redpanda"}),
     "broker.tls: TLS is built for engine kafka only so far"),
    ("external broker without servers", with_spec(broker={"engine": "external", "tls": False}),
     "an external broker needs bootstrapServers"),
    ("zero partitions", with_spec(broker={"topic": {"partitions": 0}}),
     "spec.broker.topic.partitions"),
    ("bad volume size", with_spec(broker={"storage": {"size": "ten gigs"}}),
     "spec.broker.storage.size"),
    ("external storage without endpoint", with_spec(storage={"engine": "external"}),
     "external storage needs endpoint and credentialsSecret"),
    ("bad bucket", with_spec(storage={"bucket": "Lake_House"}), "spec.storage.bucket"),
    ("bad retain policy", with_spec(storage={"retainPolicy": "Archive"}),
     'Unsupported value: "Archive"'),
    ("negative executors", with_spec(processing={"refine": {"executors": {"instances": -1}}}),
     "spec.processing.refine.executors.instances"),
    ("bad trigger", with_spec(processing={"refine": {"trigger": "2s"}}),
     "spec.processing.refine.trigger"),
    ("bad spark memory", with_spec(processing={"ingest": {"driver": {"memory": "2GB"}}}),
     "spec.processing.ingest.driver.memory"),
    ("bad service type", with_spec(api={"serviceType": "Ingress"}), 'Unsupported value: "Ingress"'),
    ("otlp without scheme", with_spec(telemetry={"otlpEndpoint": "collector:4318"}),
     "spec.telemetry.otlpEndpoint"),
    ("suspend not a boolean", with_spec(suspend="yes"), "spec.suspend"),
    ("an exposed API without keys", with_spec(api={"serviceType": "LoadBalancer"}),
     "an API exposed beyond the cluster (NodePort, LoadBalancer) needs authSecret"),
    ("delete on external storage without a prefix",
     with_spec(storage={"engine": "external", "endpoint": "https://s3.example",
                        "credentialsSecret": "s3", "retainPolicy": "Delete"}),
     "retainPolicy Delete on external storage needs prefix"),
    ("an alert of an unknown kind", with_spec(alerts=[dict(ALERT, kind="moon")]),
     'Unsupported value: "moon"'),
    ("an alert threshold that is not a decimal", with_spec(alerts=[dict(ALERT, threshold="2%")]),
     "spec.alerts[0].threshold"),
    ("an alert without a webhook Secret", with_spec(alerts=[{k: v for k, v in ALERT.items()
                                                             if k != "webhook"}]),
     "spec.alerts[0].webhook: Required value"),
    ("two alerts of one name", with_spec(alerts=[ALERT, ALERT]), "alert names must be unique"),
]  # fmt: skip

# Changes a live pipeline cannot take: (what, patch, the message's start).
IMMUTABLE: list[tuple[str, dict[str, Any], str]] = [
    ("broker engine", {"broker": {"engine": "redpanda", "tls": False}},
     "broker.engine: delete and re-create"),
    ("storage TLS", {"storage": {"tls": False}}, "storage.tls: delete and re-create"),
    ("broker volume", {"broker": {"storage": {"size": "20Gi"}}}, "volumes are fixed once created"),
    ("storage volume", {"storage": {"volume": {"storageClassName": "fast"}}},
     "volumes are fixed once created"),
    ("bucket", {"storage": {"bucket": "other"}}, "storage.bucket: delete and re-create"),
    ("prefix", {"storage": {"prefix": "team-a"}}, "storage.prefix: delete and re-create"),
]  # fmt: skip


def resource(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cryptolake.io/v1alpha1",
        "kind": "CryptoPipeline",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.mark.parametrize(("case", "spec", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_api_server_rejects_with_a_message(
    pipelines: Any, case: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as raised:
        pipelines.create(resource("bad", spec))
    assert raised.value.status == 422, raised.value.body
    said = json.loads(raised.value.body)["message"]
    assert message in said, said


@pytest.mark.parametrize("name", ["minimal", "production"])
def test_samples_are_accepted_and_defaulted(
    pipelines: Any, load_sample: Callable[[str], dict[str, Any]], name: str
) -> None:
    created = pipelines.create(load_sample(name))
    spec = created["spec"]
    assert spec["processing"]["refine"]["dedupWatermark"] == "10 minutes"
    assert spec["api"]["serviceType"] in ("ClusterIP", "LoadBalancer")
    assert spec["suspend"] is False


def test_an_empty_spec_section_gets_every_default(pipelines: Any) -> None:
    created = pipelines.create(resource("defaults", MINIMAL_SPEC))
    spec = created["spec"]
    assert spec["broker"]["engine"] == "kafka"
    assert spec["broker"]["topic"] == {
        "partitions": 3,
        "replicationFactor": 1,
        "retentionHours": 168,
    }
    assert spec["storage"]["retainPolicy"] == "Retain"
    assert spec["processing"]["refine"]["executors"]["instances"] == 0
    assert spec["processing"]["ingest"]["trigger"] == "10 seconds"


@pytest.mark.parametrize(("case", "patch", "message"), IMMUTABLE, ids=[c[0] for c in IMMUTABLE])
def test_what_a_live_pipeline_cannot_change_is_refused_with_what_to_do(
    pipelines: Any, case: str, patch: dict[str, Any], message: str
) -> None:
    pipelines.create(resource("live", MINIMAL_SPEC))
    with pytest.raises(ApiException) as raised:
        pipelines.patch("live", {"spec": patch})
    assert raised.value.status == 422, raised.value.body
    said = json.loads(raised.value.body)["message"]
    assert message in said and "retainPolicy Retain keeps the data" in said, said
    # What may change still does.
    pipelines.patch("live", {"spec": {"broker": {"topic": {"retentionHours": 24}}}})
