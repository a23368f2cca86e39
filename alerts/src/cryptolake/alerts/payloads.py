"""The body posted for a firing, in each webhook's documented shape.

- Discord (Execute Webhook): ``content`` ≤ 2,000 characters and ``embeds`` (≤ 10), each with a
  ``title`` ≤ 256, a ``description`` ≤ 4,096, ``fields`` (≤ 25; name ≤ 256, value ≤ 1,024) and an
  ISO 8601 ``timestamp``.
- Slack (incoming webhook): ``text`` (the notification's fallback) and Block Kit ``blocks``: a
  ``section`` with ``mrkdwn`` text ≤ 3,000 and ``fields`` (≤ 10, each ≤ 2,000).
- JSON: the firing's own fields, decimals as strings (exact).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from cryptolake.alerts.evaluate import Firing
from cryptolake.common.alert_rules import AlertKind, PayloadFormat

DISCORD_CONTENT_MAX: Final = 2000
DISCORD_TITLE_MAX: Final = 256
DISCORD_FIELD_VALUE_MAX: Final = 1024
SLACK_TEXT_MAX: Final = 3000
SLACK_FIELD_MAX: Final = 2000
# Discord embed colour: amber.
_COLOUR: Final = 0xF5A623


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def headline(firing: Firing) -> str:
    market = f"{firing.symbol} on {firing.exchange}"
    if firing.kind is AlertKind.VOLATILITY:
        return (
            f"{market}: volatility {firing.value.normalize():f}% over "
            f"{firing.window_minutes} min (threshold {firing.threshold:f}%)"
        )
    if firing.kind is AlertKind.PRICE_CHANGE:
        return (
            f"{market}: price moved {firing.value.normalize():f}% in "
            f"{firing.window_minutes} min (threshold {firing.threshold:f}%)"
        )
    return f"{market}: price crossed {firing.threshold:f} (close {firing.value.normalize():f})"


def _facts(firing: Firing) -> list[tuple[str, str]]:
    return [
        ("Rule", firing.rule),
        ("Market", f"{firing.exchange}:{firing.symbol}"),
        ("Value", f"{firing.value.normalize():f}"),
        ("Threshold", f"{firing.threshold:f}"),
        ("Window", f"{firing.window_minutes} min ending {firing.window_end.isoformat()}"),
    ]


def json_body(firing: Firing) -> dict[str, Any]:
    """The firing's own fields (and its id), times ISO 8601, decimals as exact strings."""
    body: dict[str, Any] = {"alert_id": firing.alert_id}
    for field in fields(firing):
        value = getattr(firing, field.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Decimal | AlertKind):
            value = str(value)
        body[field.name] = value
    return body


def discord_body(firing: Firing) -> dict[str, Any]:
    text = headline(firing)
    return {
        "content": _cut(text, DISCORD_CONTENT_MAX),
        "embeds": [
            {
                "title": _cut(f"CryptoLake alert: {firing.rule}", DISCORD_TITLE_MAX),
                "description": _cut(text, 4096),
                "color": _COLOUR,
                "fields": [
                    {"name": name, "value": _cut(value, DISCORD_FIELD_VALUE_MAX), "inline": True}
                    for name, value in _facts(firing)
                ],
                "timestamp": firing.window_end.isoformat(),
            }
        ],
        # Mentions in a rule name never ping anyone.
        "allowed_mentions": {"parse": []},
    }


def slack_body(firing: Firing) -> dict[str, Any]:
    text = headline(firing)
    return {
        "text": _cut(text, SLACK_TEXT_MAX),
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut(f"*{text}*", SLACK_TEXT_MAX)},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": _cut(f"*{name}*\n{value}", SLACK_FIELD_MAX)}
                    for name, value in _facts(firing)
                ],
            },
        ],
    }


def body(fmt: PayloadFormat, firing: Firing) -> dict[str, Any]:
    return {
        PayloadFormat.DISCORD: discord_body,
        PayloadFormat.SLACK: slack_body,
        PayloadFormat.JSON: json_body,
    }[fmt](firing)
