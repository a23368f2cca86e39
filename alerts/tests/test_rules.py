"""The rules file: what it accepts, and a clear reason for what it refuses."""

from decimal import Decimal

import pytest

from cryptolake.alerts.rules import parse_rules
from cryptolake.common.alert_rules import AlertKind, RulesError

VALID = """
rules:
  - name: btc-volatility
    markets: ["binance:BTC-USDT", "ETH-USDT"]
    kind: volatility
    window: 5m
    threshold: "2.5"
    cooldown: 1h
    webhook: {format: discord, url_env: TEST_DISCORD_URL}
  - name: btc-level
    kind: price_cross
    threshold: 100000
    direction: up
    webhook: {url: "https://hooks.example.test/T/B/x"}
"""


def test_a_valid_file_gives_typed_rules():
    rules = parse_rules(VALID)
    volatility, level = rules.rules
    assert volatility.kind is AlertKind.VOLATILITY
    assert (volatility.window, volatility.cooldown, volatility.threshold) == (5, 60, Decimal("2.5"))
    assert volatility.watches("binance", "BTC-USDT")
    assert not volatility.watches("kraken", "BTC-USDT")
    assert volatility.watches("kraken", "ETH-USDT")
    assert level.watches("coinbase", "SOL-USD") and level.threshold == Decimal(100000)
    assert rules.lookback_minutes == 6


def test_an_empty_file_is_no_rules():
    assert parse_rules("").rules == ()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("threshold: abc", "threshold"),
        ("threshold: .nan", "positive finite"),
        ("threshold: '-1'", "positive finite"),
        ("threshold: '0.0000000000001'", "12 decimals"),
        ("threshold: '1e30'", "26 integer digits"),
        ("window: 2h", "less than or equal to 60"),
        ("window: 0m", "greater than or equal to 1"),
        ("window: 5 minutes", "not a duration"),
        ("kind: moon", "kind"),
        ("markets: ['BTC/USDT']", "not exchange:SYMBOL"),
        ("markets: ['ftx:BTC-USDT']", "unknown exchange"),
        ("name: Bad_Name", "name"),
        ("colour: red", "Extra inputs"),
    ],
)
def test_a_wrong_field_is_refused_with_its_place(change, reason):
    key = change.split(":")[0]
    base = {
        "name": "r",
        "kind": "volatility",
        "threshold": "1",
        "window": "5m",
        "webhook": "{url_env: X}",
    }
    base[key] = change.split(": ", 1)[1]
    text = "rules:\n  - " + "\n    ".join(f"{k}: {v}" for k, v in base.items())
    with pytest.raises(RulesError, match=reason) as raised:
        parse_rules(text, "alerts.yaml")
    assert str(raised.value).startswith("alerts.yaml: rules.0")


def test_a_cross_over_a_window_and_doubled_names_and_two_urls_are_refused():
    cross = (
        "rules:\n  - {name: c, kind: price_cross, threshold: 5, window: 5m, webhook: {url_env: X}}"
    )
    with pytest.raises(RulesError, match="leave window at 1m"):
        parse_rules(cross)
    twice = "rules:\n" + "\n".join(
        "  - {name: same, kind: volatility, threshold: 1, webhook: {url_env: X}}" for _ in "ab"
    )
    with pytest.raises(RulesError, match="unique: same"):
        parse_rules(twice)
    both = (
        "rules:\n  - {name: b, kind: volatility, threshold: 1,"
        " webhook: {url: 'https://h/x', url_env: X}}"
    )
    with pytest.raises(RulesError, match="exactly one of url or url_env"):
        parse_rules(both)
    with pytest.raises(RulesError, match="not YAML"):
        parse_rules("rules: [")
    with pytest.raises(RulesError, match="a mapping"):
        parse_rules("- just a list")


def test_a_webhook_url_comes_from_the_environment_and_is_never_logged_whole(monkeypatch):
    rules = parse_rules(VALID)
    webhook = rules.rules[0].webhook
    with pytest.raises(RulesError, match="TEST_DISCORD_URL is not set"):
        webhook.resolve()
    monkeypatch.setenv("TEST_DISCORD_URL", "https://discord.example.test/api/webhooks/1/secret")
    assert webhook.resolve().endswith("/secret")
    assert webhook.redacted_for(webhook.resolve()) == "https://discord.example.test/…"
    monkeypatch.setenv("TEST_DISCORD_URL", "file:///etc/passwd")
    with pytest.raises(RulesError, match="not http"):
        webhook.resolve()
