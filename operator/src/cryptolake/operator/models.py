"""The ``CryptoPipeline`` resource, typed: the one source of truth for the CRD's OpenAPI schema
(crd.py generates it, defaults, enums, bounds and CEL rules included) and for the operator's
reading of a spec.

Field names are the CRD's (camelCase). ``x-kubernetes-validations`` (CEL) rules sit on the
models they constrain, so the API server rejects a bad resource with the rule's message.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from cryptolake.common.alert_rules import (
    DURATION_PATTERN,
    MARKET_PATTERN,
    RULE_NAME_PATTERN,
    AlertKind,
    AlertRule,
    Direction,
    PayloadFormat,
    Webhook,
)
from cryptolake.common.symbols import PERP_SUFFIX

GROUP: Final = "cryptolake.io"
VERSION: Final = "v1alpha1"
KIND: Final = "CryptoPipeline"
PLURAL: Final = "cryptopipelines"
SINGULAR: Final = "cryptopipeline"
SHORT_NAMES: Final = ("cpl",)

QUANTITY: Final = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
SPARK_MEMORY: Final = r"^[0-9]+[kmgt]$"
DURATION: Final = r"^[0-9]+ (second|seconds|minute|minutes|hour|hours)$"
# BASE-QUOTE, or BASE-QUOTE-PERP for a perpetual contract (Binance USD-M futures).
SYMBOL: Final = rf"^[A-Z0-9]{{2,10}}-[A-Z0-9]{{2,10}}({PERP_SUFFIX})?$"
DNS_NAME: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
BUCKET: Final = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
IMAGE: Final = r"^[^\s]+$"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, JsonValue]:
    """One ``x-kubernetes-validations`` entry."""
    entry: dict[str, JsonValue] = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


class CrdModel(BaseModel):
    """Base: snake_case here, camelCase in the CRD; unknown fields refused (the API server
    prunes them before the operator sees a resource)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


SecretName = Annotated[str, Field(pattern=DNS_NAME, max_length=253)]


class Source(CrdModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.rate) || self.exchange == 'simulator'",
                    "rate applies only to the simulator source",
                    ".rate",
                ),
                cel(
                    f"self.exchange == 'binance' || "
                    f"self.symbols.all(s, !s.endsWith('{PERP_SUFFIX}'))",
                    f"{PERP_SUFFIX} symbols (perpetual contracts) stream from exchange binance "
                    "only (USD-M futures)",
                    ".symbols",
                ),
            ]
        }
    )

    exchange: Literal["binance", "kraken", "coinbase", "simulator"] = Field(
        description="Exchange to stream trades from; simulator generates them (offline)."
    )
    symbols: list[Annotated[str, Field(pattern=SYMBOL, max_length=26)]] = Field(
        min_length=1,
        max_length=50,
        description="Canonical BASE-QUOTE symbols, e.g. BTC-USDT; on binance also perpetual "
        "contracts, BASE-QUOTE-PERP (USD-M futures), e.g. BTC-USDT-PERP.",
    )
    rate: int | None = Field(
        default=None, ge=1, le=100_000, description="Simulator only: trades per second."
    )


class Resources(CrdModel):
    cpu: str = Field(default="500m", pattern=r"^[0-9]+(\.[0-9]+)?m?$", description="CPU request.")
    memory: str = Field(default="1Gi", pattern=QUANTITY, description="Memory request and limit.")


# What cannot change on a live pipeline, and what to do instead (CEL transition rules: the
# API server checks them on update only).
RECREATE: Final = (
    "delete and re-create the pipeline to change it (retainPolicy Retain keeps the data)"
)


class Volume(CrdModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self == oldSelf",
                    "volumes are fixed once created (StatefulSet claims): " + RECREATE,
                ),
            ]
        }
    )

    size: str = Field(default="10Gi", pattern=QUANTITY, description="PersistentVolumeClaim size.")
    storage_class_name: str | None = Field(
        default=None, max_length=253, description="Storage class; the cluster default if unset."
    )


