"""Time conversions on the hot path: exchange timestamps → epoch microseconds UTC."""

from __future__ import annotations

import time
from calendar import timegm
from functools import lru_cache


def now_us() -> int:
    return time.time_ns() // 1_000


@lru_cache(maxsize=64)
def _day_start_us(date_text: str) -> int:
    year, month, day = int(date_text[0:4]), int(date_text[5:7]), int(date_text[8:10])
    if not (1 <= month <= 12 and 1 <= day <= 31) or date_text[7] != "-":
        raise ValueError(f"bad date {date_text!r}")
    return timegm((year, month, day, 0, 0, 0)) * 1_000_000


def rfc3339_to_us(text: str) -> int:
    """``2023-02-09T20:19:35.39625135Z`` → epoch µs (fraction truncated to µs; Z or +00:00 only).

    Raises ValueError on anything else, so callers can classify the frame.
    """
    if len(text) < 20 or text[10] != "T" or text[4] != "-" or text[13] != ":":
        raise ValueError(f"not an RFC 3339 UTC timestamp: {text!r}")
    if text.endswith("Z"):
        body = text[:-1]
    elif text.endswith("+00:00"):
        body = text[:-6]
    else:
        raise ValueError(f"timestamp {text!r} is not in UTC")
    clock, _, fraction = body[11:].partition(".")
    hours, minutes, seconds = clock.split(":")
    if not (fraction.isdigit() or fraction == ""):
        raise ValueError(f"bad fraction in timestamp {text!r}")
    hour, minute, second = int(hours), int(minutes), int(seconds)
    if not (0 <= hour < 24 and 0 <= minute < 60 and 0 <= second <= 60):
        raise ValueError(f"bad clock in timestamp {text!r}")
    micros = int((fraction + "000000")[:6])
    return _day_start_us(body[:10]) + (hour * 3600 + minute * 60 + second) * 1_000_000 + micros


def us_to_rfc3339(us: int, digits: int = 6) -> str:
    """Epoch µs → ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (``digits`` fraction digits, 0 to 9)."""
    seconds, micros = divmod(us, 1_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if digits == 0:
        return stamp + "Z"
    return f"{stamp}.{(f'{micros:06d}' + '000')[:digits]}Z"
