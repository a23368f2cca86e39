"""The bodies posted, against the documented fields and limits of Discord's Execute Webhook
(content ≤ 2,000; embed title ≤ 256, description ≤ 4,096, ≤ 25 fields of name ≤ 256 and value
≤ 1,024, ISO 8601 timestamp) and Slack's incoming webhooks (text; Block Kit section with mrkdwn
text ≤ 3,000 and ≤ 10 fields of ≤ 2,000)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from cryptolake.alerts.evaluate import Firing
from cryptolake.alerts.payloads import body, discord_body, json_body, slack_body
from cryptolake.common.alert_rules import AlertKind, PayloadFormat

DISCORD_TOP = {
    "content",
    "username",
    "avatar_url",
    "tts",
    "embeds",
    "allowed_mentions",
    "components",
    "files",
    "payload_json",
    "attachments",
    "flags",
    "thread_name",
}
DISCORD_EMBED = {
    "title",
    "type",
    "description",
    "url",
    "timestamp",
    "color",
    "footer",
    "image",
    "thumbnail",
    "video",
    "provider",
    "author",
    "fields",
}
END = datetime(2026, 12, 7, 12, 5, tzinfo=UTC)


def firings() -> list[Firing]:
    long_name = "x" * 63
    return [
        Firing(
            "spike",
            AlertKind.VOLATILITY,
            "binance",
            "BTC-USDT",
            5,
            END,
            Decimal("2.500000000000"),
            Decimal("2"),
        ),
        Firing(
            long_name,
            AlertKind.PRICE_CHANGE,
            "kraken",
            "ETH-USD",
            60,
            END,
            Decimal("-12.345678901234"),
            Decimal("10"),
        ),
        Firing(
            "level",
            AlertKind.PRICE_CROSS,
            "coinbase",
            "BTC-USD",
            1,
            END,
            Decimal("100000.000000000000"),
            Decimal("100000"),
        ),
    ]


@pytest.mark.parametrize("firing", firings(), ids=lambda f: str(f.kind))
def test_discord_bodies_use_only_documented_fields_within_their_limits(firing):
    payload = discord_body(firing)
    assert set(payload) <= DISCORD_TOP
    assert 0 < len(payload["content"]) <= 2000
    assert payload["allowed_mentions"] == {"parse": []}
    (embed,) = payload["embeds"]
    assert set(embed) <= DISCORD_EMBED
    assert len(embed["title"]) <= 256 and len(embed["description"]) <= 4096
    assert isinstance(embed["color"], int) and 0 <= embed["color"] <= 0xFFFFFF
    assert 0 < len(embed["fields"]) <= 25
    for item in embed["fields"]:
        assert set(item) == {"name", "value", "inline"}
        assert 0 < len(item["name"]) <= 256 and 0 < len(item["value"]) <= 1024
    assert datetime.fromisoformat(embed["timestamp"]) == END


@pytest.mark.parametrize("firing", firings(), ids=lambda f: str(f.kind))
def test_slack_bodies_are_a_text_fallback_and_block_kit_sections(firing):
    payload = slack_body(firing)
    assert set(payload) == {"text", "blocks"} and 0 < len(payload["text"]) <= 3000
    headline, facts = payload["blocks"]
    assert headline["type"] == "section" and headline["text"]["type"] == "mrkdwn"
    assert len(headline["text"]["text"]) <= 3000
    assert facts["type"] == "section" and 0 < len(facts["fields"]) <= 10
    assert all(f["type"] == "mrkdwn" and len(f["text"]) <= 2000 for f in facts["fields"])


def test_the_json_body_keeps_every_figure_exact_and_the_headline_says_what_happened():
    spike, change, level = firings()
    assert json_body(change)["value"] == "-12.345678901234"
    assert body(PayloadFormat.JSON, spike) == json_body(spike)
    assert discord_body(spike)["content"] == (
        "BTC-USDT on binance: volatility 2.5% over 5 min (threshold 2%)"
    )
    assert slack_body(level)["text"] == "BTC-USD on coinbase: price crossed 100000 (close 100000)"