class Topic(CrdModel):
    partitions: int = Field(default=3, ge=1, le=256, description="Partitions of each topic.")
    replication_factor: int = Field(default=1, ge=1, le=9, description="Replicas of each topic.")
    retention_hours: int = Field(
        default=168, ge=1, le=87_600, description="How long the broker keeps trades."
    )
    adopt_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{22}$",
        description=(
            "The id of a trades topic that was deleted and created again: the Spark jobs stop "
            "on a recreated topic (their offsets belong to the old one) and name its id; set "
            "it here to read the new topic from its first offset."
        ),
    )


class Broker(CrdModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.engine != 'external' || has(self.bootstrapServers)",
                    "an external broker needs bootstrapServers (host:port,…)",
                    ".bootstrapServers",
                ),
                cel(
                    "self.engine == 'external' || self.replicas >= self.topic.replicationFactor",
                    "broker replicas must be at least topic.replicationFactor",
                    ".replicas",
                ),
                cel("self.engine == oldSelf.engine", "broker.engine: " + RECREATE, ".engine"),
                cel("self.tls == oldSelf.tls", "broker.tls: " + RECREATE, ".tls"),
                cel(
                    "self.engine == 'kafka' || !self.tls",
                    "broker.tls: TLS is built for engine kafka only so far; set tls: false to "
                    "run redpanda or an external broker in plaintext",
                    ".tls",
                ),
            ]
        }
    )

    engine: Literal["redpanda", "kafka", "external"] = Field(
        default="kafka",
        description="redpanda or kafka (Apache Kafka, KRaft) run by the operator; external: "
        "an existing Kafka-API cluster.",
    )
    image: str | None = Field(
        default=None, pattern=IMAGE, description="Broker image; the engine's default if unset."
    )
    replicas: int = Field(default=1, ge=1, le=9, description="Broker pods.")
    storage: Volume = Field(default_factory=Volume, description="Per-broker volume.")
    resources: Resources = Field(default_factory=Resources)
    topic: Topic = Field(default_factory=Topic)
    bootstrap_servers: str | None = Field(
        default=None,
        pattern=r"^[^\s,]+:[0-9]+(,[^\s,]+:[0-9]+)*$",
        description="external only: host:port list.",
    )
    tls: bool = Field(
        default=True,
        description=(
            "engine kafka: clients connect with TLS (a certificate of the pipeline's CA, kept "
            "in the Secret <name>-ca) and SCRAM-SHA-512, one user per client (passwords in "
            "<name>-kafka-auth), ACLs enforced; false: plaintext. Not yet for redpanda and "
            "external brokers (plaintext)."
        ),
    )


class Storage(CrdModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.engine != 'external' || "
                    "(has(self.endpoint) && has(self.credentialsSecret))",
                    "external storage needs endpoint and credentialsSecret",
                    ".endpoint",
                ),
                cel(
                    "self.engine != 'external' || self.retainPolicy != 'Delete' "
                    "|| has(self.prefix)",
                    "retainPolicy Delete on external storage needs prefix: only the objects "
                    "under it are deleted, never the whole bucket",
                    ".prefix",
                ),
                cel("self.engine == oldSelf.engine", "storage.engine: " + RECREATE, ".engine"),
                cel("self.bucket == oldSelf.bucket", "storage.bucket: " + RECREATE, ".bucket"),
                cel("self.tls == oldSelf.tls", "storage.tls: " + RECREATE, ".tls"),
                cel(
                    "has(self.prefix) == has(oldSelf.prefix) && "
                    "(!has(self.prefix) || self.prefix == oldSelf.prefix)",
                    "storage.prefix: " + RECREATE,
                    ".prefix",
                ),
            ]
        }
    )

    engine: Literal["minio", "external"] = Field(
        default="minio",
        description="minio: a MinIO the operator runs; external: any S3 endpoint.",
    )
    volume: Volume = Field(default_factory=Volume, description="minio only: its volume.")
    tls: bool = Field(
        default=True,
        description="minio only: MinIO serves HTTPS with a certificate of the pipeline's CA "
        "(Secret <name>-ca), which the jobs and the API trust; false: plain HTTP. External "
        "storage: the endpoint's scheme decides.",
    )
    endpoint: str | None = Field(
        default=None, pattern=r"^https?://[^\s]+$", description="external only: S3 endpoint URL."
    )
    credentials_secret: SecretName | None = Field(
        default=None,
        description="Secret with keys accessKey and secretKey; generated for minio when unset.",
    )
    bucket: str = Field(default="lakehouse", pattern=BUCKET, description="Bucket for the tables.")
    prefix: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$",
        max_length=200,
        description="Key prefix of the pipeline's tables in the bucket (e.g. team/prod), so "
        "pipelines can share one; the bucket's root if unset.",
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(cpu="100m", memory="1Gi"),
        description="minio only: its pod.",
    )
    retain_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description="On delete: Retain keeps volumes and data; Delete removes the volumes "
        "and, on external storage, the objects under prefix.",
    )


