"""CoinGecko's /coins/markets rows as market snapshots: exact decimals from the wire, and a
reason for every hostile row."""

from decimal import Decimal

import orjson
import pytest

from cryptolake.common.market_snapshot import (
    MarketSnapshot,
    SnapshotRejected,
    decode_exact,
    snapshot_from_coingecko,
)
from cryptolake.common.trade import RejectReason

NOW_US = 1_711_455_601_000_000
# A recorded row of https://api.coingecko.com/api/v3/coins/markets?vs_currency=usd (trimmed).
FRAME = (b'[{"id":"bitcoin","symbol":"btc","name":"Bitcoin","image":"https://x/btc.png",'
         b'"current_price":67187.33,"market_cap":1317802988326,"market_cap_rank":1,'
         b'"total_volume":31260929299,"high_24h":67500,"low_24h":64600.1,'
         b'"price_change_24h":2356.77,"price_change_percentage_24h":3.63727,'
         b'"last_updated":"2024-03-26T12:20:00.123Z"},'
         b'{"id":"pepe","symbol":"pepe","name":"Pepe","current_price":8.12e-06,'
         b'"market_cap":null,"total_volume":0.1,"price_change_percentage_24h":-12.5,'
         b'"last_updated":"2024-03-26T12:19:58Z"}]')  # fmt: skip


def snapshots(body: bytes) -> list[MarketSnapshot]:
    return [snapshot_from_coingecko(row, "coingecko", NOW_US) for row in decode_exact(body)]


def test_a_recorded_frame_keeps_every_digit_the_source_sent():
    bitcoin, pepe = snapshots(FRAME)
    assert (bitcoin.key, bitcoin.symbol, bitcoin.price_usd) == (
        "coingecko:bitcoin",
        "BTC",
        Decimal("67187.33"),
    )
    assert bitcoin.market_cap_usd == Decimal(1317802988326)
    assert bitcoin.change_24h_pct == Decimal("3.63727")
    assert bitcoin.last_updated == 1_711_455_600_123_000
    assert pepe.price_usd == Decimal("0.00000812") and pepe.market_cap_usd is None
    assert orjson.loads(pepe.to_json()) == {
        "schema_version": 1,
        "source": "coingecko",
        "coin_id": "pepe",
        "symbol": "PEPE",
        "name": "Pepe",
        "price_usd": "0.00000812",
        "market_cap_usd": None,
        "volume_24h_usd": "0.1",
        "change_24h_pct": "-12.5",
        "last_updated": 1_711_455_598_000_000,
        "ingest_time": NOW_US,
    }


def row(**changes: object) -> dict:
    base = {
        "id": "bitcoin",
        "symbol": "btc",
        "name": "Bitcoin",
        "current_price": Decimal("1"),
        "last_updated": "2024-03-26T12:20:00Z",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v != "<absent>"}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (row(current_price="abc"), RejectReason.BAD_TYPE),
        (row(current_price="67187.33"), RejectReason.BAD_TYPE),  # a string is never guessed at
        (row(current_price=None), RejectReason.MISSING_FIELD),
        (row(current_price="<absent>"), RejectReason.MISSING_FIELD),
        (row(current_price=True), RejectReason.BAD_TYPE),
        (row(current_price={"usd": 1}), RejectReason.BAD_TYPE),
        (row(current_price=Decimal("-1")), RejectReason.BAD_PRICE),
        (row(current_price=Decimal("1e25")), RejectReason.BAD_PRICE),
        (row(current_price=Decimal("1e-19")), RejectReason.BAD_PRICE),
        (row(market_cap=Decimal("-5")), RejectReason.BAD_PRICE),
        (row(id="Bit Coin"), RejectReason.MISSING_FIELD),
        (row(id=7), RejectReason.MISSING_FIELD),
        (row(symbol="b$c"), RejectReason.BAD_SYMBOL),
        (row(name="x" * 101), RejectReason.BAD_TYPE),
        (row(last_updated="yesterday"), RejectReason.BAD_TIMESTAMP),
        (row(last_updated="2024-03-26T12:20:00+02:00"), RejectReason.BAD_TIMESTAMP),
        (row(last_updated="2099-01-01T00:00:00Z"), RejectReason.BAD_TIMESTAMP),
        (row(last_updated="<absent>"), RejectReason.MISSING_FIELD),
        ([1, 2], RejectReason.BAD_TYPE),
        ("bitcoin", RejectReason.BAD_TYPE),
    ],
)
def test_a_hostile_row_is_refused_with_its_reason(bad, reason):
    with pytest.raises(SnapshotRejected) as raised:
        snapshot_from_coingecko(bad, "coingecko", NOW_US)
    assert raised.value.reason is reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'[{"current_price": NaN}]', RejectReason.MALFORMED_JSON),
        (b'[{"current_price": Infinity}]', RejectReason.MALFORMED_JSON),
        (b"[{", RejectReason.MALFORMED_JSON),
        (b'["\xff\xfe"]', RejectReason.BAD_ENCODING),
        (b"[" * 100_000, RejectReason.MALFORMED_JSON),
    ],
)
def test_a_hostile_body_is_refused_whole(body, reason):
    with pytest.raises(SnapshotRejected) as raised:
        decode_exact(body)
    assert raised.value.reason is reason


def test_a_negative_24h_change_is_a_move_not_an_error():
    (snapshot,) = [snapshot_from_coingecko(row(price_change_percentage_24h=Decimal("-99.9")),
                                           "coingecko", NOW_US)]  # fmt: skip
    assert snapshot.change_24h_pct == Decimal("-99.9")
