"""The lakehouse end to end on real services: simulator → producer → Kafka → Spark jobs →
Delta tables on MinIO. Gold candles are checked against an independent recomputation from the
simulator's ground truth with Python Decimal; a run killed with SIGKILL at random points and
restarted must end with the same tables as a clean run."""

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal

import pytest
from confluent_kafka import Producer as KafkaProducer
from fastapi.testclient import TestClient
from pyspark.sql import functions as F

from cryptolake.api.app import create_app
from cryptolake.api.settings import ApiSettings
from cryptolake.common.candles import reference_bars
from cryptolake.common.s3 import s3a_spark_conf
from cryptolake.jobs.cli import start_streams
from cryptolake.jobs.metrics import JobMetrics, ProgressListener
from cryptolake.jobs.refine import BatchOutcome
from cryptolake.jobs.settings import JobSettings
from cryptolake.producer.app import run_until
from cryptolake.producer.kafka_sink import ensure_topics
from cryptolake.producer.settings import ProducerSettings
from cryptolake.producer.simulator.server import SimulatorConfig, SimulatorServer
from cryptolake.stack.minio import ensure_bucket, s3_client

pytestmark = pytest.mark.integration

TRADES = 2400
_GOOD_RAW = {
    "schema_version": 1, "exchange": "simulator", "symbol": "BTC-USDT", "trade_id": "x1",
    "price": "100.5", "qty": "1", "side": "buy", "event_time": 1_750_000_000_000_000,
    "ingest_time": 1_750_000_000_000_000,
}  # fmt: skip
_FAR_FUTURE_US = int((time.time() + 5 * 3600) * 1e6)  # a forged clock, 5 h ahead of the broker


def _raw(**changes: object) -> bytes:
    return json.dumps({**_GOOD_RAW, **changes}).encode()


# Raw values no producer of ours would write, injected straight into the trades topic: each must
# land in silver/quarantine with this reason, and none may stop a query.
BAD_VALUES = {
    b"{truncated": "malformed_json",
    b'{"schema_version":2,"exchange":"simulator"}': "unknown_schema_version",
    _raw(price="-5"): "bad_price",
    _raw(trade_id="x2", price="abc"): "bad_price",  # once a poison pill: CAST_INVALID_INPUT
    _raw(trade_id="x3", price="1e5"): "bad_price",
    _raw(trade_id="x4", price="9" * 39): "bad_price",
    _raw(trade_id="x5", price="\u0661\u0662"): "bad_price",  # Arabic-Indic digits
    _raw(trade_id="x6", qty="1\u200b"): "bad_qty",  # a zero-width space
    _raw(trade_id="x7", qty="-0"): "bad_qty",
    _raw(trade_id="x8", price=100.5): "bad_type",  # a JSON number would not be exact
    _raw(trade_id="x9", event_time="1750000000000000"): "bad_type",
    _raw(trade_id="x10", side=None): "missing_field",
    _raw(trade_id="x11", symbol=["BTC-USDT"]): "bad_symbol",
    _raw(trade_id="x12", exchange="bitstamp"): "bad_exchange",
    _raw(trade_id="x" * 65): "bad_trade_id",
    _raw(trade_id="x13", event_time=_FAR_FUTURE_US, ingest_time=_FAR_FUTURE_US): "bad_timestamp",
    _raw(trade_id="x14")[:-1] + b',"padding":"' + b"p" * 200_000 + b'"}': "too_large",
    _raw(trade_id="x15").replace(b"BTC", b"\xffTC"): "bad_encoding",
}  # fmt: skip


@dataclass(frozen=True)
class Feed:
    bootstrap_servers: str
    topic: str
    truth: list[dict]  # every trade the simulator sent, duplicates flagged
    bad_values: int


