"""The simulator server end to end, with a real websockets client on each path."""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from cryptolake.common.candles import reference_bars
from cryptolake.common.symbols import split_concatenated
from cryptolake.common.timeutil import now_us, rfc3339_to_us
from cryptolake.common.trade import TradeRejected, make_trade
from cryptolake.producer.exchanges import adapter_class
from cryptolake.producer.gaps import Gap
from cryptolake.producer.simulator import wire
from cryptolake.producer.simulator.server import SimulatorConfig, SimulatorServer

T = TypeVar("T")
FAST = {"rate_per_s": 400.0, "heartbeat_every_s": 0.2}
FAST_TICK_S = SimulatorConfig(**FAST).tick_s


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    """pytest-asyncio is not a dependency: run one scenario in a fresh loop, bounded."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def client(url: str) -> connect:
    # Unbounded receive queue: websockets stops reading the socket when a client that stopped
    # calling recv() has 16 frames queued, and its close() then waits out close_timeout (10 s).
    return connect(url, max_queue=None)


@contextlib.asynccontextmanager
async def open_feed(sim: SimulatorServer, fmt: str) -> AsyncIterator[ClientConnection]:
    """Connect to one exchange path and subscribe to BTC-USDT and ETH-USDT trades."""
    if fmt in wire.BINANCE_FORMATS:  # the same stream names on the futures host
        url = sim.url(fmt) + "/stream?streams=btcusdt@trade/ethusdt@trade"
        async with client(url) as ws:
            yield ws
        return
    async with client(sim.url(fmt)) as ws:
        if fmt == "kraken":
            params = {"channel": "trade", "symbol": ["BTC/USDT", "ETH/USDT"], "snapshot": False}
            await ws.send(json.dumps({"method": "subscribe", "params": params, "req_id": 1}))
        else:
            products = ["BTC-USDT", "ETH-USDT"]
            await ws.send(
                json.dumps(
                    {"type": "subscribe", "channel": "market_trades", "product_ids": products}
                )
            )
            await ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))
        yield ws


def decode(fmt: str, text: str) -> tuple[str, list[dict[str, Any]]]:
    """("control", []), ("trades", [trade as a correct parser reads it]) or ("bad", [])."""
    try:
        obj = json.loads(text, parse_float=str)
    except json.JSONDecodeError:
        return "bad", []
    if fmt in wire.BINANCE_FORMATS:
        if obj.get("e") == "serverShutdown" or "result" in obj:
            return "control", []
        data = obj.get("data", {})
        if data.get("e") != "trade":
            return "bad", []
        contract = "-PERP" if fmt == "binance-futures" else ""
        rows = [
            (
                f"{split_concatenated(data['s'])}{contract}",
                data["t"],
                data.get("p"),
                data["q"],
                "sell" if data["m"] else "buy",
                data["T"] * 1000,
            )
        ]
    elif fmt == "kraken":
        if obj.get("channel") in ("status", "heartbeat") or "method" in obj:
            return "control", []
        if obj.get("channel") != "trade":
            return "bad", []
        rows = [
            (
                i["symbol"].replace("/", "-"),
                i["trade_id"],
                i.get("price"),
                i["qty"],
                i["side"],
                rfc3339_to_us(i["timestamp"]),
            )
            for i in obj["data"]
        ]
    else:
        if obj.get("channel") in ("subscriptions", "heartbeats") or obj.get("type") == "error":
            return "control", []
        if obj.get("channel") != "market_trades":
            return "bad", []
        rows = [
            (
                i["product_id"],
                i["trade_id"],
                i.get("price"),
                i["size"],
                # The wire carries the maker's side; the truth records the taker's.
                {"BUY": "sell", "SELL": "buy"}.get(i["side"], i["side"]),
                rfc3339_to_us(i["time"]),
            )
            for e in obj["events"]
            for i in e["trades"]
        ]
    trades = []
    for symbol, trade_id, price, qty, side, event_time in rows:
        try:
            trade = make_trade(
                exchange="simulator",
                symbol=symbol,
                trade_id=trade_id,
                price=None if price is None else str(price),
                qty=str(qty),
                side=side,
                event_time=event_time,
                ingest_time=now_us(),
            )
        except TradeRejected:
            return "bad", []
        trades.append(
            {
                "kind": "trade",
                "format": fmt,
                "symbol": trade.symbol,
                "trade_id": trade.trade_id,
                "price": trade.price,
                "qty": trade.qty,
                "side": trade.side,
                "event_time": trade.event_time,
            }
        )
    return "trades", trades


async def collect(ws: ClientConnection, seconds: float) -> list[str]:
    """Every frame that arrives within ``seconds``."""
    frames: list[str] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                frames.append(str(await ws.recv()))
    return frames


# --- each path speaks its exchange ----------------------------------------------------------


def test_binance_combined_stream_url_streams_one_trade_per_frame():
    async def scenario() -> list[dict[str, Any]]:
        async with SimulatorServer(SimulatorConfig(**FAST)) as sim:
            url = sim.url("binance") + "/stream?streams=btcusdt@trade"
            async with client(url) as ws:
                return [json.loads(await ws.recv()) for _ in range(5)]

    frames = run(scenario())
    assert {frame["stream"] for frame in frames} == {"btcusdt@trade"}
    assert {frame["data"]["e"] for frame in frames} == {"trade"}
    ids = [frame["data"]["t"] for frame in frames]
    assert ids == list(range(ids[0], ids[0] + 5))


def test_binance_ws_path_answers_subscribe_and_sends_bare_payloads():
    async def scenario() -> list[dict[str, Any]]:
        async with (
            SimulatorServer(SimulatorConfig(**FAST)) as sim,
            client(sim.url("binance") + "/ws") as ws,
        ):
            request = {"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 1}
            await ws.send(json.dumps(request))
            first = json.loads(await ws.recv())
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            rest = [json.loads(frame) for frame in await collect(ws, 0.3)]
            return [first, *rest]

    frames = run(scenario())
    assert frames[0] == {"result": None, "id": 1}
    assert {"result": ["ethusdt@trade"], "id": 2} in frames
    trades = [frame for frame in frames if frame.get("e") == "trade"]
    assert trades and {trade["s"] for trade in trades} == {"ETHUSDT"}


def test_kraken_greets_acks_each_symbol_streams_trades_and_beats_when_idle():
    async def scenario() -> list[dict[str, Any]]:
        config = SimulatorConfig(max_trades=10, **FAST)
        async with SimulatorServer(config) as sim, open_feed(sim, "kraken") as ws:
            return [json.loads(frame, parse_float=str) for frame in await collect(ws, 1.0)]

    frames = run(scenario())
    assert frames[0]["channel"] == "status" and frames[0]["data"][0]["system"] == "online"
    acks = [frame for frame in frames if frame.get("method") == "subscribe"]
    assert [ack["result"]["symbol"] for ack in acks] == ["BTC/USDT", "ETH/USDT"]
    assert all(ack["success"] is True and ack["req_id"] == 1 for ack in acks)
    trade_frames = [frame for frame in frames if frame.get("channel") == "trade"]
    assert sum(len(frame["data"]) for frame in trade_frames) == 10
    assert all(len({item["symbol"] for item in frame["data"]}) == 1 for frame in trade_frames)
    last_trade = max(i for i, frame in enumerate(frames) if frame.get("channel") == "trade")
    assert {"channel": "heartbeat"} in frames[last_trade:]


def test_kraken_refuses_a_pair_it_does_not_simulate():
    async def scenario() -> list[dict[str, Any]]:
        async with SimulatorServer(SimulatorConfig(**FAST)) as sim, client(sim.url("kraken")) as ws:
            params = {"channel": "trade", "symbol": ["FOO/BAR"]}
            await ws.send(json.dumps({"method": "subscribe", "params": params}))
            return [json.loads(frame) for frame in await collect(ws, 0.3)]

    _status, error, *rest = run(scenario())
    assert error["success"] is False and "FOO/BAR" in error["error"]
    assert not [frame for frame in rest if frame.get("channel") == "trade"]


def test_coinbase_numbers_every_frame_across_trades_acks_and_heartbeats():
    async def scenario() -> list[dict[str, Any]]:
        async with (
            SimulatorServer(SimulatorConfig(**FAST)) as sim,
            open_feed(sim, "coinbase") as ws,
        ):
            return [json.loads(frame) for frame in await collect(ws, 0.7)]

    frames = run(scenario())
    assert [frame["sequence_num"] for frame in frames] == list(range(len(frames)))
    channels = [frame["channel"] for frame in frames]
    assert channels[:2] == ["subscriptions", "subscriptions"]
    assert frames[1]["events"][0]["subscriptions"] == {
        "market_trades": ["BTC-USDT", "ETH-USDT"],
        "heartbeats": ["heartbeats"],
    }
    assert "market_trades" in channels
    counters = [f["events"][0]["heartbeat_counter"] for f in frames if f["channel"] == "heartbeats"]
    assert len(counters) >= 2 and counters == sorted(counters)


def test_an_unknown_path_is_closed_with_a_reason():
    async def scenario() -> ConnectionClosed:
        async with (
            SimulatorServer(SimulatorConfig()) as sim,
            client(f"ws://127.0.0.1:{sim.port}/bitfinex") as ws,
        ):
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value

    closed = run(scenario())
    assert closed.rcvd is not None and closed.rcvd.code == 1008
    assert "unknown path" in closed.rcvd.reason and "/kraken" in closed.rcvd.reason


# --- scenarios ----------------------------------------------------------------------------


def test_the_disconnect_scenario_really_drops_and_the_market_moves_on_meanwhile():
    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], SimulatorServer]:
        config = SimulatorConfig(disconnect_every_s=0.4, **FAST)
        async with SimulatorServer(config) as sim:
            before: list[dict[str, Any]] = []
            async with open_feed(sim, "binance") as ws:
                with pytest.raises(ConnectionClosedError):
                    async with asyncio.timeout(3):
                        while True:
                            before.append(json.loads(await ws.recv())["data"])
            await asyncio.sleep(0.3)  # away: the trades of this gap are sent to no one
            async with open_feed(sim, "binance") as ws:
                after = [json.loads(await ws.recv())["data"] for _ in range(10)]
            return before, after, sim

    before, after, sim = run(scenario())
    assert sim.disconnects >= 1 and sim.connections == 2
    assert len(before) > 20
    last_before = max(t["t"] for t in before if t["s"] == "BTCUSDT")
    first_after = min(t["t"] for t in after if t["s"] == "BTCUSDT")
    assert first_after > last_before + 1


def test_a_flood_goes_on_for_the_next_connection_after_a_drop():
    async def scenario() -> tuple[int, int]:
        config = SimulatorConfig(flood=True, disconnect_every_s=0.3)
        async with SimulatorServer(config) as sim:
            async with open_feed(sim, "coinbase") as ws:
                with pytest.raises(ConnectionClosedError):
                    async with asyncio.timeout(3):
                        while True:
                            await ws.recv()
            sent_before = sim.trades_sent
            async with open_feed(sim, "coinbase") as ws:
                received = 0
                while received < 1000:
                    received += len(decode("coinbase", str(await ws.recv()))[1])
            return sent_before, received

    sent_before, received = run(scenario())
    assert sent_before > 1000 and received >= 1000


@pytest.mark.parametrize("fmt", wire.FORMATS)
def test_the_shutdown_notice_comes_last_then_the_server_closes(fmt):
    async def scenario() -> tuple[list[str], ConnectionClosed]:
        config = SimulatorConfig(shutdown_after_s=0.3, **FAST)
        async with SimulatorServer(config) as sim, open_feed(sim, fmt) as ws:
            frames: list[str] = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frames.append(str(await ws.recv()))
            return frames, closed.value

    frames, closed = run(scenario())
    notice = json.loads(frames[-1])
    expected = {
        "binance": lambda n: n.get("e") == "serverShutdown",
        "binance-futures": lambda n: n.get("e") == "serverShutdown",
        "kraken": lambda n: (
            n.get("channel") == "status" and n["data"][0]["system"] == "maintenance"
        ),
        "coinbase": lambda n: n == {"type": "error", "message": "server shutting down"},
    }
    assert expected[fmt](notice)
    assert closed.rcvd is not None and closed.rcvd.code == 1001


@pytest.mark.parametrize("fmt", wire.FORMATS)
def test_the_ground_truth_is_exactly_what_the_client_received(fmt, tmp_path: Path):
    truth_path = tmp_path / "truth.jsonl"

    async def scenario() -> list[str]:
        config = SimulatorConfig(
            max_trades=60,
            malformed_every=3,
            duplicate_every=4,
            out_of_order_every=5,
            ground_truth_path=truth_path,
            **FAST,
        )
        async with SimulatorServer(config) as sim, open_feed(sim, fmt) as ws:
            await sim.wait_sent(60, timeout=5)
            return await collect(ws, 0.3)

    frames = run(scenario())
    received: list[dict[str, Any]] = []
    for frame in frames:
        kind, trades = decode(fmt, frame)
        if kind == "trades":
            received += trades
        elif kind == "bad":
            received.append({"kind": "bad", "frame": frame})
    truth = [json.loads(line) for line in truth_path.read_text().splitlines()]
    expected = [
        {k: v for k, v in line.items() if k != "duplicate"}
        if line["kind"] == "trade"
        else {"kind": "bad", "frame": line["frame"]}
        for line in truth
    ]
    assert received == expected

    trades = [line for line in truth if line["kind"] == "trade"]
    assert len(trades) == 60 and all(line["format"] == fmt for line in truth)
    # Duplicates repeat an earlier trade exactly; a swapped pair shows as an id going back.
    originals = {(t["symbol"], t["trade_id"]): t for t in trades if not t["duplicate"]}
    copies = [t for t in trades if t["duplicate"]]
    assert copies and all(
        {**t, "duplicate": False} == originals[t["symbol"], t["trade_id"]] for t in copies
    )
    last_id: dict[str, int] = {}
    went_back = 0
    for t in (t for t in trades if not t["duplicate"]):
        went_back += int(t["trade_id"]) < last_id.get(t["symbol"], 0)
        last_id[t["symbol"]] = int(t["trade_id"])
    assert went_back >= 1
    reasons = [line["expected_reason"] for line in truth if line["kind"] == "malformed"]
    cycle = [str(wire.EXPECTED_REASON[kind]) for kind in wire.MALFORMED_KINDS]
    assert reasons and reasons == [cycle[i % len(cycle)] for i in range(len(reasons))]


def test_max_trades_is_one_total_across_connections_and_heartbeats_go_on():
    async def scenario() -> tuple[list[list[str]], SimulatorServer]:
        config = SimulatorConfig(max_trades=40, **FAST)
        async with SimulatorServer(config) as sim:
            async with open_feed(sim, "coinbase") as first, open_feed(sim, "coinbase") as second:
                await sim.wait_sent(40, timeout=5)
                frames = await asyncio.gather(collect(first, 0.6), collect(second, 0.6))
            return list(frames), sim

    per_client, sim = run(scenario())
    assert sim.trades_sent == 40
    # Both clients see the same tape; the 40 trades are shared out between them.
    counts = [sum(len(decode("coinbase", frame)[1]) for frame in frames) for frames in per_client]
    assert sum(counts) == 40
    channels = [[json.loads(frame)["channel"] for frame in frames] for frames in per_client]
    assert all(c[-1] == "heartbeats" for c in channels)


def test_flood_mode_sends_fast_in_full_frames():
    async def scenario() -> tuple[list[str], float]:
        config = SimulatorConfig(flood=True, max_trades=5000)
        async with SimulatorServer(config) as sim, open_feed(sim, "coinbase") as ws:
            loop = asyncio.get_running_loop()
            start = loop.time()
            frames: list[str] = []
            received = 0
            while received < 5000:
                frames.append(str(await ws.recv()))
                received += len(decode("coinbase", frames[-1])[1])
            return frames, loop.time() - start

    frames, elapsed = run(scenario())
    sizes = [len(decode("coinbase", frame)[1]) for frame in frames]
    sizes = [size for size in sizes if size]
    assert sum(sizes) == 5000 and max(sizes) == 50
    assert sizes.count(50) >= len(sizes) * 0.7
    assert elapsed < 3.0


def test_wait_sent_gives_up_after_its_timeout():
    async def scenario() -> None:
        async with SimulatorServer(SimulatorConfig(max_trades=0)) as sim:
            with pytest.raises(TimeoutError):
                await sim.wait_sent(1, timeout=0.2)

    run(scenario())


def test_config_canonicalizes_symbols_and_refuses_nonsense():
    assert SimulatorConfig(symbols=["btc/usdt", "ETH-USDT"]).symbols == ["BTC-USDT", "ETH-USDT"]
    with pytest.raises(ValueError):
        SimulatorConfig(rate_per_s=0)
    with pytest.raises(ValueError):
        SimulatorConfig(symbols=[])


def test_the_rest_history_serves_every_trade_of_the_market_sent_or_not() -> None:
    """Trades the market made while nobody listened are in the history, in id order, in
    Binance's REST shape; bad requests get Binance's error codes."""

    async def scenario() -> None:
        async with SimulatorServer(SimulatorConfig(**FAST)) as sim:
            await asyncio.sleep(0.5)  # nobody is connected: nothing is sent
            assert sim.trades_sent == 0
            base = sim.url("binance").replace("ws://", "http://") + "/api/v3/historicalTrades"
            async with httpx.AsyncClient() as http:
                first = (await http.get(base, params={"symbol": "BTCUSDT", "limit": 1000})).json()
                assert len(first) > 10
                ids = [t["id"] for t in first]
                assert ids == list(range(ids[0], ids[0] + len(ids)))
                page = await http.get(base, params={"symbol": "BTCUSDT", "fromId": ids[3],
                                                    "limit": 2})  # fmt: skip
                assert page.json() == first[3:5]
                assert page.headers["content-type"] == "application/json"
                bad = await http.get(base, params={"symbol": "NOPEUSDT"})
                assert (bad.status_code, bad.json()["code"]) == (400, -1121)
                bad = await http.get(base, params={"symbol": "BTCUSDT", "fromId": "x"})
                assert (bad.status_code, bad.json()["code"]) == (400, -1100)
            trade = first[0]
            assert set(trade) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker",
                                  "isBestMatch"}  # fmt: skip
            assert Decimal(trade["quoteQty"]) == Decimal(trade["price"]) * Decimal(trade["qty"])

    run(scenario())


def test_rest_failures_and_silently_skipped_frames() -> None:
    config = SimulatorConfig(**FAST, rest_fail_every=2, skip_frame_every=3)

    async def scenario() -> None:
        async with SimulatorServer(config) as sim:
            base = sim.url("binance").replace("ws://", "http://") + "/api/v3/historicalTrades"
            async with httpx.AsyncClient() as http:
                answers = [(await http.get(base, params={"symbol": "BTCUSDT"})) for _ in range(4)]
            assert [a.status_code for a in answers] == [200, 429, 200, 503]
            assert answers[1].headers["retry-after"] == "1"
            async with open_feed(sim, "binance") as ws:
                frames = [json.loads(await ws.recv())["data"] for _ in range(60)]
            assert sim.frames_skipped >= 19  # every third trade frame never left
            received: dict[str, list[int]] = {}
            for data in frames:
                received.setdefault(split_concatenated(data["s"]), []).append(data["t"])
            history = sim.feeds["binance"].history
            for symbol, ids in received.items():
                kept = {t.trade_id for t in history[symbol]}
                assert set(ids) <= kept
                span = set(range(ids[0], ids[-1] + 1))
                assert span - set(ids) and span <= kept  # holes in the feed, none in the history

    run(scenario())


def market_of(fmt: str) -> str:
    """BTC-USDT as the format's market names it (the contract on the futures host)."""
    return "BTC-USDT-PERP" if fmt == "binance-futures" else "BTC-USDT"


