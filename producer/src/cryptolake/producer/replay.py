"""Replay Binance's public trade dumps into Kafka as trade v1 (``exchange=binance``); the file
format and line reading are ``cryptolake.common.dumps``'. A bad line becomes a dead letter,
never stops the replay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from cryptolake.common.dumps import (
    MAX_LINE_BYTES,
    MIN_COLUMNS,
    DumpError,
    missing_files,
    open_dump,
    row_lines,
    symbol_from_filename,
    time_to_us,
)
from cryptolake.common.symbols import canonical_symbol
from cryptolake.common.timeutil import now_us
from cryptolake.common.trade import DeadLetter, RejectReason, Trade, TradeRejected, make_trade
from cryptolake.producer.dead_letters import dead_letter
from cryptolake.producer.kafka_sink import KafkaSink, ensure_topics
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.settings import ProducerSettings

log = logging.getLogger(__name__)

Pace = Literal["full", "recorded"]


def parse_dump_row(row: list[str], symbol: str, ingest_time: int) -> Trade:
    """One CSV row → Trade; raises TradeRejected with the reason.

    Row: ``1000000001,42000.01000000,0.00100000,42.00001000,1704067200123,True,True``
    (id, price, qty, quote qty, time, is_buyer_maker, is_best_match).
    """
    if len(row) < MIN_COLUMNS:
        raise TradeRejected(
            RejectReason.MISSING_FIELD, f"{len(row)} columns, need at least {MIN_COLUMNS}"
        )
    trade_id, price, qty, _quote_qty, raw_time, buyer_maker = row[:MIN_COLUMNS]
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


@dataclass
class ReplayItem:
    trade: Trade | None
    dead_letter: DeadLetter | None


def dump_items(binary: IO[bytes], name: str, symbol: str) -> Iterator[ReplayItem]:
    """Every line of one dump as a trade or a dead letter (bad lines never stop it); ``name``
    is the file's, for the dead letters' detail."""
    for line_no, line, size in row_lines(binary):
        ingest = now_us()
        try:
            yield ReplayItem(parse_dump_line(line, symbol, ingest), None)
        except TradeRejected as exc:
            detail = f"{name} line {line_no}: {exc.detail}"
            raw_size = size if len(line) > MAX_LINE_BYTES else None
            letter = dead_letter("binance", exc.reason, detail, line, ingest, raw_size=raw_size)
            yield ReplayItem(None, letter)


def read_dump(path: Path, symbol: str | None = None) -> Iterator[ReplayItem]:
    """Every line of one dump file as a trade or a dead letter (bad lines never stop it)."""
    canonical = canonical_symbol(symbol) if symbol else symbol_from_filename(path)
    for binary in open_dump(path):
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
    missing = missing_files(files)
    if missing:
        raise DumpError(f"no such file: {', '.join(missing)}")
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
