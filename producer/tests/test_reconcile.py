"""The kline check's round against the simulator's klines and a lake without Gold yet: it waits
(no row, the same minutes next round); after a restart a market resumes after the newest
minute checked; the rows it writes have the table's schema."""

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
from deltalake import DeltaTable

from cryptolake.common.settings import LakeSettings
from cryptolake.common.tables import GOLD_KLINE_CHECKS
from cryptolake.common.timeutil import now_us
from cryptolake.producer.exchanges import adapter_class
from cryptolake.producer.klines import MINUTE_US, BarCheck, CheckStatus
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.reconcile import (
    KLINE_CHECKS_SCHEMA,
    MAX_REFETCH_IDS,
    KlineSource,
    Reconciler,
    append_checks,
    check_rows,
    refetch_ranges,
    resume_point,
)
from cryptolake.producer.recovery import PacedRest, RecoverySettings
from cryptolake.producer.simulator.server import SimulatorConfig, SimulatorServer


def test_a_round_waits_for_gold_without_losing_its_minutes(tmp_path: Path) -> None:
    async def scenario() -> tuple[list, int | None]:
        async with SimulatorServer(SimulatorConfig(rate_per_s=200.0)) as sim:
            await asyncio.sleep(0.3)
            adapter = adapter_class("kraken")(
                ["BTC-USDT"], label="simulator", rest_url=sim.url("kraken").replace("ws", "http")
            )
            rest = PacedRest(adapter, RecoverySettings(max_attempts=1), "test")
            lake = LakeSettings(table_root=str(tmp_path / "lake"))
            reconciler = Reconciler([KlineSource(adapter, rest)], lake, ProducerMetrics())
            (market,) = reconciler.markets
            market.checked_until_us = now_us() - 5 * MINUTE_US
            async with httpx.AsyncClient() as client:
                rows = await reconciler.round(client, now_us() + 10 * MINUTE_US)
            return rows, market.checked_until_us

    rows, checked_until = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert rows == []
    assert checked_until is not None and checked_until < now_us()  # not advanced
    assert not (tmp_path / "lake" / GOLD_KLINE_CHECKS).exists()


def test_after_a_restart_a_market_resumes_after_its_newest_checked_minute(tmp_path: Path) -> None:
    """Minutes of a downtime are checked too: the first round starts where the table ends."""
    lake = LakeSettings(table_root=str(tmp_path / "lake"))
    now = now_us()
    newest = now - now % MINUTE_US - 30 * MINUTE_US
    checks = [BarCheck(newest - n * MINUTE_US, CheckStatus.MATCH, (), {}, {}) for n in range(3)]
    append_checks(lake, check_rows("simulator", "BTC-USDT", checks, datetime.now(UTC)))
    assert resume_point(lake, "simulator", "BTC-USDT") == newest + MINUTE_US
    assert resume_point(lake, "simulator", "ETH-USDT") is None
    assert resume_point(LakeSettings(table_root=str(tmp_path / "none")), "x", "y") is None

    async def scenario() -> list[int | None]:
        async with SimulatorServer(SimulatorConfig(rate_per_s=200.0)) as sim:
            adapter = adapter_class("binance")(
                ["BTC-USDT", "ETH-USDT"],
                label="simulator",
                rest_url=sim.url("binance").replace("ws", "http"),
            )
            rest = PacedRest(adapter, RecoverySettings(max_attempts=1), "test")
            reconciler = Reconciler([KlineSource(adapter, rest)], lake, ProducerMetrics())
            async with httpx.AsyncClient() as client:
                await reconciler.round(client, now_us())  # no Gold yet: nothing is advanced
            return [market.checked_until_us for market in reconciler.markets]

    btc, eth = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert btc == newest + MINUTE_US
    assert eth is not None and eth > now_us() - MINUTE_US  # never checked: from the start on


