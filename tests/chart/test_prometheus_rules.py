"""The chart's pipeline-health alerting rules: valid for Prometheus (`promtool check rules`),
unit-tested on series that should and should not trip them (`promtool test rules`, promtool
built from the Prometheus Go module by make setup), and shipped as a PrometheusRule only where
the Prometheus Operator's CRDs are served."""

from __future__ import annotations

import subprocess

import yaml

from cryptolake.stack.binaries import installed_binary
from cryptolake.stack.helm import CHART_DIR, render

RULES = CHART_DIR / "rules"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(installed_binary("promtool")), *args], cwd=RULES,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_the_rules_are_valid_prometheus_rules() -> None:
    checked = promtool("check", "rules", "pipeline-health.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout + checked.stderr


def test_each_alert_fires_on_its_symptom_and_not_on_a_healthy_neighbour() -> None:
    tested = promtool("test", "rules", "tests.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {rule["alert"] for group in yaml.safe_load((RULES / "pipeline-health.yaml")
              .read_text())["groups"] for rule in group["rules"]}  # fmt: skip
    tests = yaml.safe_load((RULES / "tests.yaml").read_text())["tests"]
    covered = {case["alertname"] for test in tests for case in test["alert_rule_test"]
               if case["exp_alerts"]}  # fmt: skip
    assert covered == alerts


def test_the_chart_ships_the_rules_file_where_the_prometheus_operator_is() -> None:
    values = CHART_DIR / "ci" / "monitoring-values.yaml"
    assert not [d for d in render(values) if d["kind"] == "PrometheusRule"]
    docs = render(values, api_versions=("monitoring.coreos.com/v1",))
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == yaml.safe_load((RULES / "pipeline-health.yaml").read_text())[
        "groups"]  # fmt: skip
