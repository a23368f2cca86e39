"""The Grafana dashboards: generated, valid, on datasources the chart provisions, and querying
only metrics that the components really export."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

from cryptolake.stack.helm import CHART_DIR, render

DASHBOARDS_DIR = CHART_DIR / "dashboards"
DASHBOARDS = sorted(DASHBOARDS_DIR.glob("*.json"))
METRIC = re.compile(r"\bcryptolake_[a-z0-9_]+")
# What a family of each type exposes (prometheus_client's text format).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "dashboards_generate", DASHBOARDS_DIR / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels += panel.get("panels", [])  # inside collapsed rows
    return panels


def test_there_are_two_dashboards() -> None:
    assert [path.name for path in DASHBOARDS] == ["markets.json", "pipeline-health.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_committed_dashboards_are_the_generated_ones(path: Path) -> None:
    generator = _generator()
    assert path.read_text() == generator.render(generator.DASHBOARDS[path.name]), (
        f"{path.name} is stale: run `.venv/bin/python {DASHBOARDS_DIR / 'generate.py'}`"
    )


def _provisioned_datasources() -> dict[str, str]:
    """uid → type of the datasources the chart provisions."""
    docs = render(set_values=("datasources.enabled=true",))
    (config_map,) = [d for d in docs if d["metadata"]["name"].endswith("-datasources")]
    (provisioning,) = config_map["data"].values()
    return {ds["uid"]: ds["type"] for ds in yaml.safe_load(provisioning)["datasources"]}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_every_panel_uses_a_provisioned_datasource(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    provisioned = _provisioned_datasources()
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels(dashboard):
        sources = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        for source in sources:
            assert provisioned.get(source["uid"]) == source["type"], (panel["title"], source)
        assert panel["targets"], f"{panel['title']} has no query"
    for variable in dashboard["templating"]["list"]:
        if "datasource" in variable:
            assert variable["datasource"]["uid"] in provisioned


def test_the_chart_ships_each_dashboard_for_the_sidecar() -> None:
    docs = render()
    shipped = {
        key: json.loads(value)
        for doc in docs
        if doc["kind"] == "ConfigMap" and doc["metadata"]["labels"].get("grafana_dashboard") == "1"
        for key, value in doc["data"].items()
    }
    assert shipped == {path.name: json.loads(path.read_text()) for path in DASHBOARDS}


def _exported(registry: CollectorRegistry, prefix: str = "cryptolake_") -> set[str]:
    names = set()
    for family in registry.collect():
        if family.name.startswith(prefix):
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


@pytest.fixture(scope="module")
def exported_metrics(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every metric name the producer, the jobs, the API and the operator export, read from
    their own registries (the API's store collector included)."""
    from cryptolake.alerts.worker import AlertsMetrics  # noqa: PLC0415
    from cryptolake.api.httpcache import ResponseCache  # noqa: PLC0415
    from cryptolake.api.observability import ApiMetrics  # noqa: PLC0415
    from cryptolake.api.settings import ApiSettings  # noqa: PLC0415
    from cryptolake.api.store import LakeStore  # noqa: PLC0415
    from cryptolake.jobs.metrics import JobMetrics  # noqa: PLC0415
    from cryptolake.producer.metrics import ProducerMetrics  # noqa: PLC0415

    importlib.import_module("cryptolake.operator.handlers")  # its metrics are module-level
    store = LakeStore(ApiSettings(table_root=str(tmp_path_factory.mktemp("lake"))))
    registries = [
        ProducerMetrics().registry,
        JobMetrics().registry,
        AlertsMetrics().registry,
        ApiMetrics(store, ResponseCache(1 << 20)).registry,
        REGISTRY,
    ]
    names = set().union(*(_exported(registry) for registry in registries))
    assert any(name.startswith("cryptolake_operator_") for name in names)
    return names


def test_every_queried_metric_is_exported(exported_metrics: set[str]) -> None:
    dashboard = json.loads((DASHBOARDS_DIR / "pipeline-health.json").read_text())
    queried = {
        name
        for panel in _panels(dashboard)
        for target in panel["targets"]
        for name in METRIC.findall(target.get("expr", ""))
    }
    assert len(queried) >= 15, queried
    assert not queried - exported_metrics, f"not exported: {sorted(queried - exported_metrics)}"


def test_every_metric_an_alerting_rule_names_is_exported(exported_metrics: set[str]) -> None:
    rules = (DASHBOARDS_DIR.parent / "rules" / "pipeline-health.yaml").read_text()
    named = set(METRIC.findall(rules))
    assert len(named) >= 7, named
    assert not named - exported_metrics, f"not exported: {sorted(named - exported_metrics)}"


def test_pipeline_health_covers_each_component(exported_metrics: set[str]) -> None:
    text = (DASHBOARDS_DIR / "pipeline-health.json").read_text()
    for component in ("producer", "jobs", "api", "operator"):
        assert f"cryptolake_{component}_" in text, component
