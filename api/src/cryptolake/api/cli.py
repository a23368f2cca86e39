"""``cryptolake-api``: serve the query API and the dashboard with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn
from pydantic import ValidationError

from cryptolake.api.settings import ApiSettings

EPILOG = """\
environment (CRYPTOLAKE_*; flags win):
  TABLE_ROOT            Delta tables: a folder, s3://bucket/prefix or s3a://… (.local/lakehouse)
  S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY   for s3:// roots (path-style, e.g. MinIO)
  API_KEYS, API_KEYS_FILE                     enable API-key auth (comma list / one a line)
  AUTH_EXEMPT_PATHS     open without a key (/healthz,/readyz,/metrics,/docs,/openapi.json)
  CORS_ORIGINS          allowed browser origins (comma list; none by default)
  REFRESH_INTERVAL_S    Delta log polling period (0.25)   HOT_DAYS  days kept in memory (2)
  MAX_RANGE_DAYS        longest span of 1-minute bars a request may load (100)
  RATE_LIMIT            per client (API key, else address), e.g. 100/second (default); empty: off
  REQUEST_TIMEOUT_S     504 after this long (30)   SSE_MAX_CLIENTS  open streams, then 429 (200)
OpenTelemetry: the standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT turns export on).

open http://HOST:PORT/ for the dashboard, /docs for the OpenAPI docs.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cryptolake-api",
        description="Serve CryptoLake's candles, indicators, stats and trades over HTTP, with a "
        "live dashboard, reading the Delta tables the jobs write (no Spark needed).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--table-root", help="overrides CRYPTOLAKE_TABLE_ROOT")
    parser.add_argument("--host", help="bind address (CRYPTOLAKE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (CRYPTOLAKE_PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="uvicorn worker processes (default 1)")
    args = parser.parse_args(argv)

    # Workers build the app from the environment, so flags travel as CRYPTOLAKE_* variables.
    for name in ("table_root", "host", "port", "workers"):
        value = getattr(args, name)
        if value is not None:
            os.environ[f"CRYPTOLAKE_{name.upper()}"] = str(value)
    try:
        settings = ApiSettings()
        settings.all_api_keys()
    except (ValidationError, ValueError) as error:
        print(f"cryptolake-api: bad configuration: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    print(f"cryptolake-api: dashboard on http://{settings.host}:{settings.port}/", flush=True)
    uvicorn.run(
        "cryptolake.api.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        # Open SSE streams would otherwise hold a shutdown until their clients leave.
        timeout_graceful_shutdown=3,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
