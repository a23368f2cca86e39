"""Simulator → producer → real Kafka → consumer: every trade the simulator sent is accounted
for. The simulator writes its ground truth (every item it put on a socket) to a file."""

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from cryptolake.common.trade import (
    MAX_VALUE_BYTES,
    RAW_PREFIX_CHARS,
    DeadLetter,
    RejectReason,
    Trade,
)
from cryptolake.producer.app import Producer, run_until
from cryptolake.producer.exchanges.binance import BinanceAdapter
from cryptolake.producer.exchanges.kraken import KrakenAdapter
from cryptolake.producer.kafka_sink import KafkaSink, SinkError, ensure_topics
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.settings import ProducerSettings
from cryptolake.producer.simulator import wire
from cryptolake.producer.simulator.server import SimulatorConfig, SimulatorServer
from cryptolake.stack.kafka import free_port, read_topic

SYMBOLS = ["BTC-USDT", "ETH-USDT"]


def load_ground_truth(path: Path) -> tuple[list[dict], list[dict]]:
    items = [json.loads(line) for line in path.read_text().splitlines()]
    return (
        [item for item in items if item["kind"] == "trade"],
        [item for item in items if item["kind"] == "malformed"],
    )


def settings_for(topics, **overrides) -> ProducerSettings:
    values = dict(
        source="simulator",
        symbols=",".join(SYMBOLS),
        bootstrap_servers=topics.bootstrap_servers,
        trades_topic=topics.trades,
        dlq_topic=topics.dlq,
        metrics_port=0,
        status_interval_s=1.0,
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
    )
    values.update(overrides)
    return ProducerSettings(**values)


