"""Alert rules: what to watch, when it fires, where it goes — the one definition the alerts
worker reads (``cryptolake.alerts.rules.load_rules``: a YAML file, ``CRYPTOLAKE_ALERTS_FILE``)
and the operator writes from a pipeline's ``spec.alerts``. The document:

.. code-block:: yaml

    rules:
      - name: btc-volatility
        markets: ["binance:BTC-USDT", "ETH-USDT"]   # exchange:SYMBOL or SYMBOL; none: all
        kind: volatility          # (high - low) / low over the window, in percent
        window: 5m                # 1m … 1h
        threshold: "2.5"          # percent (volatility, price_change) or a price (price_cross)
        cooldown: 15m             # no other firing of this rule and market this close
        webhook:
          format: discord         # discord | slack | json
          url_env: DISCORD_WEBHOOK_URL   # or url: https://… (keep URLs out of files you share)
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Final, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from cryptolake.common.trade import EXCHANGES, SYMBOL_PATTERN

MAX_WINDOW_MINUTES: Final = 60
MAX_COOLDOWN_MINUTES: Final = 24 * 60
# A duration as rules write it: 5m, 1h.
DURATION_PATTERN: Final = r"^\s*(\d+)\s*(m|h)\s*$"
_DURATION = re.compile(DURATION_PATTERN)
# exchange:SYMBOL, or SYMBOL for every exchange.
MARKET_PATTERN: Final = rf"^(?:([a-z-]+):)?({SYMBOL_PATTERN})$"
_MARKET = re.compile(MARKET_PATTERN)
RULE_NAME_PATTERN: Final = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class RulesError(ValueError):
    """The rules file cannot be used; the message says which rule and field."""


def minutes(value: object) -> object:
    """``"5m"``, ``"1h"`` or a number of minutes → minutes (int)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration like 5m or 1h")
        amount, unit = int(match.group(1)), match.group(2)
        return amount * 60 if unit == "h" else amount
    return value


Minutes = Annotated[int, BeforeValidator(minutes)]


class AlertKind(StrEnum):
    VOLATILITY = "volatility"  # (max high - min low) / min low over the window, percent
    PRICE_CHANGE = "price_change"  # close against the close `window` minutes before, percent
    PRICE_CROSS = "price_cross"  # the close crosses `threshold` (a price) from one bar to the next


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    BOTH = "both"


class PayloadFormat(StrEnum):
    DISCORD = "discord"
    SLACK = "slack"
    JSON = "json"


class Webhook(BaseModel):
    """Where a rule's firings are posted. The URL is a secret (a Discord or Slack webhook URL
    lets anyone post): give it in the environment (``url_env``) rather than in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: PayloadFormat = PayloadFormat.JSON
    url: SecretStr | None = None
    url_env: str | None = None

    @model_validator(mode="after")
    def _one_url(self) -> Self:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give the webhook exactly one of url or url_env")
        return self

    def resolve(self) -> str:
        """The URL itself (read from the environment for ``url_env``)."""
        if self.url is not None:
            url = self.url.get_secret_value()
        else:
            assert self.url_env is not None
            url = os.environ.get(self.url_env, "")
            if not url:
                raise RulesError(f"webhook url_env {self.url_env} is not set")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RulesError(f"webhook URL of {self.redacted_for(url)} is not http(s)://host/…")
        return url

    @staticmethod
    def redacted_for(url: str) -> str:
        """What logs and gold/alerts say about a URL: scheme, host and port, never the path
        (the token of a Discord or Slack webhook) nor a password."""
        parts = urlsplit(url)
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        return f"{parts.scheme}://{parts.hostname or '?'}{port}/…"


def _positive_finite(value: Decimal) -> Decimal:
    """A threshold gold/alerts can hold exactly: decimal(38, 12)."""
    if not value.is_finite() or value <= 0:
        raise ValueError(f"must be a positive finite number, not {value}")
    exponent = value.normalize().as_tuple().exponent
    if (isinstance(exponent, int) and exponent < -12) or value.adjusted() >= 26:
        raise ValueError(f"{value} has more than 12 decimals or 26 integer digits")
    return value


class AlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=RULE_NAME_PATTERN)
    # "exchange:SYMBOL" or "SYMBOL" (every exchange); empty: every market in Gold.
    markets: tuple[str, ...] = ()
    kind: AlertKind
    window: Minutes = Field(default=1, ge=1, le=MAX_WINDOW_MINUTES)
    threshold: Annotated[Decimal, Field(allow_inf_nan=True)]
    direction: Direction = Direction.BOTH
    cooldown: Minutes = Field(default=5, ge=0, le=MAX_COOLDOWN_MINUTES)
    webhook: Webhook

    @field_validator("threshold", mode="after")
    @classmethod
    def _threshold(cls, value: Decimal) -> Decimal:
        return _positive_finite(value)

    @field_validator("markets", mode="after")
    @classmethod
    def _markets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for market in value:
            match = _MARKET.match(market)
            if match is None:
                raise ValueError(f"{market!r} is not exchange:SYMBOL or SYMBOL (BTC-USDT)")
            exchange = match.group(1)
            if exchange is not None and exchange not in EXCHANGES:
                raise ValueError(f"{market!r}: unknown exchange (one of {', '.join(EXCHANGES)})")
        return value

    @model_validator(mode="after")
    def _cross_is_per_bar(self) -> Self:
        if self.kind is AlertKind.PRICE_CROSS and self.window != 1:
            raise ValueError("price_cross compares consecutive bars: leave window at 1m")
        return self

    def watches(self, exchange: str, symbol: str) -> bool:
        if not self.markets:
            return True
        return f"{exchange}:{symbol}" in self.markets or symbol in self.markets


class AlertRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[AlertRule, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [rule.name for rule in self.rules]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ValueError(f"rule names must be unique: {', '.join(doubled)}")
        return self

    @property
    def lookback_minutes(self) -> int:
        """Bars a round must read before a window's end to evaluate every rule."""
        return max((rule.window + 1 for rule in self.rules), default=1)