@pytest.mark.parametrize("fmt", wire.FORMATS)
def test_each_adapter_pages_through_the_simulated_history(fmt: str) -> None:
    """The adapter's own requests against the simulator's endpoints: two pages cover a span of
    ids in the adapter's direction, and every trade reads back as the market made it (the
    futures history by id with an API key, which the simulator asks for as Binance does)."""
    symbol = market_of(fmt)

    async def scenario() -> None:
        async with SimulatorServer(SimulatorConfig(**FAST)) as sim:
            await asyncio.sleep(1.0)
            kept = sim.feeds[fmt].history[symbol]
            wanted = kept[5:25]
            adapter = adapter_class(fmt)([symbol], rest_url=sim.url(fmt).replace("ws", "http"),
                                         api_key="a-key")  # fmt: skip
            adapter.history_limit = 12  # two pages for twenty trades
            gap = Gap(symbol, wanted[0].trade_id, wanted[-1].trade_id, 0.0,
                      after_time_us=kept[4].event_time_us)  # fmt: skip
            got, cursor = {}, None
            async with httpx.AsyncClient() as http:
                for _ in range(2):
                    request = adapter.history_request(symbol, gap, cursor)
                    body = (await http.get(request.url, params=request.params,
                                           headers=request.headers)).content  # fmt: skip
                    page = adapter.parse_history(symbol, body, now_us())
                    assert not page.parsed.dead_letters
                    got |= {int(t.trade_id): t for t in page.parsed.trades}
                    cursor = page.next_cursor
            assert {t.trade_id for t in wanted} <= set(got)
            for trade in wanted:
                truth = wire.wire_truth(fmt, trade)
                back = got[trade.trade_id]
                assert (back.symbol, back.price, back.qty, back.side, back.event_time) == (
                    symbol, truth.price, truth.qty, trade.side, truth.event_time_us)  # fmt: skip

    run(scenario())


