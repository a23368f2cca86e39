"""Settings helpers shared by the services: one pydantic-settings object per service.

Every service reads ``CRYPTOLAKE_*`` environment variables; names shared across services
(``CRYPTOLAKE_BOOTSTRAP_SERVERS``, ``CRYPTOLAKE_TRADES_TOPIC``…) mean the same thing everywhere.
Nothing is read at import time: call ``Settings()`` in ``main()``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cryptolake.common.market_snapshot import MARKETS_TOPIC
from cryptolake.common.s3 import REGION
from cryptolake.common.trade import DLQ_TOPIC, TRADES_TOPIC

ENV_PREFIX = "CRYPTOLAKE_"


class ServiceSettings(BaseSettings):
    """Base for each service's settings: env prefix ``CRYPTOLAKE_``, unknown keys ignored."""

    # A docstring under a field is its description (--help, docs/configuration.md).
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", use_attribute_docstrings=True
    )


class KafkaTopicsSettings(ServiceSettings):
    """The broker address, how clients authenticate to it, and topic names: shared by the
    producer and the jobs. ``librdkafka_config`` and ``java_kafka_config`` (kafka_client.py)
    turn it into each client library's properties."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Kafka brokers, host:port[,host:port…]."""
    trades_topic: str = TRADES_TOPIC
    """The normalized trades (trade v1)."""
    dlq_topic: str = DLQ_TOPIC
    """What the producer could not normalize: the raw frame and why."""
    markets_topic: str = MARKETS_TOPIC
    """Coin market snapshots (market snapshot v1)."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """PLAINTEXT on loopback (the local stack); SASL_SSL with SCRAM in a cluster."""
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    """The SCRAM (or PLAIN) mechanism of a SASL_* protocol."""
    kafka_username: str | None = None
    """The Kafka login (SASL_*)."""
    kafka_password: SecretStr | None = None
    """The Kafka login's password (SASL_*)."""
    kafka_ca_file: Path | None = None
    """PEM file of the CA that signed the broker's certificate (default: the system's CAs)."""
    authorization_wait_s: float = Field(default=120.0, ge=0)
    """At startup, how long a login the broker does not authorize yet waits for its ACLs (the
    operator grants them once the broker answers) before the client gives up."""
    broker_wait_s: float = Field(default=180.0, ge=0)
    """At startup, how long a client waits for a broker that does not answer yet (a fresh
    pipeline starts its broker and its clients together) before the client gives up."""

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaTopicsSettings:
        if self.kafka_security_protocol.startswith("SASL_"):
            if not self.kafka_username or self.kafka_password is None:
                raise ValueError(
                    f"CRYPTOLAKE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    "CRYPTOLAKE_KAFKA_USERNAME and CRYPTOLAKE_KAFKA_PASSWORD"
                )
            quoted = self.kafka_username + self.kafka_password.get_secret_value()
            if '"' in quoted or "\\" in quoted:
                raise ValueError("a Kafka username or password with a double quote or a backslash")
        return self


def cache_root() -> Path:
    """Where version-keyed downloads and builds live (``CRYPTOLAKE_CACHE``)."""
    return Path(os.environ.get("CRYPTOLAKE_CACHE", Path.home() / ".cache" / "cryptolake"))


class LakeSettings(ServiceSettings):
    """Where the Delta tables are and how delta-rs reaches them: shared by the services that
    read or write them without Spark (the API, the producer's kline checks)."""

    table_root: str = ".local/lakehouse"
    """Where the jobs write the Delta tables: a local folder, s3://bucket/prefix or s3a://…."""
    s3_endpoint: str | None = None
    """S3 endpoint URL of an s3:// root (path-style, e.g. MinIO)."""
    s3_access_key: str | None = None
    """S3 access key of an s3:// root."""
    s3_secret_key: SecretStr | None = None
    """S3 secret key of an s3:// root."""
    s3_ca_file: Path | None = None
    """PEM of a private CA that signed the S3 endpoint's certificate (the operator's TLS
    MinIO), trusted besides the public CAs (``s3.trust_ca_file``)."""

    @field_validator("table_root")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def table_uri(self, table: str) -> str:
        """The table's URI for delta-rs: s3a:// (Spark's scheme) is read as s3://."""
        root = self.table_root
        if root.startswith("s3a://"):
            root = "s3://" + root.removeprefix("s3a://")
        elif "://" not in root:
            root = str(Path(root).resolve())
        return f"{root}/{table}"

    def storage_options(self) -> dict[str, str]:
        """delta-rs object-store options: path-style S3 at the endpoint, bounded retries so an
        unreachable store fails a refresh in seconds rather than minutes."""
        if "://" not in self.table_root or self.table_root.startswith("file://"):
            return {}
        options = {
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
            "timeout": "10s",
            "connect_timeout": "2s",
            "max_retries": "1",
            "retry_timeout": "3s",
        }
        if self.s3_endpoint:
            options["AWS_ENDPOINT_URL"] = self.s3_endpoint
        if self.s3_access_key:
            options["AWS_ACCESS_KEY_ID"] = self.s3_access_key
        if self.s3_secret_key:
            options["AWS_SECRET_ACCESS_KEY"] = self.s3_secret_key.get_secret_value()
        return options
