"""Settings helpers shared by the services: one pydantic-settings object per service.

Every service reads ``CRYPTOLAKE_*`` environment variables; names shared across services
(``CRYPTOLAKE_BOOTSTRAP_SERVERS``, ``CRYPTOLAKE_TRADES_TOPIC``…) mean the same thing everywhere.
Nothing is read at import time: call ``Settings()`` in ``main()``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from cryptolake.common.trade import DLQ_TOPIC, TRADES_TOPIC

ENV_PREFIX = "CRYPTOLAKE_"


class ServiceSettings(BaseSettings):
    """Base for each service's settings: env prefix ``CRYPTOLAKE_``, unknown keys ignored."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")


class KafkaTopicsSettings(ServiceSettings):
    """The broker address and topic names, shared by the producer and the jobs."""

    bootstrap_servers: str = "127.0.0.1:9092"
    trades_topic: str = TRADES_TOPIC
    dlq_topic: str = DLQ_TOPIC


def cache_root() -> Path:
    """Where version-keyed downloads and builds live (``CRYPTOLAKE_CACHE``)."""
    return Path(os.environ.get("CRYPTOLAKE_CACHE", Path.home() / ".cache" / "cryptolake"))
