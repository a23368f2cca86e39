"""Property-based requests from the OpenAPI spec (schemathesis) against the live API over the
sample lake: no input gives a 5xx."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from cryptolake.api.app import create_app
from cryptolake.api.settings import ApiSettings

# The spec does not depend on the data; the live server in each test serves the sample lake.
# The SSE stream never ends, so test_live.py covers it instead.
schema = schemathesis.openapi.from_dict(create_app(ApiSettings()).openapi()).exclude(
    path="/v1/stream/candles"
)


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_request_gets_a_server_error(case: Any, live_api: Any) -> None:
    case.call_and_validate(base_url=live_api.base_url, checks=[not_a_server_error])