class Driver(CrdModel):
    cores: int = Field(default=1, ge=1, le=32, description="Spark driver cores (local[N]).")
    cpu: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?m?$",
        description="CPU request of the driver pod (default: cores); less than the cores lets "
        "small nodes run both applications.",
    )
    memory: str = Field(default="2g", pattern=SPARK_MEMORY, description="Spark memory, e.g. 2g.")


class Executors(CrdModel):
    instances: int = Field(
        default=0, ge=0, le=200, description="0: local mode inside the driver pod."
    )
    cores: int = Field(default=1, ge=1, le=32, description="spark.executor.cores")
    cpu: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?m?$",
        description="CPU request of each executor pod (default: cores).",
    )
    memory: str = Field(default="2g", pattern=SPARK_MEMORY)


class SparkApplication(CrdModel):
    driver: Driver = Field(default_factory=Driver)
    executors: Executors = Field(default_factory=Executors)


class Ingest(SparkApplication):
    trigger: str = Field(
        default="10 seconds", pattern=DURATION,
        description="Micro-batch interval of the bronze archive (off the live path).",
    )  # fmt: skip


class Refine(SparkApplication):
    trigger: str = Field(default="1 second", pattern=DURATION, description="Micro-batch interval.")
    dedup_watermark: str = Field(
        default="10 minutes", pattern=DURATION,
        description="Duplicates (exchange, symbol, trade id) are dropped within this much "
        "broker time.",
    )  # fmt: skip
    lateness: str = Field(
        default="2 minutes", pattern=DURATION,
        description="Trades older than their market's newest trade minus this go to "
        "quarantine as late.",
    )  # fmt: skip
    derived_interval: str = Field(
        default="30 seconds", pattern=DURATION,
        description="How often sma_5m, stats_hourly and stats_daily follow the candles.",
    )  # fmt: skip


# The Spark applications of a pipeline (each a driver Deployment named after it) → the jobs
# command its driver runs.
SPARK_APPLICATIONS: Final = {"ingest": "bronze", "refine": "refine"}


class Processing(CrdModel):
    image: str | None = Field(default=None, pattern=IMAGE, description="Spark jobs image.")
    ingest: Ingest = Field(
        default_factory=Ingest, description="Kafka → bronze/trades: the archive."
    )
    refine: Refine = Field(
        default_factory=Refine,
        description="Kafka → silver/trades, silver/quarantine and the gold tables.",
    )


class Producer(CrdModel):
    resources: Resources = Field(default_factory=lambda: Resources(cpu="100m", memory="512Mi"))
    kline_check_interval_seconds: int = Field(
        default=60, ge=0, le=86400,
        description="Seconds between two rounds in which the producer checks Gold's closed "
        "candles against the exchanges' 1-minute klines (table gold/kline_checks); 0: off.",
    )  # fmt: skip


class Api(CrdModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.serviceType == 'ClusterIP' || has(self.authSecret)",
                    "an API exposed beyond the cluster (NodePort, LoadBalancer) needs "
                    "authSecret: a Secret whose key `keys` holds the API keys, one a line",
                    ".authSecret",
                ),
            ]
        }
    )

    replicas: int = Field(default=1, ge=0, le=20)
    image: str | None = Field(default=None, pattern=IMAGE)
    auth_secret: SecretName | None = Field(
        default=None, description="Secret whose key `keys` holds API keys, one a line."
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    resources: Resources = Field(default_factory=lambda: Resources(cpu="100m", memory="1Gi"))


class Telemetry(CrdModel):
    otlp_endpoint: str | None = Field(
        default=None, pattern=r"^https?://[^\s]+$", description="OTLP/HTTP collector URL."
    )
    service_name_prefix: str = Field(default="cryptolake", pattern=DNS_NAME, max_length=40)


class SecretKey(CrdModel):
    name: SecretName
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)


