import pytest
from pydantic import ValidationError

from cryptolake.producer.settings import DEFAULT_SYMBOLS, ProducerSettings


def test_defaults_give_each_exchange_its_own_pairs(monkeypatch):
    monkeypatch.delenv("CRYPTOLAKE_SYMBOLS", raising=False)
    monkeypatch.delenv("CRYPTOLAKE_EXCHANGES", raising=False)
    assert ProducerSettings().symbols_by_exchange() == DEFAULT_SYMBOLS


def test_environment_is_read_when_settings_are_built(monkeypatch):
    monkeypatch.setenv("CRYPTOLAKE_EXCHANGES", "kraken,binance")
    monkeypatch.setenv("CRYPTOLAKE_SYMBOLS", "btc/usd")
    monkeypatch.setenv("CRYPTOLAKE_BOOTSTRAP_SERVERS", "broker:29092")
    settings = ProducerSettings()
    assert settings.bootstrap_servers == "broker:29092"
    assert settings.symbols_by_exchange() == {"kraken": ["BTC-USD"], "binance": ["BTC-USD"]}


def test_per_exchange_symbols_and_the_simulator_market():
    settings = ProducerSettings(
        exchanges=["binance", "coinbase"],
        symbols="binance:BTCUSDT,binance:ETH-USDT,coinbase:BTC-USD",
    )
    assert settings.symbols_by_exchange() == {
        "binance": ["BTC-USDT", "ETH-USDT"],
        "coinbase": ["BTC-USD"],
    }
    assert settings.simulator_symbols() == ["BTC-USDT", "ETH-USDT", "BTC-USD"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exchanges": "binance,bitstamp"}, "unknown exchange bitstamp"),
        ({"exchanges": ""}, "at least one exchange"),
        ({"symbols": "BTC"}, "BASE-QUOTE"),
        ({"exchanges": "binance", "symbols": "kraken:BTC-USD"}, "not among the chosen"),
        ({"metrics_port": 70000}, "less than or equal to 65535"),
        ({"source": "paper"}, "'auto', 'live' or 'simulator'"),
    ],
)
def test_bad_configuration_fails_before_anything_starts(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        ProducerSettings(**kwargs)


def test_perpetual_contracts_go_to_binance_and_the_simulator_names_them_so():
    only = ProducerSettings(symbols="btcusdt-perp")
    assert only.symbols_by_exchange() == {"binance": ["BTC-USDT-PERP"]}
    both = ProducerSettings(symbols="BTC-USDT-PERP,BTC-USD", exchanges="binance,kraken")
    assert both.symbols_by_exchange() == {"binance": ["BTC-USDT-PERP", "BTC-USD"],
                                          "kraken": ["BTC-USD"]}  # fmt: skip
    futures = ProducerSettings(symbols="BTC-USDT,ETH-USDT", simulator_protocol="binance-futures")
    assert futures.simulator_symbols() == ["BTC-USDT-PERP", "ETH-USDT-PERP"]
    spot = ProducerSettings(symbols="binance:BTC-USDT-PERP", exchanges="binance",
                            simulator_protocol="binance")  # fmt: skip
    assert spot.simulator_symbols() == ["BTC-USDT"]
    with pytest.raises(ValidationError, match="perpetual contracts stream from binance only"):
        ProducerSettings(symbols="kraken:BTC-USD-PERP")
    with pytest.raises(ValidationError, match="exchange one of binance, binance-futures"):
        ProducerSettings(exchange_urls="bitmex=wss://x")