def test_checks_are_appended_with_the_tables_schema(tmp_path: Path) -> None:
    lake = LakeSettings(table_root=str(tmp_path))
    minute = 1_800_000_000 * 1_000_000
    checks = [
        BarCheck(minute, CheckStatus.MATCH, (), {"open": Decimal("1.50")},
                 {"open": Decimal("1.5")}),
        BarCheck(minute + MINUTE_US, CheckStatus.MISMATCH, ("trades",), {"trades": 2},
                 {"trades": 3}),
        BarCheck(minute + 2 * MINUTE_US, CheckStatus.MISSING_IN_GOLD, ("open",), None,
                 {"open": Decimal(2)}),
    ]  # fmt: skip
    at = datetime(2027, 1, 15, 8, 10, tzinfo=UTC)
    append_checks(lake, check_rows("simulator", "BTC-USD", checks, at))
    table = DeltaTable(lake.table_uri(GOLD_KLINE_CHECKS))
    assert table.to_pyarrow_table().schema.names == KLINE_CHECKS_SCHEMA.names
    rows = table.to_pyarrow_table().sort_by("minute").to_pylist()
    assert [(r["status"], r["mismatched"], r["gold"], r["exchange_kline"]) for r in rows] == [
        ("match", [], '{"open":"1.50"}', '{"open":"1.5"}'),
        ("mismatch", ["trades"], '{"trades":"2"}', '{"trades":"3"}'),
        ("missing_in_gold", ["open"], None, '{"open":"2"}'),
    ]
    assert rows[0]["minute"] == datetime.fromtimestamp(minute / 1e6, UTC)
    assert {r["check_date"].isoformat() for r in rows} == {"2027-01-15"}


def _bar(low: int | None, high: int | None, trades: int, complete: bool | None = False) -> dict:
    return {"min_trade_id": low, "max_trade_id": high, "trades": trades, "complete": complete}


def _short(status: CheckStatus, trades: int | None = None) -> BarCheck:
    exchange = None if trades is None else {"trades": trades}
    return BarCheck(0, status, ("trades",), None, exchange)


def test_a_short_minute_asks_again_for_the_ids_between_its_neighbours() -> None:
    mismatch = _short(CheckStatus.MISMATCH, trades=100)
    # No hole inside (ids 120..169, 50 trades): only the edges, bounded by the neighbours.
    assert refetch_ranges(mismatch, _bar(120, 169, 50), _bar(1, 99, 99), _bar(200, 250, 51)) == [
        (100, 119), (170, 199)]  # fmt: skip
    # A hole inside: the whole span between the neighbours.
    assert refetch_ranges(mismatch, _bar(120, 169, 40), _bar(1, 99, 99), None) == [(100, 229)]
    # No neighbour: the exchange's count bounds each side (50 short: ids 70..119, 170..219).
    assert refetch_ranges(mismatch, _bar(120, 169, 50), None, None) == [(70, 119), (170, 219)]
    # Without a published count (Coinbase) nothing bounds the open side.
    assert refetch_ranges(_short(CheckStatus.MISMATCH), _bar(120, 169, 50), None,
                          _bar(170, 180, 11)) == []  # fmt: skip
    # No bar at all: the ids between the neighbours, when both are known.
    missing = _short(CheckStatus.MISSING_IN_GOLD, trades=7)
    assert refetch_ranges(missing, None, _bar(1, 99, 99), _bar(107, 120, 14)) == [(100, 106)]
    assert refetch_ranges(missing, None, None, _bar(107, 120, 14)) == []


def test_nothing_is_asked_when_ids_cannot_be_missing_or_bounded() -> None:
    mismatch = _short(CheckStatus.MISMATCH, trades=100)
    neighbours = (_bar(1, 99, 99), _bar(200, 250, 51))
    # Complete: every id is there, the difference is not a missing trade.
    assert refetch_ranges(mismatch, _bar(100, 199, 100, complete=True), *neighbours) == []
    assert refetch_ranges(mismatch, _bar(None, None, 100, None), *neighbours) == []  # no ids
    for status in (CheckStatus.MATCH, CheckStatus.MISSING_AT_EXCHANGE):
        assert refetch_ranges(_short(status, 100), _bar(120, 169, 50), *neighbours) == []
    # A wrong bound never starts a fetch of millions of trades.
    huge = (_bar(1, 99, 99), _bar(10**9, 10**9, 1))
    assert refetch_ranges(mismatch, _bar(120, 169, 40), *huge) == []
    assert MAX_REFETCH_IDS < 10**9