class AlertWebhook(CrdModel):
    format: PayloadFormat = PayloadFormat.JSON
    secret_ref: SecretKey = Field(
        description="The key of a Secret that holds the webhook's URL (a Discord or Slack "
        "webhook URL lets anyone post: keep it in a Secret)."
    )


class Alert(CrdModel):
    """One alert rule (cryptolake.common.alert_rules: its meaning and limits)."""

    name: str = Field(pattern=RULE_NAME_PATTERN, max_length=63)
    markets: list[Annotated[str, Field(pattern=MARKET_PATTERN, max_length=64)]] = Field(
        default_factory=list, max_length=50,
        description="exchange:SYMBOL or SYMBOL (every exchange); empty: every market.",
    )  # fmt: skip
    kind: AlertKind = Field(
        description="volatility: (high - low) / low over the window, percent; price_change: "
        "the close against the close `window` before, percent; price_cross: the close crosses "
        "`threshold` (a price) between consecutive bars."
    )
    window: str = Field(default="1m", pattern=DURATION_PATTERN, description="1m … 1h.")
    threshold: str = Field(
        pattern=r"^[0-9]{1,26}(\.[0-9]{1,12})?$",
        description="Percent, or a price for price_cross (a decimal string, exact).",
    )
    direction: Direction = Direction.BOTH
    cooldown: str = Field(
        default="5m", pattern=DURATION_PATTERN,
        description="No other firing of the rule for the market this close.",
    )  # fmt: skip
    webhook: AlertWebhook

    @model_validator(mode="after")
    def _a_rule_the_worker_accepts(self) -> Alert:
        try:
            self.rule("CRYPTOLAKE_ALERT_WEBHOOK")
        except ValidationError as error:
            problem = error.errors()[0]
            where = "".join(f"{part}: " for part in problem["loc"])
            message = str(problem["msg"]).removeprefix("Value error, ")
            raise ValueError(f"alert {self.name}: {where}{message}") from None
        return self

    def rule(self, url_env: str) -> AlertRule:
        """The rule as the alerts worker reads it, its webhook URL in ``url_env``."""
        return AlertRule.model_validate({
            "name": self.name, "markets": tuple(self.markets), "kind": self.kind,
            "window": self.window, "threshold": Decimal(self.threshold),
            "direction": self.direction, "cooldown": self.cooldown,
            "webhook": Webhook(format=self.webhook.format, url_env=url_env),
        })  # fmt: skip


class CryptoPipelineSpec(CrdModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.sources.all(s, self.sources.exists_one(t, t.exchange == s.exchange))",
                    "each exchange may appear in only one source",
                    ".sources",
                ),
                cel(
                    "!has(self.alerts) || "
                    "self.alerts.all(a, self.alerts.exists_one(b, b.name == a.name))",
                    "alert names must be unique",
                    ".alerts",
                ),
            ]
        }
    )

    sources: list[Source] = Field(min_length=1, max_length=4)
    broker: Broker = Field(default_factory=Broker)
    storage: Storage = Field(default_factory=Storage)
    producer: Producer = Field(default_factory=Producer)
    processing: Processing = Field(default_factory=Processing)
    api: Api = Field(default_factory=Api)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    alerts: list[Alert] = Field(
        default_factory=list, max_length=50,
        description="Alert rules over the Gold candles; set, an alerts worker runs.",
    )  # fmt: skip
    suspend: bool = Field(
        default=False, description="Scale producer, jobs and API to zero; keep broker and storage."
    )
    restart_nonce: str | None = Field(
        default=None, max_length=63, description="Change it to roll every workload."
    )


PHASES: Final = ("Pending", "Provisioning", "Running", "Degraded", "Suspended", "Failed")
CONDITION_TYPES: Final = (
    "Ready", "BrokerReady", "StorageReady", "IngestionReady", "ProcessingReady", "ApiReady",
)  # fmt: skip


def spec_error(error: ValidationError) -> tuple[str, str]:
    """The first problem of a spec that does not validate: (``spec.field.path``, message)."""
    first = error.errors()[0]
    return ".".join(["spec", *(str(part) for part in first["loc"])]), first["msg"]
