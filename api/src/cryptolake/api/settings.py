"""The API's settings: ``CRYPTOLAKE_*`` environment variables (one object, read in ``main()``).

OpenTelemetry is configured by the standard ``OTEL_*`` variables only (see observability.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from limits import parse
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from cryptolake.common.settings import LakeSettings

# api/web/node_modules next to this package in a source checkout (npm ci at `make setup`).
_DEFAULT_VENDOR_DIR = Path(__file__).resolve().parents[3] / "web" / "node_modules"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class ApiSettings(LakeSettings):
    """Env: CRYPTOLAKE_TABLE_ROOT, CRYPTOLAKE_S3_ENDPOINT, CRYPTOLAKE_API_KEYS…"""

    host: str = "127.0.0.1"
    """Bind address."""
    port: int = Field(default=8000, ge=0, le=65535)
    """Port."""
    workers: int = Field(default=1, ge=1, le=64)
    """uvicorn worker processes for `cryptolake-api` (each keeps its own hot cache)."""

    refresh_interval_s: float = Field(default=0.25, gt=0, le=60)
    """How often each table's Delta log is checked for a new version."""
    hot_days: int = Field(default=2, ge=1, le=31)
    """Candles, SMA and hourly stats of the last N days stay in memory; older reads are pruned."""
    trades_bootstrap_files: int = Field(default=64, ge=1)
    """Silver files read at startup to fill the latest-trades cache (newest first)."""
    max_range_days: int = Field(default=100, ge=1)
    """Longest span of 1-minute bars one request may load (bounds history reads)."""

    response_cache_mib: int = Field(default=256, ge=0)
    """Rendered responses kept in memory (raw + gzip), valid until a table changes."""

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """API keys: comma-separated, and/or a file with one key a line (a mounted Secret)."""
    api_keys_file: Path | None = None
    """A file of API keys, one a line (a mounted Secret)."""
    auth_exempt_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"]
    )
    """Endpoints served without a key when keys are set (the dashboard page is always public; the
    data it loads needs the key)."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Browser origins allowed to call the API (comma list); none by default."""

    vendor_dir: Path = _DEFAULT_VENDOR_DIR
    """lightweight-charts for the dashboard: <vendor_dir>/lightweight-charts/dist/."""
    sse_keepalive_s: float = Field(default=15.0, gt=0)
    """Seconds between SSE keepalive comments."""
    sse_max_clients: int = Field(default=200, ge=1)
    """Open SSE streams beyond which a new one gets 429 (each holds a queue and a socket)."""
    rate_limit: str = "100/second"
    """Requests per client (its API key, else its address) in `limits` notation, e.g.
    `100/second` or `5000/minute`; empty: no limit. Probes and /metrics are never limited."""
    request_timeout_s: float = Field(default=30.0, gt=0)
    """A request unanswered after this long gets 504 (streams excepted)."""
    refresh_stale_s: float = Field(default=60.0, gt=0)
    """/readyz fails when the tables have not been read successfully for this long."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""

    @field_validator("api_keys", "auth_exempt_paths", "cors_origins", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("rate_limit")
    @classmethod
    def _limit_parses(cls, value: str) -> str:
        if value.strip():
            try:
                parse(value)
            except ValueError as error:
                raise ValueError(
                    f"{value!r} is no rate limit: write e.g. 100/second or 5000/minute"
                ) from error
        return value.strip()

    def all_api_keys(self) -> list[bytes]:
        """Keys from CRYPTOLAKE_API_KEYS and the key file; empty means auth is off."""
        keys = [key.get_secret_value() for key in self.api_keys]
        if self.api_keys_file is not None:
            try:
                text = self.api_keys_file.read_text(encoding="utf-8")
            except OSError as error:
                raise ValueError(
                    f"CRYPTOLAKE_API_KEYS_FILE={self.api_keys_file}: cannot read it ({error})"
                ) from error
            from_file = [line.strip() for line in text.splitlines() if line.strip()]
            if not from_file:
                raise ValueError(
                    f"CRYPTOLAKE_API_KEYS_FILE={self.api_keys_file} holds no key, which would "
                    "turn auth off: put one key a line in it, or unset the variable"
                )
            keys += from_file
        return [key.encode() for key in keys]
