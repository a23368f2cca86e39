"""Every query of the chart's Grafana Markets dashboard (Infinity datasource) is answered by the
API: the path and parameters are accepted, the root selector exists and each column's selector
is a field of the rows, over the sample lake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

MARKETS = Path(__file__).resolve().parents[2] / "charts/cryptolake/dashboards/markets.json"
VARIABLES = {"${symbol}": "BTC-USDT", "${interval}": "5m"}


def _queries() -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(MARKETS.read_text())
    queries = [
        (f"{panel['title']} {target['refId']}", target)
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    queries += [
        (f"variable {v['name']}", v["query"])
        for v in dashboard["templating"]["list"]
        if isinstance(v.get("query"), dict)
    ]
    return queries


QUERIES = _queries()


@pytest.mark.parametrize(("title", "query"), QUERIES, ids=[title for title, _ in QUERIES])
def test_the_api_answers_the_dashboard_query(
    local_client: TestClient, title: str, query: dict[str, Any]
) -> None:
    url = query["url"]
    for variable, value in VARIABLES.items():
        url = url.replace(variable, value)
    assert url.startswith("/v1/"), "relative to the datasource's base URL (the API)"
    response = local_client.get(url)
    assert response.status_code == 200, (title, response.text)
    rows = response.json()[query["root_selector"]]
    assert rows, f"{title}: no rows over the sample lake"
    for column in query["columns"]:
        assert column["selector"] in rows[0], (title, column["selector"], sorted(rows[0]))


def test_the_api_answers_the_alert_annotations(fresh_lake: Any, client_for: Any) -> None:
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415
    from decimal import Decimal  # noqa: PLC0415

    from cryptolake.alerts.evaluate import Firing  # noqa: PLC0415
    from cryptolake.alerts.journal import Journal, firing_row  # noqa: PLC0415
    from cryptolake.common.alert_rules import AlertKind  # noqa: PLC0415

    end = datetime.now(UTC).replace(second=0, microsecond=0)
    firing = Firing("spike", AlertKind.VOLATILITY, "simulator", "BTC-USDT", 5, end,
                    Decimal("2.5"), Decimal("2"))  # fmt: skip
    Journal(fresh_lake.settings).record_firings([firing_row(firing, "json:…", end)])
    client = client_for(fresh_lake.settings)
    dashboard = json.loads(MARKETS.read_text())
    (annotation,) = dashboard["annotations"]["list"]
    query = annotation["target"]
    url = query["url"].replace("${symbol}", "BTC-USDT")
    url = url.replace("${__from}", str(int((end - timedelta(hours=6)).timestamp() * 1000)))
    url = url.replace("${__to}", str(int((end + timedelta(minutes=1)).timestamp() * 1000)))
    response = client.get(url)
    assert response.status_code == 200, response.text
    (row,) = response.json()[query["root_selector"]]
    assert {c["text"] for c in query["columns"]} == {"time", "title", "tags", "text"}
    for column in query["columns"]:
        assert column["selector"] in row
    assert row["window_end_ms"] == int(end.timestamp() * 1000)


def test_every_markets_panel_reads_the_api() -> None:
    assert len(QUERIES) >= 7
