"""What `make run` starts, and in which order (pure: no process is spawned)."""

from __future__ import annotations

from pathlib import Path

from cryptolake.stack.supervisor import StackSettings, build_services


def test_producer_jobs_then_api_share_one_table_root(tmp_path: Path) -> None:
    settings = StackSettings(state_dir=tmp_path, source="simulator", api_port=8123)
    services = build_services(settings, "127.0.0.1:19092")
    assert [s.name for s in services] == ["producer", "jobs", "api"]
    producer, jobs, api = services
    assert producer.env["CRYPTOLAKE_SOURCE"] == "simulator"
    assert jobs.env["CRYPTOLAKE_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
    assert jobs.env["CRYPTOLAKE_TABLE_ROOT"] == api.env["CRYPTOLAKE_TABLE_ROOT"]
    # The producer checks the jobs' Gold against the exchanges' klines.
    assert producer.env["CRYPTOLAKE_TABLE_ROOT"] == jobs.env["CRYPTOLAKE_TABLE_ROOT"]
    assert float(producer.env["CRYPTOLAKE_RECONCILE_INTERVAL_S"]) > 0
    assert api.env["CRYPTOLAKE_TABLE_ROOT"] == str(tmp_path.resolve() / "lakehouse")
    assert api.argv[-2:] == ["--port", "8123"]


def test_jobs_and_api_can_be_left_out(tmp_path: Path) -> None:
    settings = StackSettings(state_dir=tmp_path, run_jobs=False, run_api=False)
    (producer,) = build_services(settings, "b:1")
    assert producer.name == "producer"
    assert producer.env["CRYPTOLAKE_RECONCILE_INTERVAL_S"] == "0"  # no Gold to check


def test_an_alerts_file_adds_the_alerts_worker_on_the_jobs_tables(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yaml"
    settings = StackSettings(state_dir=tmp_path, alerts_file=rules)
    services = build_services(settings, "b:1")
    assert [s.name for s in services] == ["producer", "jobs", "alerts", "api"]
    _, jobs, alerts, _ = services
    assert alerts.argv[-2:] == ["-m", "cryptolake.alerts"]
    assert alerts.env["CRYPTOLAKE_TABLE_ROOT"] == jobs.env["CRYPTOLAKE_TABLE_ROOT"]
    assert alerts.env["CRYPTOLAKE_ALERTS_FILE"] == str(rules.resolve())
