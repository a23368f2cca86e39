"""Coin market snapshots: the simulator's CoinGecko → the poller → a real Kafka topic, every
digit as served; 429s and 503s waited out; hostile rows and bodies to the DLQ with reasons."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson
import pytest

from cryptolake.common.trade import SIMULATOR
from cryptolake.producer.app import simulator_adapter
from cryptolake.producer.kafka_sink import KafkaSink, ensure_topics
from cryptolake.producer.markets import MarketsPoller
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.settings import ProducerSettings
from cryptolake.producer.simulator.server import SimulatorConfig, SimulatorServer
from cryptolake.stack.kafka import read_topic

# What the simulator served, read straight from its bytes (not with the code under test).
SERVED_ROW = re.compile(rb'\{"id":"(?P<id>[^"]+)"[^{}]*?"current_price":(?P<price>[0-9.]+)'
                        rb'[^{}]*?"market_cap":(?P<cap>[0-9.]+)')  # fmt: skip


def settings_for(topics, **overrides) -> ProducerSettings:
    return ProducerSettings(
        bootstrap_servers=topics.bootstrap_servers, trades_topic=topics.trades,
        dlq_topic=topics.dlq, markets_topic=topics.trades.replace(".trades", ".markets"),
        metrics_port=0, **overrides,
    )  # fmt: skip


async def poll(poller: MarketsPoller, times: int) -> list[int]:
    async with httpx.AsyncClient(timeout=10) as client:
        return [await poller.poll_once(client) for _ in range(times)]


def test_the_simulators_markets_reach_the_topic_with_every_digit_it_served(kafka_topics):
    settings = settings_for(kafka_topics, markets_top=10)
    ensure_topics(settings)
    sink = KafkaSink(settings, ProducerMetrics())

    async def scenario() -> tuple[list[int], list[bytes]]:
        async with SimulatorServer(SimulatorConfig(symbols=["BTC-USD"])) as sim:
            adapters = [simulator_adapter(settings, sim.url("coinbase"))]
            poller = MarketsPoller.for_source(settings, adapters, sink, sink.metrics)
            assert poller.source == SIMULATOR
            return await poll(poller, 2), sim.coingecko_served

    published, served = asyncio.run(scenario())
    assert sink.flush(10) == 0
    assert published == [10, 10]
    records = read_topic(settings.bootstrap_servers, settings.markets_topic, expected=20)
    got = [(r.key.decode(), orjson.loads(r.value)) for r in records]
    truth = [(m["id"].decode(), m["price"].decode(), m["cap"].decode())
             for body in served for m in SERVED_ROW.finditer(body)]  # fmt: skip
    assert len(truth) == 20
    assert sorted((v["coin_id"], v["price_usd"], v["market_cap_usd"]) for _, v in got) == sorted(
        truth
    )
    assert all(key == f"simulator:{value['coin_id']}" for key, value in got)
    assert {value["symbol"] for _, value in got} >= {"BTC", "ETH", "USDT"}


def test_429s_and_503s_are_waited_out(kafka_topics):
    settings = settings_for(kafka_topics, markets_top=5, recovery_attempts=4)
    ensure_topics(settings)
    sink = KafkaSink(settings, ProducerMetrics())

    async def scenario() -> tuple[list[int], int]:
        async with SimulatorServer(SimulatorConfig(symbols=["BTC-USD"], rest_fail_every=2)) as sim:
            poller = MarketsPoller.for_source(
                settings, [simulator_adapter(settings, sim.url("coinbase"))], sink, sink.metrics
            )
            return await poll(poller, 3), sim.rest_failures

    published, failures = asyncio.run(scenario())
    assert published == [5, 5, 5] and failures >= 2


HOSTILE = (b'[{"id":"bitcoin","symbol":"btc","name":"Bitcoin","current_price":"abc",'
           b'"last_updated":"2024-03-26T12:20:00Z"},'
           b'{"id":"ethereum","symbol":"eth","name":"Ethereum","current_price":3504.120000001,'
           b'"market_cap":421000000000,"last_updated":"2024-03-26T12:20:00Z"},'
           b'{"id":"nan-coin","symbol":"nan","current_price":-1,'
           b'"last_updated":"2024-03-26T12:20:00Z"}, 7]')  # fmt: skip


@pytest.fixture
def coingecko() -> Iterator[tuple[str, list[bytes]]]:
    """A stand-in CoinGecko that answers each request with the next body of the list."""
    bodies = [HOSTILE, b'{"status":{"error_code":1,"error_message":"not a list"}}',
              b"\xff\xfe not json"]  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = bodies.pop(0)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", bodies
    server.shutdown()


def test_hostile_rows_and_bodies_go_to_the_dlq_with_their_reason(kafka_topics, coingecko):
    url, _ = coingecko
    settings = settings_for(kafka_topics, coingecko_url=url)
    ensure_topics(settings)
    sink = KafkaSink(settings, ProducerMetrics())
    poller = MarketsPoller.for_source(settings, [], sink, sink.metrics)
    assert asyncio.run(poll(poller, 3)) == [1, 0, 0]
    assert sink.flush(10) == 0
    (good,) = read_topic(settings.bootstrap_servers, settings.markets_topic, expected=1)
    assert orjson.loads(good.value)["price_usd"] == "3504.120000001"
    letters = read_topic(settings.bootstrap_servers, settings.dlq_topic, expected=5)
    reasons = sorted(orjson.loads(r.value)["reason"] for r in letters)
    assert reasons == ["bad_encoding", "bad_price", "bad_type", "bad_type", "bad_type"]
    assert {orjson.loads(r.value)["source"] for r in letters} == {"coingecko:markets"}
