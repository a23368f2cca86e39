"""Status from observed children: phase and conditions tell the truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptolake.operator.models import CryptoPipelineSpec
from cryptolake.operator.status import Observed, WorkloadState, build_status, failed_status

SPEC = CryptoPipelineSpec.model_validate(
    {"sources": [{"exchange": "simulator", "symbols": ["BTC-USDT"]}]}
)
COMPONENTS = (
    "broker",
    "storage",
    "producer",
    "ingest",
    "refine",
    "api",
)
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def all_ready(**overrides: WorkloadState) -> Observed:
    workloads = {name: WorkloadState(desired=1, ready=1) for name in COMPONENTS}
    workloads.update(overrides)
    return Observed(workloads)


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def test_everything_ready_is_running() -> None:
    status = build_status(SPEC, all_ready(), generation=3, now=NOW)
    assert status["phase"] == "Running"
    assert status["observedGeneration"] == 3
    assert all(c["status"] == "True" for c in status["conditions"])
    assert status["sources"] == "simulator"


def test_an_object_that_exists_but_has_no_ready_pod_is_not_ready() -> None:
    status = build_status(SPEC, all_ready(api=WorkloadState(desired=2, ready=1)), 1, now=NOW)
    api = conditions(status)["ApiReady"]
    assert (api["status"], api["reason"]) == ("False", "Progressing")
    assert "api: 1/2 ready" in api["message"]
    assert status["phase"] == "Provisioning"
    assert conditions(status)["Ready"]["status"] == "False"


def test_a_crash_looping_driver_degrades_processing() -> None:
    looping = WorkloadState(desired=1, ready=0, restarts=7, failing="CrashLoopBackOff: exit 1")
    status = build_status(SPEC, all_ready(**{"refine": looping}), 1, now=NOW)
    processing = conditions(status)["ProcessingReady"]
    assert (processing["status"], processing["reason"]) == ("False", "Failing")
    assert "refine: CrashLoopBackOff" in processing["message"]
    assert "7 restarts" in processing["message"]
    assert status["phase"] == "Degraded"
    assert status["components"]["refine"]["restarts"] == 7


def test_unreachable_broker_is_degraded_with_the_reason() -> None:
    observed = all_ready()
    observed.broker_error = "no answer from lake-broker:9092 in 5 s"
    status = build_status(SPEC, observed, 1, now=NOW)
    broker = conditions(status)["BrokerReady"]
    assert (broker["reason"], broker["message"]) == ("Unreachable", observed.broker_error)
    assert status["phase"] == "Degraded"


def test_suspended() -> None:
    spec = SPEC.model_copy(update={"suspend": True})
    status = build_status(spec, all_ready(), 2, now=NOW)
    assert status["phase"] == "Suspended"
    assert conditions(status)["IngestionReady"]["reason"] == "Suspended"
    assert conditions(status)["BrokerReady"]["status"] == "True"


def test_transition_time_moves_only_when_the_status_changes() -> None:
    first = build_status(SPEC, all_ready(), 1, now=NOW)
    later = NOW + timedelta(minutes=5)
    same = build_status(SPEC, all_ready(), 1, previous=first, now=later)
    assert conditions(same)["Ready"]["lastTransitionTime"] == "2026-11-24T12:00:00Z"
    changed = build_status(SPEC, all_ready(api=WorkloadState(1, 0)), 1, previous=first, now=later)
    assert conditions(changed)["Ready"]["lastTransitionTime"] == "2026-11-24T12:05:00Z"


def test_external_broker_and_storage_count_as_ready() -> None:
    spec = CryptoPipelineSpec.model_validate(
        {
            "sources": [{"exchange": "binance", "symbols": ["BTC-USDT"]}],
            "broker": {"engine": "external", "bootstrapServers": "k:9092"},
            "storage": {"engine": "external", "endpoint": "https://s3", "credentialsSecret": "s"},
        }
    )
    observed = all_ready()
    del observed.workloads["broker"], observed.workloads["storage"]
    status = build_status(spec, observed, 1, now=NOW)
    assert conditions(status)["BrokerReady"]["reason"] == "External"
    assert status["phase"] == "Running"


def test_failed_status_names_the_field() -> None:
    status = failed_status(4, "spec.broker.replicas", "exceeds the 3 nodes available")
    assert status["phase"] == "Failed"
    assert status["conditions"][0]["reason"] == "InvalidSpec"
    assert status["message"].startswith("spec.broker.replicas:")
