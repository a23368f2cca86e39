"""Gap-free trades through the whole lakehouse path: the simulated exchange drops the
connection every 1.5 s, silently skips every 7th frame and fails every 3rd REST answer; the
producer recovers what it missed from the REST history, and the Spark jobs read the topic.
Silver holds every trade the market made between the first and the last id seen, exactly
once, and every Gold candle equals the Decimal recomputation of those trades."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pyspark.sql import functions as F

from cryptolake.common.candles import reference_bars
from cryptolake.jobs import tables
from cryptolake.jobs.cli import start_streams
from cryptolake.jobs.settings import JobSettings
from cryptolake.producer.app import run_until
from cryptolake.producer.kafka_sink import ensure_topics
from cryptolake.producer.settings import ProducerSettings
from cryptolake.producer.simulator import wire
from cryptolake.producer.simulator.server import SimulatorConfig, SimulatorServer

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC-USDT", "ETH-USDT"]
FIELDS = (
    "open", "high", "low", "close", "volume", "quote_volume", "vwap", "trades", "buy_volume",
    "sell_volume", "first_trade_id", "last_trade_id",
)  # fmt: skip


def test_silver_and_gold_are_complete_after_drops_silent_loss_and_rest_failures(
    spark, kafka_broker, tmp_path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = ProducerSettings(
        source="simulator", simulator_protocol="binance", symbols=",".join(SYMBOLS),
        bootstrap_servers=kafka_broker.bootstrap_servers, trades_topic=f"gaps.{suffix}.trades",
        dlq_topic=f"gaps.{suffix}.dlq", metrics_port=0, reconnect_min_s=0.05,
        reconnect_max_s=0.5, gap_grace_s=0.5,
    )  # fmt: skip
    config = SimulatorConfig(seed=23, rate_per_s=400, symbols=SYMBOLS, disconnect_every_s=1.5,
                             skip_frame_every=7, rest_fail_every=3, max_trades=3000)  # fmt: skip

    async def produce() -> tuple[dict[str, list], int, int]:
        async with SimulatorServer(config) as sim:
            ensure_topics(settings)
            local = settings.model_copy(update={"simulator_url": sim.url("binance")})
            producer, _ = await run_until(
                local, lambda p: sim.budget_exhausted and p.feeds[0].recovery.idle,
                timeout_s=120,
            )  # fmt: skip
            history = {symbol: list(trades) for symbol, trades in
                       sim.feeds["binance"].history.items()}  # fmt: skip
            return history, sim.disconnects, producer.feeds[0].recovery.recovered

    history, disconnects, recovered = asyncio.run(produce())
    assert disconnects >= 3 and recovered > 0

    jobs = JobSettings(bootstrap_servers=kafka_broker.bootstrap_servers,
                       trades_topic=settings.trades_topic, table_root=str(tmp_path / "lake"),
                       starting_offsets="earliest", metrics_port=0)  # fmt: skip
    for query in start_streams(spark, jobs, "refine", available_now=True):
        query.awaitTermination()

    silver = spark.read.format("delta").load(jobs.table_path(tables.SILVER_TRADES))
    rows = silver.select("symbol", "trade_id").collect()
    assert len(rows) == len({(r.symbol, r.trade_id) for r in rows})  # exactly once
    seen: dict[str, list[int]] = {}
    for row in rows:
        seen.setdefault(row.symbol, []).append(int(row.trade_id))
    market = []
    for symbol, ids in seen.items():
        span = range(min(ids), max(ids) + 1)
        assert sorted(ids) == list(span), symbol  # no hole left in silver
        for trade in history[symbol]:
            if trade.trade_id in span:
                truth = wire.wire_truth("binance", trade)
                market.append({"symbol": symbol, "trade_id": str(trade.trade_id),
                               "price": truth.price, "qty": truth.qty, "side": trade.side,
                               "event_time": truth.event_time_us})  # fmt: skip

    candles = (
        spark.read.format("delta")
        .load(jobs.table_path(tables.GOLD_CANDLES_1M))
        .withColumn("minute_us", F.unix_micros("minute"))
        .collect()
    )
    actual = {(row.symbol, row.minute_us // 60_000_000): {f: row[f] for f in FIELDS}
              for row in candles}  # fmt: skip
    expected = {key: {f: bar[f] for f in FIELDS} for key, bar in reference_bars(market).items()}
    assert len(expected) >= 2
    assert actual == expected
