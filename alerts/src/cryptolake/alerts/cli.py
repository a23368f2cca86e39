"""``cryptolake-alerts``: evaluate the alert rules as Gold changes and deliver the firings.

Every setting is a flag and a ``CRYPTOLAKE_*`` variable (flags win): ``--help`` lists them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from prometheus_client import start_http_server
from pydantic import ValidationError
from pydantic_settings import CliApp, SettingsConfigDict

from cryptolake.alerts.rules import load_rules
from cryptolake.alerts.settings import AlertsSettings
from cryptolake.alerts.worker import AlertsMetrics, AlertsWorker
from cryptolake.common.alert_rules import RulesError
from cryptolake.common.s3 import trust_ca_file


class AlertsCli(AlertsSettings):
    """Watch gold/candles_1m and post an alert to its webhook when a rule fires (volatility,
    price change, price cross); every firing is logged once in gold/alerts. Rules: a YAML
    file (see the alerts README). Each flag is also a variable: --alerts-file is
    CRYPTOLAKE_ALERTS_FILE."""

    model_config = SettingsConfigDict(cli_prog_name="cryptolake-alerts", cli_kebab_case=True)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = CliApp.run(AlertsCli, cli_args=sys.argv[1:] if argv is None else argv)
        rules = load_rules(settings.alerts_file)
    except (ValidationError, RulesError) as error:
        print(f"cryptolake-alerts: bad configuration: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per firing and the status line, not one per HTTP request.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if settings.s3_ca_file is not None:
        trust_ca_file(settings.s3_ca_file)
    metrics = AlertsMetrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics.registry)
    worker = AlertsWorker(settings, rules, metrics)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await worker.run(stop)

    asyncio.run(serve())
    return 0