def test_without_a_key_the_futures_history_is_the_newest_trades_only() -> None:
    """Binance's futures history by id needs an API key (the simulator answers 401 without,
    as Binance does); without one the adapter asks for the newest trades, one page."""

    async def scenario() -> None:
        async with SimulatorServer(SimulatorConfig(**FAST)) as sim:
            await asyncio.sleep(1.0)
            kept = sim.feeds["binance-futures"].history["BTC-USDT-PERP"]
            rest = sim.url("binance-futures").replace("ws", "http")
            keyless = adapter_class("binance-futures")(["BTC-USDT-PERP"], rest_url=rest)
            gap = Gap("BTC-USDT-PERP", kept[-3].trade_id, kept[-2].trade_id, 0.0)
            request = keyless.history_request("BTC-USDT-PERP", gap, None)
            assert request.url.endswith("/fapi/v1/trades") and not request.headers
            async with httpx.AsyncClient() as http:
                page = keyless.parse_history("BTC-USDT-PERP", (await http.get(
                    request.url, params=request.params)).content, now_us())  # fmt: skip
                refused = await http.get(rest + "/fapi/v1/historicalTrades",
                                         params={"symbol": "BTCUSDT", "fromId": "1"})  # fmt: skip
            ids = {int(t.trade_id) for t in page.parsed.trades}
            assert {kept[-3].trade_id, kept[-2].trade_id} <= ids and page.next_cursor is None
            assert refused.status_code == 401 and refused.json()["code"] == -2014

    run(scenario())