@pytest.fixture(scope="module")
def feed(kafka_broker, tmp_path_factory) -> Feed:
    """2,400 simulated trades (with duplicates and swaps) plus a few bad values in a topic."""
    suffix = uuid.uuid4().hex[:8]
    topic = f"lake.{suffix}.trades"
    truth_path = tmp_path_factory.mktemp("truth") / "truth.jsonl"
    config = SimulatorConfig(
        seed=21, rate_per_s=3000, max_trades=TRADES, symbols=["BTC-USDT", "ETH-USDT"],
        duplicate_every=40, out_of_order_every=30, ground_truth_path=truth_path,
    )  # fmt: skip

    async def scenario() -> None:
        async with SimulatorServer(config) as sim:
            settings = ProducerSettings(
                source="simulator", simulator_url=sim.url("coinbase"),
                simulator_protocol="coinbase", symbols="BTC-USDT,ETH-USDT",
                bootstrap_servers=kafka_broker.bootstrap_servers, trades_topic=topic,
                dlq_topic=f"lake.{suffix}.dlq", metrics_port=0,
            )  # fmt: skip
            ensure_topics(settings)
            _, summary = await run_until(settings, lambda p: p.sink.delivered >= TRADES)
            assert summary.delivered == TRADES

    asyncio.run(scenario())
    raw = KafkaProducer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    for value in BAD_VALUES:
        raw.produce(topic, value, key=b"bad")
    assert raw.flush(30) == 0
    truth = [json.loads(line) for line in truth_path.read_text().splitlines()]
    assert len(truth) == TRADES
    return Feed(kafka_broker.bootstrap_servers, topic, truth, len(BAD_VALUES))


@pytest.fixture(scope="module")
def lake_bucket(minio_server):
    name = f"lake-{uuid.uuid4().hex[:10]}"
    ensure_bucket(minio_server.endpoint, minio_server.access_key, minio_server.secret_key, name)
    return name


def lake_settings(feed: Feed, minio_server, bucket: str, prefix: str, **extra) -> JobSettings:
    return JobSettings(
        bootstrap_servers=feed.bootstrap_servers, trades_topic=feed.topic,
        table_root=f"s3a://{bucket}/{prefix}", s3_endpoint=minio_server.endpoint,
        s3_access_key=minio_server.access_key, s3_secret_key=minio_server.secret_key,
        starting_offsets="earliest", metrics_port=0, **extra,
    )  # fmt: skip


@dataclass(frozen=True)
class CleanRun:
    settings: JobSettings
    metrics: JobMetrics  # what the jobs' Prometheus endpoint served during the run


@pytest.fixture(scope="module")
def clean_metered_run(spark, feed, minio_server, lake_bucket) -> CleanRun:
    """Bronze and refine, each to the end of its input, in the test session, with the jobs'
    progress listener and per-batch counts going into a metrics registry."""
    metrics = JobMetrics()
    listener = ProgressListener(metrics)
    spark.streams.addListener(listener)
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    conf = s3a_spark_conf(minio_server.endpoint, minio_server.access_key, minio_server.secret_key)
    for key, value in conf.items():
        hadoop.set(key.removeprefix("spark.hadoop."), value)
    settings = lake_settings(feed, minio_server, lake_bucket, "clean")

    def count(outcome: BatchOutcome) -> None:
        metrics.count_rules(outcome.rule_rows)
        metrics.late_rows.inc(outcome.late)

    for query in start_streams(spark, settings, "all", available_now=True,
                               on_refine_batch=count):  # fmt: skip
        query.awaitTermination()
    time.sleep(1)  # the listener bus delivers the last progress events asynchronously
    spark.streams.removeListener(listener)
    return CleanRun(settings, metrics)


@pytest.fixture(scope="module")
def clean_run(clean_metered_run: CleanRun) -> JobSettings:
    return clean_metered_run.settings


def read(spark, settings: JobSettings, table: str):
    return spark.read.format("delta").load(settings.table_path(table))


def expected_candles(truth: list[dict]) -> dict[tuple, dict]:
    """1-minute bars recomputed from the ground truth with Decimal (duplicates skipped)."""
    return reference_bars(t for t in truth if not t["duplicate"])


