"""The alerts worker's settings (env ``CRYPTOLAKE_*``; flags of ``cryptolake-alerts`` win)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from cryptolake.common.settings import LakeSettings


class AlertsSettings(LakeSettings):
    alerts_file: Path = Path("alerts.yaml")
    """The rules (YAML; see the alerts README). In a cluster the operator mounts them from
    the pipeline's spec.alerts."""
    poll_interval_s: float = Field(default=1.0, gt=0)
    """How often gold/candles_1m's log is looked at; each new version starts an evaluation."""
    max_alert_age_s: float = Field(default=900.0, gt=0)
    """Window ends older than this are not evaluated (no pages for what is long over)."""
    delivery_timeout_s: float = Field(default=5.0, gt=0)
    """Timeout of one POST to a webhook."""
    delivery_attempts: int = Field(default=5, ge=1, le=20)
    """Attempts per firing (timeouts, 429 and 5xx are retried), then it is 'failed'."""
    delivery_backoff_s: float = Field(default=1.0, ge=0)
    """First wait between attempts; doubles each time."""
    delivery_backoff_max_s: float = Field(default=60.0, ge=0)
    """Longest wait between attempts (also caps a 429's Retry-After)."""
    journal_flush_s: float = Field(default=2.0, gt=0)
    """How often delivery outcomes are committed to gold/alerts (one commit for many)."""
    status_interval_s: float = Field(default=60.0, gt=0)
    """Period of the one-line status log."""
    metrics_port: int = Field(default=9500, ge=0, le=65535)
    """Port of /metrics (Prometheus); 0: not served."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
