"""Dead letters as the producer builds them: bounded whatever arrived, so that one can always be
produced to ``crypto.trades.dlq`` (a 16 MiB WebSocket frame never becomes a 16 MiB message that
Kafka refuses).

The raw frame (or bad trade element, or dump line) is kept as its first ``RAW_PREFIX_CHARS``
characters, the prefix silver's quarantine keeps of an oversized value; ``raw_length`` is the
size of the whole raw in bytes. The detail is cut to
``DETAIL_CHARS``. Both are made encodable as UTF-8 (a lone surrogate becomes ``?``), so
``DeadLetter.to_json`` cannot fail either.
"""

from __future__ import annotations

from typing import Final

from cryptolake.common.trade import RAW_PREFIX_CHARS, DeadLetter, RejectReason

DETAIL_CHARS: Final = 500
# The largest DLQ value: every character of raw and detail (cut note included) escaped as
# \uXXXX, plus the other fields. Kept below MAX_VALUE_BYTES, the size of one trade message.
MAX_DEAD_LETTER_BYTES: Final = 6 * (RAW_PREFIX_CHARS + DETAIL_CHARS) + 300


def _utf8(text: str) -> str:
    return text.encode("utf-8", errors="replace").decode("utf-8")


def dead_letter(
    source: str,
    reason: RejectReason,
    detail: str,
    raw: str | bytes,
    ingest_time: int,
    *,
    raw_size: int | None = None,
) -> DeadLetter:
    """A dead letter with ``raw`` and ``detail`` cut to their bounds. Pass ``raw_size`` (bytes)
    when ``raw`` is already only the beginning of something larger, as an over-long dump line."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    if raw_size is None:
        raw_size = len(raw) if isinstance(raw, bytes) else len(text.encode(errors="replace"))
    return DeadLetter(
        source, reason, _utf8(detail[:DETAIL_CHARS]), _utf8(text[:RAW_PREFIX_CHARS]), ingest_time,
        raw_length=raw_size,
    )  # fmt: skip