def gold_candles(spark, settings: JobSettings) -> dict[tuple, dict]:
    """Every candle field as the oracle (``reference_bars``) names it."""
    frame = (
        read(spark, settings, "gold/candles_1m")
        .withColumn("minute_us", F.unix_micros("minute"))
        .withColumn("first_trade_time_us", F.unix_micros("first_trade_time"))
        .withColumn("last_trade_time_us", F.unix_micros("last_trade_time"))
    )
    fields = (
        "open", "high", "low", "close", "volume", "quote_volume", "vwap", "trades", "buy_volume",
        "sell_volume", "first_trade_id", "first_trade_time_us", "last_trade_id",
        "last_trade_time_us",
    )  # fmt: skip
    return {
        (row.symbol, row.minute_us // 60_000_000): {name: row[name] for name in fields}
        for row in frame.collect()
    }


def test_gold_candles_equal_an_independent_decimal_recomputation(spark, feed, clean_run):
    """Every field, with ==: quote volume is the sum of price * qty to the last decimal, vwap its
    quotient rounded half-even at 18 decimals."""
    expected = expected_candles(feed.truth)
    actual = gold_candles(spark, clean_run)
    assert actual.keys() == expected.keys()
    for key, bar in expected.items():
        assert actual[key] == bar, key


def test_silver_holds_each_trade_once_and_the_counts_reconcile(spark, feed, clean_run):
    unique = {(t["symbol"], t["trade_id"]) for t in feed.truth if not t["duplicate"]}
    duplicates = sum(t["duplicate"] for t in feed.truth)
    assert duplicates > 0
    silver = read(spark, clean_run, "silver/trades")
    keys = [(r.symbol, r.trade_id) for r in silver.select("symbol", "trade_id").collect()]
    assert len(keys) == len(set(keys)) and set(keys) == unique
    assert {r.exchange for r in silver.select("exchange").distinct().collect()} == {"simulator"}

    quarantine = read(spark, clean_run, "silver/quarantine")
    rows = quarantine.collect()
    assert sorted(r.reason for r in rows) == sorted(BAD_VALUES.values())
    assert all(r.detail and len(r.raw_value) <= 16_384 for r in rows)
    bronze = read(spark, clean_run, "bronze/trades").count()
    assert bronze == TRADES + feed.bad_values
    assert bronze == silver.count() + quarantine.count() + duplicates


def test_the_metrics_count_the_run(feed, clean_metered_run):
    """What Grafana's pipeline-health dashboard shows: rows per query, rule counts, Kafka lag."""
    registry = clean_metered_run.metrics.registry

    def value(name: str, **labels: str) -> float:
        found = registry.get_sample_value(name, labels)
        assert found is not None, (name, labels)
        return found

    assert value("cryptolake_jobs_input_rows_total", query="bronze") == TRADES + feed.bad_values
    for reason in set(BAD_VALUES.values()):
        count = sum(1 for r in BAD_VALUES.values() if r == reason)
        assert value("cryptolake_jobs_silver_rule_rows_total", rule=reason) == count, reason
    assert value("cryptolake_jobs_batches_total", query="refine") >= 1
    assert value("cryptolake_jobs_gold_late_rows_total") == 0
    # Both read the topic to its end: nothing behind.
    for query in ("bronze", "refine"):
        assert value("cryptolake_jobs_kafka_offsets_behind", query=query) == 0


def test_derived_gold_tables_follow_the_candles(spark, clean_run):
    candles = read(spark, clean_run, "gold/candles_1m")
    hourly = read(spark, clean_run, "gold/stats_hourly")
    by_symbol = {r.symbol: r.volume for r in candles.groupBy("symbol").agg(
        F.sum("volume").alias("volume")).collect()}  # fmt: skip
    hourly_by_symbol = {r.symbol: r.volume for r in hourly.groupBy("symbol").agg(
        F.sum("volume").alias("volume")).collect()}  # fmt: skip
    assert hourly_by_symbol == by_symbol
    daily = read(spark, clean_run, "gold/stats_daily")
    assert daily.agg(F.sum("trades")).first()[0] == candles.agg(F.sum("trades")).first()[0]
    sma = read(spark, clean_run, "gold/sma_5m")
    assert sma.count() >= candles.count()
    assert sma.where("sma IS NULL OR bars < 1 OR bars > 5").count() == 0


def test_the_api_serves_the_candles_spark_wrote(feed, clean_run):
    """delta-rs (the API) reads the tables Spark wrote on MinIO: same bars, same trades."""
    settings = ApiSettings(
        table_root=clean_run.table_root, s3_endpoint=clean_run.s3_endpoint,
        s3_access_key=clean_run.s3_access_key, s3_secret_key=clean_run.s3_secret_key,
    )  # fmt: skip
    expected = expected_candles(feed.truth)
    with TestClient(create_app(settings)) as api:
        assert api.get("/readyz").status_code == 200
        symbols = {s["symbol"] for s in api.get("/v1/symbols").json()["symbols"]}
        assert symbols == {symbol for symbol, _ in expected}
        for symbol in symbols:
            first_minute = min(minute for sym, minute in expected if sym == symbol)
            params = {"symbol": symbol, "start": first_minute * 60_000, "limit": 5000}
            answer = api.get("/v1/candles", params=params)
            bars = json.loads(answer.text, parse_float=Decimal)["bars"]  # every digit sent
            want = {m: bar for (sym, m), bar in expected.items() if sym == symbol}
            assert [b["time_ms"] // 60_000 for b in bars] == sorted(want)
            for bar in bars:
                ref = want[bar["time_ms"] // 60_000]
                for name in API_BAR_FIELDS:
                    assert bar[name] == ref[name], (symbol, bar["time"], name)
                assert bar["trades"] == ref["trades"]
        latest = api.get("/v1/trades/latest", params={"symbol": sorted(symbols)[0]}).json()
        truth_ids = {t["trade_id"] for t in feed.truth}
        assert latest["trades"] and {t["trade_id"] for t in latest["trades"]} <= truth_ids


API_BAR_FIELDS = (
    "open", "high", "low", "close", "volume", "quote_volume", "vwap", "buy_volume", "sell_volume",
)  # fmt: skip


def job_env(settings: JobSettings, minio_server) -> dict[str, str]:
    """The environment of a job process (`python -m cryptolake.jobs …`) on ``settings``."""
    return {
        **os.environ,
        "CRYPTOLAKE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "CRYPTOLAKE_TRADES_TOPIC": settings.trades_topic,
        "CRYPTOLAKE_TABLE_ROOT": settings.table_root,
        "CRYPTOLAKE_S3_ENDPOINT": minio_server.endpoint,
        "CRYPTOLAKE_S3_ACCESS_KEY": minio_server.access_key,
        "CRYPTOLAKE_S3_SECRET_KEY": minio_server.secret_key,
        "CRYPTOLAKE_METRICS_PORT": "0",
        "CRYPTOLAKE_DRIVER_MEMORY": "768m",
    }


@pytest.mark.timeout(600)
def test_two_applications_started_at_once_then_a_rebuild_from_bronze(
    spark, feed, minio_server, lake_bucket, clean_run, tmp_path
):
    """As the operator starts them: ingest (bronze) and refine drivers at the same moment, each
    creating only its own tables (two drivers writing one table's version 0 on S3 once left a
    table nobody could load: DELTA_STATE_RECOVER_ERROR). Then ``rebuild`` recomputes silver and
    gold from bronze alone, and a refine run after it starts where bronze ended."""
    settings = lake_settings(feed, minio_server, lake_bucket, "together")
    env = job_env(settings, minio_server)
    logs = {app: tmp_path / f"{app}.log" for app in ("bronze", "refine")}
    jobs = []
    for app, path in logs.items():
        with path.open("wb") as log:
            jobs.append(subprocess.Popen(
                [sys.executable, "-m", "cryptolake.jobs", app, "--available-now"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
    for job, (app, path) in zip(jobs, logs.items(), strict=True):
        assert job.wait(400) == 0, f"{app}: " + path.read_text()[-3000:]
    s3 = s3_client(minio_server.endpoint, minio_server.access_key, minio_server.secret_key)
    for table in ("bronze/trades", "silver/trades", "silver/quarantine", "gold/candles_1m"):
        key = f"together/{table}/_delta_log/00000000000000000000.json"
        first = s3.get_object(Bucket=lake_bucket, Key=key)["Body"].read().decode()
        commit = [json.loads(line) for line in first.splitlines()]
        assert commit[0]["commitInfo"]["operation"] == "CREATE TABLE", (table, commit[0])
        read(spark, settings, table).count()  # loads: version 0 is one writer's
    assert gold_candles(spark, settings) == gold_candles(spark, clean_run)

    def silver_rows() -> tuple[int, int]:
        return (read(spark, settings, "silver/trades").count(),
                read(spark, settings, "silver/quarantine").count())  # fmt: skip

    before = silver_rows()
    for step in (["rebuild"], ["refine", "--available-now"]):
        with (tmp_path / "after.log").open("ab") as log:
            done = subprocess.run(
                [sys.executable, "-m", "cryptolake.jobs", *step],
                env=env, stdout=log, stderr=subprocess.STDOUT, timeout=400, check=False,
            )  # fmt: skip
        assert done.returncode == 0, (tmp_path / "after.log").read_text()[-3000:]
        assert gold_candles(spark, settings) == gold_candles(spark, clean_run), step
        assert silver_rows() == before, step


@pytest.mark.timeout(900)
def test_sigkill_at_random_points_then_restart_changes_nothing(
    spark, feed, kafka_broker, minio_server, lake_bucket, clean_run, tmp_path
):
    """Three runs killed with SIGKILL at random points, the object store restarted during the
    second and the broker during the third; a last run to the end. The tables equal a run
    that was never disturbed."""
    settings = lake_settings(feed, minio_server, lake_bucket, "killed",
                             max_offsets_per_trigger=200)  # fmt: skip
    env = {
        **job_env(settings, minio_server),
        "CRYPTOLAKE_MAX_OFFSETS_PER_TRIGGER": "200",
        "CRYPTOLAKE_BRONZE_TRIGGER": "1 second",
        "CRYPTOLAKE_REFINE_TRIGGER": "1 second",
    }
    rng = random.Random(5)
    command = [sys.executable, "-m", "cryptolake.jobs", "all"]
    logs = tmp_path / "jobs.log"
    s3 = s3_client(minio_server.endpoint, minio_server.access_key, minio_server.secret_key)

    def silver_commits() -> int:
        listing = s3.list_objects_v2(Bucket=lake_bucket, Prefix="killed/silver/trades/_delta_log/")
        return sum(item["Key"].endswith(".json") for item in listing.get("Contents", []))

    def start_jobs() -> subprocess.Popen[bytes]:
        with logs.open("ab") as log:
            # Its own process group, so SIGKILL takes the Python driver and its JVM at once.
            return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip

    def committed_after(before: int, job: subprocess.Popen[bytes], what: str) -> None:
        deadline = time.monotonic() + 180
        while silver_commits() <= before:
            assert job.poll() is None, logs.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no silver commit {what} in 180 s"
            time.sleep(0.5)

    for run in range(3):
        job = start_jobs()
        try:
            # Once this run has committed something, kill it at a random point after.
            committed_after(silver_commits(), job, "of this run")
            if run == 1:
                # The object store goes away mid-stream for 5 s: the jobs ride it out.
                minio_server.stop()
                time.sleep(5)
                minio_server.start()
                back = time.monotonic()
                committed_after(silver_commits(), job, "after MinIO came back")
                print(f"fault minio_restart recovered_s={time.monotonic() - back:.1f}")
            if run == 2:
                # The broker restarts mid-stream (its data kept): the jobs reconnect.
                kafka_broker.stop()
                kafka_broker.start()
                back = time.monotonic()
                committed_after(silver_commits(), job, "after the broker came back")
                print(f"fault broker_restart recovered_s={time.monotonic() - back:.1f}")
            time.sleep(rng.uniform(0, 4))
        finally:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(30)
    # Catch up in whole batches: other batch boundaries must give the same tables.
    env.pop("CRYPTOLAKE_MAX_OFFSETS_PER_TRIGGER")
    with logs.open("ab") as log:
        finish = subprocess.run([*command, "--available-now"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, timeout=600, check=False)  # fmt: skip
    assert finish.returncode == 0, logs.read_text()[-3000:]

    silver = read(spark, settings, "silver/trades")
    keys = [(r.symbol, r.trade_id) for r in silver.select("symbol", "trade_id").collect()]
    unique = {(t["symbol"], t["trade_id"]) for t in feed.truth if not t["duplicate"]}
    assert len(keys) == len(set(keys)) and set(keys) == unique
    assert read(spark, settings, "bronze/trades").count() == TRADES + feed.bad_values
    assert gold_candles(spark, settings) == gold_candles(spark, clean_run)
