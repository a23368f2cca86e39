"""Replay Binance's public trade dumps into Kafka as trade v1 (``exchange=binance``).

The daily files are ``SYMBOL-trades-YYYY-MM-DD.csv`` (or ``.zip`` holding it) with the columns
trade id, price, qty, quote qty, time, is-buyer-maker, is-best-match; recent files have a header
row, older ones none; time is in milliseconds in older files and microseconds in newer ones.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from cryptolake.common.symbols import canonical_symbol, split_concatenated
from cryptolake.common.timeutil import now_us
from cryptolake.common.trade import DeadLetter, RejectReason, Trade, TradeRejected, make_trade
from cryptolake.producer.kafka_sink import KafkaSink, ensure_topics
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.settings import ProducerSettings

log = logging.getLogger(__name__)

_DUMP_NAME = re.compile(r"(?P<pair>[A-Z0-9]+)-trades-\d{4}-\d{2}(?:-\d{2})?", re.IGNORECASE)
# 10^14 µs is 1973; 10^14 ms is year 5138: one threshold tells the two units apart.
_MICROS_THRESHOLD = 100_000_000_000_000

Pace = Literal["full", "recorded"]


class ReplayError(ValueError):
    """The dump cannot be read at all (wrong name, unreadable archive); says what to fix."""


def symbol_from_filename(path: Path) -> str:
    """``BTCUSDT-trades-2024-01-01.csv`` → ``BTC-USDT``."""
    match = _DUMP_NAME.match(path.name)
    if match is None:
        raise ReplayError(
            f"{path.name}: not a Binance trade dump name (SYMBOL-trades-YYYY-MM-DD.csv|zip); "
            "pass --symbol to name the pair"
        )
    symbol = split_concatenated(match["pair"])
    if symbol is None:
        raise ReplayError(
            f"{path.name}: cannot split {match['pair']!r} into base and quote; "
            "pass --symbol BASE-QUOTE"
        )
    return symbol


def time_to_us(raw: str) -> int:
    """Dump time (ms in older files, µs in newer ones) → epoch µs."""
    value = int(raw)
    return value if value >= _MICROS_THRESHOLD else value * 1000


def parse_dump_row(row: list[str], symbol: str, ingest_time: int) -> Trade:
    """One CSV row → Trade; raises TradeRejected with the reason.

    Row: ``1000000001,42000.01000000,0.00100000,42.00001000,1704067200123,True,True``
    (id, price, qty, quote qty, time, is_buyer_maker, is_best_match).
    """
    if len(row) < 6:
        raise TradeRejected(RejectReason.MISSING_FIELD, f"{len(row)} columns, need at least 6")
    trade_id, price, qty, _quote_qty, raw_time, buyer_maker = row[:6]
    try:
        event_time = time_to_us(raw_time)
    except ValueError as exc:
        raise TradeRejected(
            RejectReason.BAD_TIMESTAMP, f"time {raw_time!r} is not an integer"
        ) from exc
    maker = buyer_maker.strip().lower()
    if maker not in ("true", "false"):
        raise TradeRejected(RejectReason.BAD_SIDE, f"is_buyer_maker {buyer_maker!r}")
    return make_trade(
        exchange="binance",
        symbol=symbol,
        trade_id=trade_id.strip(),
        price=price.strip(),
        qty=qty.strip(),
        # The buyer was the resting order, so the taker sold.
        side="sell" if maker == "true" else "buy",
        event_time=event_time,
        ingest_time=ingest_time,
    )


def _is_header(row: list[str]) -> bool:
    return bool(row) and not row[0].strip().isdigit()


@dataclass
class ReplayItem:
    trade: Trade | None
    dead_letter: DeadLetter | None


def _open_texts(path: Path) -> Iterator[IO[str]]:
    if path.suffix.lower() == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise ReplayError(f"{path}: not a readable zip archive ({exc})") from exc
        with archive:
            members = [name for name in archive.namelist() if name.lower().endswith(".csv")]
            if not members:
                raise ReplayError(f"{path}: the archive holds no .csv file")
            for name in members:
                with archive.open(name) as raw:
                    yield io.TextIOWrapper(raw, encoding="utf-8", newline="")
    else:
        with path.open(encoding="utf-8", newline="") as text:
            yield text


def read_dump(path: Path, symbol: str | None = None) -> Iterator[ReplayItem]:
    """Every row of one dump file as a trade or a dead letter (bad rows never stop it)."""
    canonical = canonical_symbol(symbol) if symbol else symbol_from_filename(path)
    for text in _open_texts(path):
        for line_no, row in enumerate(csv.reader(text), start=1):
            if line_no == 1 and _is_header(row):
                continue
            if not row:
                continue
            ingest = now_us()
            try:
                yield ReplayItem(parse_dump_row(row, canonical, ingest), None)
            except TradeRejected as exc:
                raw = ",".join(row)
                detail = f"{path.name} line {line_no}: {exc.detail}"
                yield ReplayItem(None, DeadLetter("binance", exc.reason, detail, raw, ingest))


class Pacer:
    """Sleeps so trades go out at their recorded pace (times ``speed``)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.first_event: int | None = None
        self.started = 0.0

    def wait_for(self, event_time: int) -> None:
        if self.first_event is None:
            self.first_event, self.started = event_time, time.monotonic()
            return
        due = self.started + (event_time - self.first_event) / 1e6 / self.speed
        delay = due - time.monotonic()
        if delay > 0.001:
            time.sleep(delay)


