"""The jobs' settings: ``CRYPTOLAKE_*`` environment variables (same names in local mode and in a
Spark-on-Kubernetes driver pod). Built in ``main()``, never at import time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from cryptolake.common.settings import KafkaTopicsSettings

_DURATION = re.compile(r"\s*(\d+)\s*(second|minute|hour|day)s?\s*")
_UNIT_US = {"second": 1_000_000, "minute": 60_000_000, "hour": 3_600_000_000,
            "day": 86_400_000_000}  # fmt: skip


def duration_us(text: str) -> int:
    """``"2 minutes"`` → microseconds (Spark's interval words: second, minute, hour, day)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"duration {text!r}: write e.g. '30 seconds', '2 minutes', '1 hour'")
    return int(match[1]) * _UNIT_US[match[2]]


class JobSettings(KafkaTopicsSettings):
    """Env: CRYPTOLAKE_TABLE_ROOT, CRYPTOLAKE_CHECKPOINT_ROOT, CRYPTOLAKE_S3_ENDPOINT…"""

    table_root: str = ".local/lakehouse"
    """Where the Delta tables live: a local folder or s3a://bucket/prefix."""
    checkpoint_root: str | None = None
    """Streaming checkpoints; default: <table_root>/_checkpoints."""
    s3_endpoint: str | None = None
    """S3/MinIO for s3a:// roots (path-style addressing)."""
    s3_access_key: str | None = None
    """S3 access key of an s3a:// root."""
    s3_secret_key: str | None = None
    """S3 secret key of an s3a:// root."""
    s3_truststore: Path | None = None
    """A Java PKCS#12 trust store (password common.s3.TRUSTSTORE_PASSWORD) for an S3 endpoint
    whose certificate a private CA signed (the operator's TLS MinIO); the JVMs' default trust
    otherwise. Its path must be the same in the driver and the executors."""

    spark_master: str = "local[2]"
    """Spark master URL: local[N], or k8s://… (the operator sets it)."""
    spark_jars_dir: Path | None = None
    """Jars added to pyspark's (Delta, Kafka source, S3A); default: the cache `make setup` fills."""
    shuffle_partitions: int = Field(default=4, ge=1)
    """spark.sql.shuffle.partitions."""
    driver_memory: str = "2g"
    """Spark driver memory (local mode: the whole application's heap)."""

    starting_offsets: Literal["earliest", "latest"] = "earliest"
    """Where a query without a checkpoint starts reading Kafka."""
    adopt_topic_id: str | None = None
    """The id of a recreated trades topic to read from its first offset (topic.py); the streams
    refuse a recreated topic until told so."""
    max_offsets_per_trigger: int | None = Field(default=None, ge=1)
    """At most this many Kafka records per micro-batch; unset: all available."""
    bronze_trigger: str = "10 seconds"
    """The bronze archive is off the live path: fewer, larger batches leave the cores to refine."""
    refine_trigger: str = "1 second"
    """Refine: Kafka → silver, quarantine and the candles, one micro-batch this often."""
    gold_derived_interval: str = "30 seconds"
    """The SMA and hour/day tables are refreshed from the candles at most this often."""
    silver_watermark: str = "10 minutes"
    """Duplicates are dropped within this horizon of broker time."""
    gold_watermark: str = "2 minutes"
    """Trades older than their market's newest trade minus this go to quarantine as `late`."""
    max_future_skew_s: int = Field(default=300, ge=0)
    """Validation: how far ahead of the broker's append time a trade's event time may be."""

    maintenance_interval: str = "1 day"
    """Each query OPTIMIZEs and VACUUMs its own tables this often, between two batches."""
    vacuum_retention_hours: int = Field(default=168, ge=0)
    """Maintenance: VACUUM keeps files younger than this; OPTIMIZE compacts small files."""
    metrics_port: int = Field(default=9401, ge=0, le=65535)
    """/metrics of the jobs; 0: not served."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """The jobs' log level (Spark's own: WARN)."""

    @field_validator(
        "bronze_trigger",
        "refine_trigger",
        "gold_derived_interval",
        "maintenance_interval",
        "silver_watermark",
        "gold_watermark",
    )
    @classmethod
    def _durations(cls, value: str) -> str:
        duration_us(value)  # raises with the expected form
        return value

    @field_validator("table_root", "checkpoint_root")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def checkpoints(self) -> str:
        return self.checkpoint_root or f"{self.table_root}/_checkpoints"

    def table_path(self, table: str) -> str:
        root = self.table_root
        if "://" not in root:
            root = str(Path(root).resolve())
        return f"{root}/{table}"

    def checkpoint_path(self, query: str) -> str:
        root = self.checkpoints
        if "://" not in root:
            root = str(Path(root).resolve())
        return f"{root}/{query}"