@pytest.mark.parametrize("fmt", wire.FORMATS)
def test_each_adapter_reads_the_simulated_klines_of_the_market(fmt: str) -> None:
    """The adapter's own kline request against the simulator: every minute of the market's
    trades, each published field equal to an independent Decimal recomputation from the
    trades (``reference_bars``)."""

    async def scenario() -> None:
        async with SimulatorServer(SimulatorConfig(max_trades=300, **FAST)) as sim:
            async with open_feed(sim, fmt):
                await sim.wait_sent(300, timeout=5.0)
            sim.feeds[fmt].market.trades_until = lambda _now: []  # the market closes
            await asyncio.sleep(3 * FAST_TICK_S)
            symbol = market_of(fmt)
            kept = list(sim.feeds[fmt].history[symbol])
            first, last = kept[0].event_time_us, kept[-1].event_time_us
            start, end = first - first % 60_000_000, last - last % 60_000_000 + 60_000_000
            adapter = adapter_class(fmt)([symbol], rest_url=sim.url(fmt).replace("ws", "http"))
            request = adapter.kline_request(symbol, start, end)
            assert request is not None
            async with httpx.AsyncClient() as http:
                body = (await http.get(request.url, params=request.params)).content
            klines = {k.minute_us: k for k in adapter.parse_klines(symbol, body)}
            expected = reference_bars(
                {"symbol": symbol, "trade_id": str(t.trade_id), "price": w.price,
                 "qty": w.qty, "side": t.side, "event_time": w.event_time_us}
                for t, w in ((t, wire.wire_truth(fmt, t)) for t in kept)
            )  # fmt: skip
            assert sorted(klines) == sorted(minute * 60_000_000 for _, minute in expected)
            for (_, minute), bar in expected.items():
                published = klines[minute * 60_000_000].published()
                assert published == {name: bar[name] for name in published}, minute
                assert {"open", "high", "low", "close", "volume"} <= set(published)

    run(scenario())


def test_the_start_line_names_every_feed_url(caplog: pytest.LogCaptureFixture) -> None:
    """It had 4 placeholders for 5 arguments once the futures feed came: a logging error
    (raised under pytest's and kopf's handlers) instead of the line."""

    async def start() -> list[str]:
        async with SimulatorServer(SimulatorConfig(symbols=["BTC-USDT"])) as sim:
            return [sim.url(fmt) for fmt in ("binance", "binance-futures", "kraken", "coinbase")]

    with caplog.at_level(logging.INFO, logger="cryptolake.producer.simulator"):
        urls = asyncio.run(start())
    (line,) = [r.getMessage() for r in caplog.records if "SYNTHETIC" in r.getMessage()]
    assert all(url in line for url in urls) and "BTC-USDT" in line
