"""Replay Binance's public trade dumps into Kafka as trade v1 (``exchange=binance``).

The daily files are ``SYMBOL-trades-YYYY-MM-DD.csv`` (or ``.zip`` holding it) with the columns
trade id, price, qty, quote qty, time, is-buyer-maker, is-best-match; recent files have a header
row, older ones none; time is in milliseconds in older files and microseconds in newer ones.
Files are read as bytes, line by line, so a line that is too long or not UTF-8 becomes a dead
letter like any other bad row.
"""

from __future__ import annotations

import logging
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal

from cryptolake.common.symbols import canonical_symbol, split_concatenated
from cryptolake.common.timeutil import now_us
from cryptolake.common.trade import (
    MAX_VALUE_BYTES,
    DeadLetter,
    RejectReason,
    Trade,
    TradeRejected,
    make_trade,
)
from cryptolake.producer.dead_letters import dead_letter
from cryptolake.producer.kafka_sink import KafkaSink, ensure_topics
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.settings import ProducerSettings

log = logging.getLogger(__name__)

_DUMP_NAME = re.compile(r"(?P<pair>[A-Z0-9]+)-trades-\d{4}-\d{2}(?:-\d{2})?", re.IGNORECASE)
# 10^14 µs is 1973; 10^14 ms is year 5138: one threshold tells the two units apart.
_MICROS_THRESHOLD = 100_000_000_000_000
# ASCII digits only: int() would also take " 17", "1_704" or Arabic-Indic digits.
_DUMP_TIME = re.compile(r"[0-9]{1,18}")
# A row is ~70 bytes. A longer line is dead-lettered (too_large) unparsed, as silver does with
# an oversized Kafka value, and never held whole in memory.
MAX_LINE_BYTES: Final = MAX_VALUE_BYTES

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
    """Dump time (ms in older files, µs in newer ones) → epoch µs; ValueError unless it is
    1-18 ASCII digits."""
    if _DUMP_TIME.fullmatch(raw) is None:
        raise ValueError(f"time {raw!r:.80} is not an integer of 1-18 digits")
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
        event_time = time_to_us(raw_time.strip())
    except ValueError as exc:
        raise TradeRejected(RejectReason.BAD_TIMESTAMP, str(exc)) from exc
    maker = buyer_maker.strip().lower()
    if maker not in ("true", "false"):
        raise TradeRejected(RejectReason.BAD_SIDE, f"is_buyer_maker {buyer_maker!r:.80}")
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


def parse_dump_line(line: bytes, symbol: str, ingest_time: int) -> Trade:
    """One line of a dump (without its line ending) → Trade; raises TradeRejected.

    Binance writes plain comma-separated fields, never quoted, so a line is split at its commas.
    """
    if len(line) > MAX_LINE_BYTES:
        raise TradeRejected(RejectReason.TOO_LARGE, f"the line is over {MAX_LINE_BYTES} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TradeRejected(
            RejectReason.BAD_ENCODING, f"not UTF-8 at byte {exc.start}: {exc.reason}"
        ) from exc
    return parse_dump_row(text.split(","), symbol, ingest_time)


def dump_lines(binary: IO[bytes]) -> Iterator[tuple[bytes, int]]:
    """Each line without its line ending, and its whole size in bytes; a line over
    ``MAX_LINE_BYTES`` comes cut to its first ``MAX_LINE_BYTES + 1`` bytes (the rest is read
    past in chunks, never held)."""
    while line := binary.readline(MAX_LINE_BYTES + 1):
        size, tail = len(line), line
        while not tail.endswith(b"\n") and (tail := binary.readline(65_536)):
            size += len(tail)
        ending = len(tail) - len(tail.rstrip(b"\r\n"))
        yield line.rstrip(b"\r\n"), size - ending


def _is_header(line: bytes) -> bool:
    return not line.partition(b",")[0].strip().isdigit()


@dataclass
class ReplayItem:
    trade: Trade | None
    dead_letter: DeadLetter | None


def dump_items(binary: IO[bytes], name: str, symbol: str) -> Iterator[ReplayItem]:
    """Every line of one dump as a trade or a dead letter (bad lines never stop it); ``name``
    is the file's, for the dead letters' detail."""
    for line_no, (line, size) in enumerate(dump_lines(binary), start=1):
        if not line or (line_no == 1 and _is_header(line)):
            continue
        ingest = now_us()
        try:
            yield ReplayItem(parse_dump_line(line, symbol, ingest), None)
        except TradeRejected as exc:
            detail = f"{name} line {line_no}: {exc.detail}"
            raw_size = size if len(line) > MAX_LINE_BYTES else None
            letter = dead_letter("binance", exc.reason, detail, line, ingest, raw_size=raw_size)
            yield ReplayItem(None, letter)


def _open_binaries(path: Path) -> Iterator[IO[bytes]]:
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
                with archive.open(name) as binary:
                    yield binary
    else:
        with path.open("rb") as binary:
            yield binary


def read_dump(path: Path, symbol: str | None = None) -> Iterator[ReplayItem]:
    """Every line of one dump file as a trade or a dead letter (bad lines never stop it)."""
    canonical = canonical_symbol(symbol) if symbol else symbol_from_filename(path)
    for binary in _open_binaries(path):
        yield from dump_items(binary, path.name, canonical)


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