def trades_by_key(records) -> dict[str, list[tuple]]:
    by_key: dict[str, list[tuple]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        trade = Trade.from_json(record.value)
        assert record.key.decode() == trade.key
        by_key[trade.key].append(
            (trade.trade_id, trade.price, trade.qty, trade.side, trade.event_time)
        )
    return by_key


def truth_by_key(truth: list[dict]) -> dict[str, list[tuple]]:
    by_key: dict[str, list[tuple]] = defaultdict(list)
    for item in truth:
        by_key[f"simulator:{item['symbol']}"].append(
            (item["trade_id"], item["price"], item["qty"], item["side"], item["event_time"])
        )
    return by_key


def market_by_key(sim: SimulatorServer, protocol: str, records) -> dict[str, list[tuple]]:
    """What the market traded (the simulator's history, sent or not) from the first to the last
    trade id the producer saw per symbol, as the wire carries it: a gap-free feed's topic."""
    seen: dict[str, list[int]] = defaultdict(list)
    for record in records:
        trade = Trade.from_json(record.value)
        seen[trade.symbol].append(int(trade.trade_id))
    by_key: dict[str, list[tuple]] = {}
    for symbol, ids in seen.items():
        history = sim.feeds[protocol].trades_from(symbol, min(ids), max(ids) - min(ids) + 1)
        truths = [(t, wire.wire_truth(protocol, t)) for t in history]
        by_key[f"simulator:{symbol}"] = [
            (str(t.trade_id), w.price, w.qty, t.side, w.event_time_us) for t, w in truths
        ]
    return by_key


def by_id(by_key: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    return {key: sorted(items, key=lambda item: int(item[0])) for key, items in by_key.items()}


def metric(producer: Producer, name: str, **labels) -> float:
    return producer.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("protocol", wire.FORMATS)
def test_every_simulated_trade_arrives_exactly_once_in_order_per_key(
    protocol, kafka_topics, tmp_path
):
    truth_path = tmp_path / "truth.jsonl"
    config = SimulatorConfig(
        seed=7, rate_per_s=4000, max_trades=3000, symbols=SYMBOLS, ground_truth_path=truth_path
    )

    async def scenario():
        async with SimulatorServer(config) as sim:
            settings = settings_for(
                kafka_topics, simulator_url=sim.url(protocol), simulator_protocol=protocol
            )
            ensure_topics(settings)
            return await run_until(
                settings, lambda p: p.sink.delivered >= 3000 and sim.trades_sent >= 3000
            )

    producer, summary = asyncio.run(scenario())
    truth, malformed = load_ground_truth(truth_path)
    assert len(truth) == 3000 and not malformed
    assert summary.source == "simulator"
    assert (summary.delivered, summary.failed, summary.undelivered) == (3000, 0, 0)

    records = read_topic(kafka_topics.bootstrap_servers, kafka_topics.trades, expected=3000)
    assert len(records) == 3000
    assert trades_by_key(records) == truth_by_key(truth)
    assert metric(producer, "cryptolake_producer_trades_produced_total", exchange="simulator") == (
        3000
    )


def test_disconnects_are_reconnected_and_their_gaps_recovered(kafka_topics):
    """Trades made while the producer was away come back from the REST history: the topic
    holds every trade of the market between the first and the last id seen, exactly once."""
    config = SimulatorConfig(seed=11, rate_per_s=800, symbols=SYMBOLS, disconnect_every_s=0.8,
                             max_trades=2500)  # fmt: skip

    async def scenario():
        async with SimulatorServer(config) as sim:
            settings = settings_for(kafka_topics, simulator_url=sim.url("binance"),
                                    simulator_protocol="binance", gap_grace_s=0.3)  # fmt: skip
            ensure_topics(settings)
            producer, summary = await run_until(
                settings,
                lambda p: (sim.disconnects >= 3 and sim.budget_exhausted
                           and p.feeds[0].recovery.idle),
            )  # fmt: skip
            records = read_topic(kafka_topics.bootstrap_servers, kafka_topics.trades,
                                 expected=summary.delivered)  # fmt: skip
            return producer, summary, records, market_by_key(sim, "binance", records)

    producer, summary, records, market = asyncio.run(scenario())
    labels = {"exchange": "simulator", "protocol": "binance"}
    assert metric(producer, "cryptolake_producer_reconnects_total", **labels) >= 3
    assert metric(producer, "cryptolake_producer_gaps_total", **labels) >= 3
    missing = metric(producer, "cryptolake_producer_gap_trades_total", **labels)
    assert missing > 0
    assert metric(producer, "cryptolake_producer_recovered_trades_total", **labels) == missing
    assert metric(producer, "cryptolake_producer_unrecoverable_gaps_total", **labels) == 0
    assert summary.delivered == len(records) == sum(len(v) for v in market.values())
    assert by_id(trades_by_key(records)) == market


def test_a_reconnect_storm_loses_and_duplicates_nothing(kafka_topics):
    """100 dropped connections within a minute: every trade the market made arrives once (the
    ones made while the producer was away from the REST history), in order per key for what
    the stream delivered."""
    protocol = "binance"  # the others' reconnects are the same code (feed.py)
    config = SimulatorConfig(seed=13, rate_per_s=600, symbols=SYMBOLS, disconnect_every_s=0.15,
                             max_trades=6000)  # fmt: skip

    async def scenario():
        async with SimulatorServer(config) as sim:
            settings = settings_for(kafka_topics, simulator_url=sim.url(protocol),
                                    simulator_protocol=protocol, reconnect_min_s=0.02,
                                    reconnect_max_s=0.2, gap_grace_s=0.3)  # fmt: skip
            ensure_topics(settings)
            started = time.monotonic()
            producer, summary = await run_until(
                settings,
                lambda p: sim.disconnects >= 100 and sim.budget_exhausted
                and p.feeds[0].recovery.idle,
                timeout_s=90,
            )  # fmt: skip
            elapsed = time.monotonic() - started
            records = read_topic(kafka_topics.bootstrap_servers, kafka_topics.trades,
                                 expected=summary.delivered)  # fmt: skip
            market = market_by_key(sim, protocol, records)
            return producer, summary, sim.disconnects, elapsed, records, market

    producer, summary, disconnects, elapsed, records, market = asyncio.run(scenario())
    assert disconnects >= 100 and elapsed < 90, (disconnects, elapsed)
    labels = {"exchange": "simulator", "protocol": protocol}
    assert metric(producer, "cryptolake_producer_reconnects_total", **labels) >= 100
    assert metric(producer, "cryptolake_producer_recovered_trades_total", **labels) > 0
    assert (summary.failed, summary.undelivered) == (0, 0)
    assert summary.delivered == len(records) == sum(len(v) for v in market.values())
    assert by_id(trades_by_key(records)) == market


@pytest.mark.parametrize("protocol", wire.FORMATS)
def test_silently_lost_frames_come_back_through_a_flaky_rest_history(protocol, kafka_topics):
    """The server skips every 5th frame without closing (no reconnect tells), and answers
    every 3rd history request with 429 or 503: the ids show the holes, the retries honour
    Retry-After, and the topic still holds every trade of the market exactly once."""
    config = SimulatorConfig(seed=17, rate_per_s=800, symbols=SYMBOLS, skip_frame_every=5,
                             rest_fail_every=3, max_trades=2000)  # fmt: skip

    async def scenario():
        async with SimulatorServer(config) as sim:
            # The key opens Binance futures' history by id (the simulator asks for one).
            settings = settings_for(kafka_topics, simulator_url=sim.url(protocol),
                                    simulator_protocol=protocol, gap_grace_s=0.3,
                                    binance_api_key="a-key")  # fmt: skip
            ensure_topics(settings)
            producer, summary = await run_until(
                settings, lambda p: sim.budget_exhausted and p.feeds[0].recovery.idle,
            )  # fmt: skip
            records = read_topic(kafka_topics.bootstrap_servers, kafka_topics.trades,
                                 expected=summary.delivered)  # fmt: skip
            return producer, summary, sim, records, market_by_key(sim, protocol, records)

    producer, summary, sim, records, market = asyncio.run(scenario())
    labels = {"exchange": "simulator", "protocol": protocol}
    assert sim.frames_skipped >= 5 and sim.rest_failures >= 1
    assert metric(producer, "cryptolake_producer_reconnects_total", **labels) == 0
    missing = metric(producer, "cryptolake_producer_gap_trades_total", **labels)
    assert missing >= 5
    assert metric(producer, "cryptolake_producer_recovered_trades_total", **labels) == missing
    assert summary.delivered == len(records) == sum(len(v) for v in market.values())
    assert by_id(trades_by_key(records)) == market


def test_a_gap_older_than_the_history_is_recorded_unrecoverable(kafka_topics, caplog):
    config = SimulatorConfig(seed=19, rate_per_s=800, symbols=SYMBOLS, skip_frame_every=4,
                             history_per_symbol=1, max_trades=300)  # fmt: skip

    async def scenario():
        async with SimulatorServer(config) as sim:
            settings = settings_for(kafka_topics, simulator_url=sim.url("binance"),
                                    simulator_protocol="binance", gap_grace_s=0.3)  # fmt: skip
            ensure_topics(settings)
            return await run_until(
                settings, lambda p: sim.budget_exhausted and p.feeds[0].recovery.idle,
            )  # fmt: skip

    with caplog.at_level(logging.WARNING, logger="cryptolake.producer.recovery"):
        producer, _ = asyncio.run(scenario())
    labels = {"exchange": "simulator", "protocol": "binance"}
    assert metric(producer, "cryptolake_producer_unrecoverable_gaps_total", **labels) > 0
    assert metric(producer, "cryptolake_producer_recovered_trades_total", **labels) == 0
    assert "GAP UNRECOVERABLE" in caplog.text and "the history has no trade" in caplog.text


def test_malformed_frames_land_in_the_dlq_and_the_counts_add_up(kafka_topics, tmp_path):
    truth_path = tmp_path / "truth.jsonl"
    config = SimulatorConfig(
        seed=3,
        rate_per_s=500,
        max_trades=600,
        symbols=SYMBOLS,
        malformed_every=2,
        ground_truth_path=truth_path,
    )

    async def scenario():
        async with SimulatorServer(config) as sim:
            settings = settings_for(
                kafka_topics, simulator_url=sim.url("coinbase"), simulator_protocol="coinbase"
            )
            ensure_topics(settings)
            producer, summary = await run_until(
                settings,
                lambda p: (
                    sim.trades_sent >= 600
                    and p.sink.delivered + p.sink.dlq_delivered
                    >= sim.trades_sent + sim.malformed_sent
                ),
            )
            return producer, summary, sim.trades_sent, sim.malformed_sent

    producer, summary, sent, malformed_sent = asyncio.run(scenario())
    truth, malformed = load_ground_truth(truth_path)
    assert malformed_sent == len(malformed) > 10
    assert (sent, summary.delivered, summary.dlq) == (len(truth), len(truth), len(malformed))

    letters = read_topic(kafka_topics.bootstrap_servers, kafka_topics.dlq, expected=len(malformed))
    reasons = [orjson.loads(record.value)["reason"] for record in letters]
    assert reasons == [item["expected_reason"] for item in malformed]
    # The raw of a dead letter is the whole frame, or the bad trade element cut from it.
    raws = [orjson.loads(record.value)["raw"] for record in letters]
    assert all(raw in item["frame"] for raw, item in zip(raws, malformed, strict=True))
    dlq_metric = sum(
        metric(
            producer,
            "cryptolake_producer_dlq_total",
            exchange="simulator",
            protocol="coinbase",
            reason=reason,
        )
        for reason in set(reasons)
    )
    assert dlq_metric == len(malformed)


def test_auto_falls_back_to_the_labelled_simulator_when_no_exchange_answers(kafka_topics):
    closed = "ws://127.0.0.1:9"  # discard port: nothing listens, the probe is refused at once
    settings = settings_for(
        kafka_topics,
        source="auto",
        live_timeout_s=2,
        simulator_rate=500,
        exchange_urls=f"binance={closed},kraken={closed},coinbase={closed}",
    )
    ensure_topics(settings)
    _, summary = asyncio.run(run_until(settings, lambda p: p.sink.delivered >= 100))
    assert summary.source == "simulator"
    records = read_topic(kafka_topics.bootstrap_servers, kafka_topics.trades, expected=100)
    assert {Trade.from_json(r.value).exchange for r in records} == {"simulator"}


def topic_setting(bootstrap: str, topic: str, name: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return str(admin.describe_configs([resource])[resource].result(timeout=10)[name].value)


def test_topics_are_created_with_the_broker_append_time(kafka_topics):
    ensure_topics(settings_for(kafka_topics))
    for topic in (kafka_topics.trades, kafka_topics.dlq):
        timestamps = topic_setting(kafka_topics.bootstrap_servers, topic, "message.timestamp.type")
        assert timestamps == "LogAppendTime"


def test_an_existing_topic_with_producer_time_is_left_as_is_with_a_warning(kafka_topics, caplog):
    admin = AdminClient({"bootstrap.servers": kafka_topics.bootstrap_servers})
    for future in admin.create_topics([NewTopic(kafka_topics.trades, 1, 1)]).values():
        future.result(timeout=30)
    with caplog.at_level(logging.WARNING, logger="cryptolake.producer.kafka_sink"):
        ensure_topics(settings_for(kafka_topics))
    timestamps = topic_setting(
        kafka_topics.bootstrap_servers, kafka_topics.trades, "message.timestamp.type"
    )
    assert timestamps == "CreateTime"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        kafka_topics.trades in w and "message.timestamp.type=CreateTime" in w for w in warnings
    )


def test_a_2mb_frame_reaches_the_dlq_bounded_and_nothing_oversized_stops_the_sink(kafka_topics):
    """Dead letters from 2 MB frames are cut to their prefix and delivered; a dead letter or a
    trade that skipped the bounds is refused by produce(), counted, and the sink goes on."""
    settings = settings_for(kafka_topics)
    ensure_topics(settings)
    now_us = 1_700_000_000_000_000
    pad = "A" * (2 * 1024 * 1024)
    frames = [
        (BinanceAdapter(["BTC-USDT"]), f'{{"e":"trade","s":"{pad}","t":1}}'),
        (KrakenAdapter(["BTC-USD"]), f'{{"channel":"trade","data":[{{"symbol":"{pad}"}}]}}'),
    ]
    letters = [letter for a, f in frames for letter in a.parse(f.encode(), now_us).dead_letters]
    assert len(letters) == 2
    unbounded = DeadLetter("binance", RejectReason.BAD_SYMBOL, "by hand", pad, now_us)
    huge_trade = Trade("binance", "BTC-USDT", "1", "1." + pad.replace("A", "0"), "1", "buy", 1, 1)
    sink = KafkaSink(settings, ProducerMetrics())
    sink.publish_dead_letters([letters[0], unbounded, letters[1]])
    sink.publish_trades([huge_trade])
    assert sink.flush(30) == 0
    sink.serve()
    assert (sink.dlq_delivered, sink.failed, sink.too_large) == (2, 2, 2)

    records = read_topic(kafka_topics.bootstrap_servers, kafka_topics.dlq, expected=2)
    assert all(len(record.value) <= MAX_VALUE_BYTES for record in records)
    values = sorted((orjson.loads(record.value) for record in records), key=lambda v: v["source"])
    assert [(v["source"], v["reason"]) for v in values] == [
        ("binance", "missing_field"),
        ("kraken", "missing_field"),
    ]
    assert [v["raw"] for v in values] == [letter.raw for letter in letters]
    assert all(len(v["raw"]) == RAW_PREFIX_CHARS for v in values)
    assert all(v["raw_length"] > RAW_PREFIX_CHARS for v in values)


def test_a_feed_that_fails_still_flushes_every_trade_it_produced(kafka_topics, monkeypatch):
    """An unexpected error ends the run, but only after what was produced is acknowledged."""
    settings = settings_for(kafka_topics, simulator_rate=4000)
    ensure_topics(settings)
    producer = Producer(settings)
    publish = producer.sink.publish_trades
    published: list[Trade] = []

    def publish_then_break(trades):
        batch = list(trades)
        if len(published) >= 1500:
            raise RuntimeError("a bug in a feed")
        publish(batch)
        published.extend(batch)

    monkeypatch.setattr(producer.sink, "publish_trades", publish_then_break)
    with pytest.raises(RuntimeError, match="a bug in a feed"):
        asyncio.run(producer.run(asyncio.Event()))
    assert (producer.sink.delivered, len(producer.sink.producer)) == (len(published), 0)
    records = read_topic(kafka_topics.bootstrap_servers, kafka_topics.trades,
                         expected=len(published))  # fmt: skip
    assert len(records) == len(published)


class LateForwarder:
    """A TCP port that starts forwarding to ``target`` only after ``delay_s``: a broker that
    answers late, as a fresh pipeline's broker does while its clients already start."""

    def __init__(self, target: str, delay_s: float):
        self.host, port = target.rsplit(":", 1)
        self.target_port = int(port)
        self.delay_s = delay_s
        self.port = free_port()
        self._stop = threading.Event()

    def __enter__(self) -> str:
        threading.Thread(target=self._serve, daemon=True).start()
        return f"127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _serve(self) -> None:
        if self._stop.wait(self.delay_s):
            return
        with socket.create_server(("127.0.0.1", self.port)) as server:
            server.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection((self.host, self.target_port))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_topics_wait_for_a_broker_that_answers_late(kafka_topics, caplog):
    """A producer started before its broker answers waits for it (CI once saw the producer
    restart because the broker came up 40 s after it)."""
    with LateForwarder(kafka_topics.bootstrap_servers, delay_s=4.0) as late_bootstrap:
        settings = settings_for(kafka_topics, bootstrap_servers=late_bootstrap)
        with caplog.at_level(logging.INFO, logger="cryptolake.producer.kafka_sink"):
            ensure_topics(settings, timeout_s=1.0)
    admin = AdminClient({"bootstrap.servers": kafka_topics.bootstrap_servers})
    assert {kafka_topics.trades, kafka_topics.dlq} <= set(admin.list_topics(timeout=10).topics)
    assert any("waiting for the broker" in r.getMessage() for r in caplog.records)


def test_a_broker_that_never_answers_fails_with_its_address_after_the_wait():
    silent = f"127.0.0.1:{free_port()}"
    settings = ProducerSettings(bootstrap_servers=silent, broker_wait_s=3.0, metrics_port=0)
    started = time.monotonic()
    with pytest.raises(SinkError, match=f"no broker answered at {silent}"):
        ensure_topics(settings, timeout_s=1.0)
    assert 3.0 <= time.monotonic() - started < 15.0
