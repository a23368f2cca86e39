"""Query parameters shared by the routes, parsed and bounded (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptolake.api.errors import bad_parameter

# Before this, no crypto exchange traded; after it, a typo.
_EARLIEST = datetime(2009, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def parse_time(parameter: str, text: str | None) -> datetime | None:
    """ISO-8601 (``2026-11-24T10:00:00Z``; no offset means UTC) or epoch milliseconds."""
    if text is None or text == "":
        return None
    value: datetime
    if text.lstrip("-").isdigit():
        try:
            value = datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError) as error:
            raise bad_parameter(parameter, f"{text!r} is out of range as epoch ms") from error
    else:
        try:
            value = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError as error:
            raise bad_parameter(
                parameter, f"{text!r} is neither ISO-8601 (2026-11-24T10:00:00Z) nor epoch ms"
            ) from error
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
    if not _EARLIEST <= value < _LATEST:
        raise bad_parameter(parameter, f"{text!r} is outside 2009-01-01 … 2100-01-01")
    return value.astimezone(UTC)


def parse_range(start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    start_at, end_at = parse_time("start", start), parse_time("end", end)
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise bad_parameter("end", "must be after start")
    return start_at, end_at
