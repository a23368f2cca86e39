from decimal import Decimal

from cryptolake.common.candles import reference_bars


def trade(trade_id: str, price: str, qty: str, second: int) -> dict:
    return {"symbol": "BTC-USDT", "trade_id": trade_id, "price": price, "qty": qty, "side": "buy",
            "event_time": 1_800_000_000_000_000 + second * 1_000_000}  # fmt: skip


def test_reference_bars_order_ties_by_numeric_trade_id() -> None:
    # Same event time: "9" comes before "10" (shorter id first), whatever the input order.
    trades = [trade("10", "101", "1", 0), trade("9", "100", "3", 0), trade("11", "99", "1", 59)]
    ((key, bar),) = reference_bars(trades).items()
    assert key == ("BTC-USDT", 1_800_000_000 // 60)
    assert (bar["open"], bar["close"]) == (Decimal("100"), Decimal("99"))
    assert (bar["high"], bar["low"], bar["volume"], bar["trades"]) == (
        Decimal("101"), Decimal("99"), Decimal("5"), 3,
    )  # fmt: skip
    assert bar["vwap"] == Decimal(100 * 3 + 101 + 99) / 5


def test_reference_bars_split_minutes_and_symbols() -> None:
    other = {**trade("1", "5", "1", 0), "symbol": "ETH-USDT"}
    bars = reference_bars([trade("1", "1", "1", 0), trade("2", "2", "1", 60), other])
    assert len(bars) == 3