@dataclass
class ReplaySummary:
    files: int
    rows: int
    trades: int
    dlq: int
    delivered: int
    failed: int
    undelivered: int
    seconds: float


def run_replay(
    settings: ProducerSettings,
    files: list[Path],
    *,
    symbol: str | None = None,
    pace: Pace = "full",
    speed: float = 1.0,
) -> ReplaySummary:
    """Publish every file's trades (bad rows to the DLQ); flush and report at the end."""
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise ReplayError(f"no such file: {', '.join(missing)}")
    ensure_topics(settings)
    metrics = ProducerMetrics()
    sink = KafkaSink(settings, metrics)
    started = time.monotonic()
    next_report = started + settings.status_interval_s
    rows = trades = dlq = 0
    for path in files:
        pacer = Pacer(speed) if pace == "recorded" else None
        log.info("replay: %s", path)
        for item in read_dump(path, symbol):
            rows += 1
            if item.trade is not None:
                if pacer is not None:
                    pacer.wait_for(item.trade.event_time)
                trades += 1
                sink.publish_trades((item.trade,))
            elif item.dead_letter is not None:
                dlq += 1
                metrics.dlq.labels(
                    exchange="binance", protocol="dump", reason=str(item.dead_letter.reason)
                ).inc()
                sink.publish_dead_letters((item.dead_letter,))
            if rows % 1000 == 0:
                sink.serve()
                now = time.monotonic()
                if now >= next_report:
                    log.info(
                        "replay: %d rows, %d trades (%.0f/s), %d to DLQ",
                        rows,
                        trades,
                        trades / (now - started),
                        dlq,
                    )
                    next_report = now + settings.status_interval_s
    undelivered = sink.flush(settings.flush_timeout_s)
    summary = ReplaySummary(
        files=len(files),
        rows=rows,
        trades=trades,
        dlq=dlq,
        delivered=sink.delivered,
        failed=sink.failed,
        undelivered=undelivered,
        seconds=time.monotonic() - started,
    )
    log.info(
        "replay done: %d files, %d rows → %d trades acknowledged, %d to DLQ, %d failed, "
        "%d undelivered, in %.1f s",
        summary.files,
        summary.rows,
        summary.delivered,
        summary.dlq,
        summary.failed,
        summary.undelivered,
        summary.seconds,
    )
    return summary
