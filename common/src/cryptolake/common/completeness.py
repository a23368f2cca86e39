"""Whether a 1-minute candle holds all its market's trades, from the trade id bounds of it and
of its neighbours: the one rule, shared by the jobs (which write ``complete`` into
gold/candles_1m) and the API's sample lakehouse."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

# Trade ids that count (exchanges number each market's trades 1, 2, 3, ...): digits that fit a
# BIGINT. Any other id leaves its bar's id bounds, and so its completeness, unknown.
COUNTED_ID: Final = "^[0-9]{1,18}$"
_COUNTED: Final = re.compile(COUNTED_ID)


def id_bounds(trade_ids: Iterable[str]) -> tuple[int | None, int | None]:
    """The lowest and highest of a bar's trade ids as numbers; (None, None) if one does not
    count (``COUNTED_ID``)."""
    numbers = [int(i) if _COUNTED.match(i) else None for i in trade_ids]
    if not numbers or None in numbers:
        return None, None
    counted = [n for n in numbers if n is not None]
    return min(counted), max(counted)


def mark_complete(
    bars: Sequence[dict[str, Any]], *, from_start: bool, to_end: bool
) -> dict[int, bool | None]:
    """Whether bars of one market (consecutive bars, sorted by minute) hold all their trades.
    Exchanges number a market's trades 1, 2, 3, ..., so a bar is complete when its ids run
    without a hole (``trades`` = max - min + 1: silver's ids are unique) and join the bars
    around it: the previous bar's max + 1 = its min, and its max + 1 = the next bar's min when
    there is a next bar yet. None where an id bound is unknown (an id that is not a number).

    Bars only there as neighbours are not judged: the first unless it is the market's first
    bar (``from_start``: incomplete, the trades before it were not seen), the last unless it
    is the market's newest (``to_end``). Returns index → flag of the bars judged."""
    flags: dict[int, bool | None] = {}
    for index, bar in enumerate(bars):
        first, last = index == 0, index == len(bars) - 1
        if (first and not from_start) or (last and not to_end):
            continue
        low, high = bar["min_trade_id"], bar["max_trade_id"]
        previous: Any = None if first else bars[index - 1]["max_trade_id"]
        following = None if last else bars[index + 1]["min_trade_id"]
        bounds = [low, high, *([] if first else [previous]), *([] if last else [following])]
        flags[index] = None if None in bounds else (
            not first
            and previous + 1 == low
            and bar["trades"] == high - low + 1
            and (last or high + 1 == following)
        )  # fmt: skip
    return flags
