"""Binance's public trade dumps, file level: names, archives, lines. The producer's ``replay``
turns their rows into trade v1 records for Kafka; the jobs' ``backfill`` loads them into the
lakehouse without a broker. Both read files through these functions.

The daily files are ``SYMBOL-trades-YYYY-MM-DD.csv`` (or ``.zip`` holding it) with the columns
trade id, price, qty, quote qty, time, is-buyer-maker, is-best-match; recent files have a header
row, older ones none; time is in milliseconds in older files and microseconds in newer ones.
Files are read as bytes, line by line, so a line that is too long or not UTF-8 is judged like
any other bad row, never decoded or held whole.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

from cryptolake.common.symbols import split_concatenated
from cryptolake.common.trade import MAX_VALUE_BYTES

_DUMP_NAME = re.compile(r"(?P<pair>[A-Z0-9]+)-trades-\d{4}-\d{2}(?:-\d{2})?", re.IGNORECASE)
# 10^14 µs is 1973; 10^14 ms is year 5138: one threshold tells the two units apart.
MICROS_THRESHOLD: Final = 100_000_000_000_000
# ASCII digits only: int() would also take " 17", "1_704" or Arabic-Indic digits.
TIME_DIGITS: Final = "[0-9]{1,18}"
_DUMP_TIME = re.compile(TIME_DIGITS)
# A row is ~70 bytes. A longer line is rejected (too_large) unparsed, as silver does with an
# oversized Kafka value, and never held whole in memory.
MAX_LINE_BYTES: Final = MAX_VALUE_BYTES
# The columns a row needs (id, price, qty, quote qty, time, is_buyer_maker); more are ignored.
MIN_COLUMNS: Final = 6


class DumpError(ValueError):
    """The dump cannot be read at all (wrong name, unreadable archive); says what to fix."""


def symbol_from_filename(path: Path) -> str:
    """``BTCUSDT-trades-2024-01-01.csv`` → ``BTC-USDT``."""
    match = _DUMP_NAME.match(path.name)
    if match is None:
        raise DumpError(
            f"{path.name}: not a Binance trade dump name (SYMBOL-trades-YYYY-MM-DD.csv|zip); "
            "pass --symbol to name the pair"
        )
    symbol = split_concatenated(match["pair"])
    if symbol is None:
        raise DumpError(
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
    return value if value >= MICROS_THRESHOLD else value * 1000


# Bytes read at once: lines are split in C, not read one by one (measured on 2M lines: 3x).
_BLOCK = 1 << 22


def _line(text: bytes, size: int, last: bytes) -> tuple[bytes, int]:
    """A line (``text``: its start; ``last``: the piece it ended with) without its ending
    (``\r`` before the ``\n`` too), cut to ``MAX_LINE_BYTES + 1`` bytes, and its whole size
    without the ending."""
    ending = len(last) - len(last.rstrip(b"\r"))
    return text[: MAX_LINE_BYTES + 1].rstrip(b"\r\n"), size - ending


def dump_lines(binary: IO[bytes]) -> Iterator[tuple[bytes, int]]:
    """Each line without its line ending, and its whole size in bytes; a line over
    ``MAX_LINE_BYTES`` comes cut to its first ``MAX_LINE_BYTES + 1`` bytes (the rest is read
    past in blocks, never held)."""
    # A line that goes on in the next block: its start, size so far and last bytes.
    head, head_size, head_end = b"", 0, b""
    while block := binary.read(_BLOCK):
        parts = block.split(b"\n")
        rest = parts.pop()  # after the block's last line ending: a line that goes on
        for index, part in enumerate(parts):
            if index == 0 and head_size:
                text = head + part[: MAX_LINE_BYTES + 1]
                yield _line(text, head_size + len(part), head_end + part)
                head, head_size, head_end = b"", 0, b""
            else:
                yield _line(part, len(part), part)
        if rest:
            head = (head + rest[: MAX_LINE_BYTES + 1])[: MAX_LINE_BYTES + 1]
            head_size += len(rest)
            head_end = (head_end + rest)[-64:]
    if head_size:
        yield _line(head, head_size, head_end)


def is_header(line: bytes) -> bool:
    """The first line names the columns (recent files) instead of holding a trade."""
    return not line.partition(b",")[0].strip().isdigit()


def row_lines(binary: IO[bytes]) -> Iterator[tuple[int, bytes, int]]:
    """(line number, line, size) of every line that holds a row: ``dump_lines`` without the
    header and empty lines."""
    for line_no, (line, size) in enumerate(dump_lines(binary), start=1):
        if line and not (line_no == 1 and is_header(line)):
            yield line_no, line, size


def open_dump(path: Path) -> Iterator[IO[bytes]]:
    """The CSV file itself, or each ``.csv`` member of a ``.zip``, opened for reading bytes."""
    if path.suffix.lower() == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise DumpError(f"{path}: not a readable zip archive ({exc})") from exc
        with archive:
            members = [name for name in archive.namelist() if name.lower().endswith(".csv")]
            if not members:
                raise DumpError(f"{path}: the archive holds no .csv file")
            for name in members:
                with archive.open(name) as binary:
                    yield binary
    else:
        with path.open("rb") as binary:
            yield binary


def missing_files(files: list[Path]) -> list[str]:
    return [str(path) for path in files if not path.is_file()]
