"""The producer's settings: ``CRYPTOLAKE_*`` environment variables, overridden by CLI flags."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from cryptolake.common.settings import KafkaTopicsSettings, LakeSettings
from cryptolake.common.symbols import canonical_symbol, is_perpetual, perpetual, spot
from cryptolake.common.trade import LIVE_EXCHANGES
from cryptolake.producer.exchanges import ADAPTERS, PERPETUALS, markets

Source = Literal["auto", "live", "simulator"]

# Each exchange's most liquid pairs, in canonical form, used when no symbols are given.
DEFAULT_SYMBOLS: dict[str, list[str]] = {
    "binance": ["BTC-USDT", "ETH-USDT"],
    "kraken": ["BTC-USD", "ETH-USD"],
    "coinbase": ["BTC-USD", "ETH-USD"],
}


class ProducerSettings(KafkaTopicsSettings, LakeSettings):
    """Env: CRYPTOLAKE_SOURCE, CRYPTOLAKE_EXCHANGES, CRYPTOLAKE_SYMBOLS, CRYPTOLAKE_METRICS_PORT…"""

    source: Source = "auto"
    """auto: the live exchanges, else the simulator; live; or simulator (labelled `simulator`)."""
    exchanges: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(LIVE_EXCHANGES))
    """The live exchanges to stream, a comma list (binance, kraken, coinbase)."""
    symbols: str = ""
    """`BTC-USDT,ETH-USDT` for every exchange, or `binance:BTC-USDT,coinbase:BTC-USD` per
    exchange; `binance:BTC-USDT-PERP` is Binance's USD-M perpetual contract (its futures
    stream)."""
    exchange_urls: str = ""
    """Override live endpoints by protocol, e.g. `binance=wss://stream.binance.us:9443` or
    `binance-futures=wss://fstream.binance.com` (proxies, mirrors)."""
    metrics_port: int = Field(default=9400, ge=0, le=65535)
    """/metrics and /healthz; 0: not served."""
    topic_partitions: int = Field(default=3, ge=1)
    """Partitions of the topics the producer creates."""
    topic_replication: int = Field(default=1, ge=1)
    """Replicas of the topics the producer creates."""
    topic_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=-1)
    """Retention of the topics the producer creates (-1: forever)."""
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    """Kafka batch compression."""
    linger_ms: int = Field(default=5, ge=0)
    """How long a batch waits to fill before it is sent."""
    live_timeout_s: float = Field(default=5.0, gt=0)
    """How long `auto` waits for a live exchange before falling back to the simulator."""
    simulator_protocol: Literal["binance", "binance-futures", "kraken", "coinbase"] = "coinbase"
    """The simulator the producer starts itself in simulator mode (or `auto` fallback).
    binance-futures: the simulator's perpetual contracts (each symbol as BASE-QUOTE-PERP)."""
    simulator_rate: float = Field(default=50.0, gt=0)
    """Simulated trades per second, all symbols together."""
    simulator_seed: int = 42
    """The simulator's seed: the same seed gives the same market."""
    simulator_url: str | None = None
    """Connect to an already running simulator at this base URL instead of starting one."""
    reconnect_min_s: float = Field(default=0.5, gt=0)
    """First wait before a reconnect (exponential backoff, full jitter)."""
    gap_grace_s: float = Field(default=2.0, gt=0)
    """Missing trade ids wait this long for a late frame before the REST history is asked."""
    recovery_attempts: int = Field(default=6, ge=1)
    """Attempts per history request (429s, 5xx, network errors) before a gap is unrecoverable."""
    reconcile_interval_s: float = Field(default=0.0, ge=0)
    """Seconds between two rounds of checking Gold's closed candles against the exchanges' klines
    (gold/kline_checks; needs CRYPTOLAKE_TABLE_ROOT and the S3 settings); 0: off."""
    reconcile_delay_s: float = Field(default=180.0, ge=0)
    """A minute is checked once it ended this long ago (Gold's lateness, 2 min, plus margin)."""
    reconnect_max_s: float = Field(default=30.0, gt=0)
    """Longest wait before a reconnect."""
    markets_interval_s: float = Field(default=15.0, ge=0)
    """Coin market snapshots (CoinGecko /coins/markets, or the simulator's) every this many
    seconds to crypto.markets.v1; 0: off. The free tier allows 30 calls a minute."""
    markets_coins: str = ""
    """CoinGecko coin ids (`bitcoin,ethereum`); empty: the top `markets_top` by market cap."""
    markets_top: int = Field(default=10, ge=1, le=250)
    """How many coins, by market cap, when no coin ids are given."""
    coingecko_url: str = "https://api.coingecko.com"
    """CoinGecko's API (another endpoint: a proxy, the pro API)."""
    coingecko_api_key: SecretStr | None = None
    """A demo or pro key (sent as x-cg-demo-api-key); none is needed for the public API."""
    binance_api_key: SecretStr | None = None
    """Binance API key (no secret: nothing is signed): the futures history by trade id needs one;
    without it a futures gap closes only within the newest 1,000 trades."""
    flush_timeout_s: float = Field(default=30.0, gt=0)
    """At shutdown, how long unacknowledged messages may take to be delivered."""
    status_interval_s: float = Field(default=10.0, gt=0)
    """Period of the one-line status log."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""

    @field_validator("exchanges", mode="before")
    @classmethod
    def _split_exchanges(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("exchanges")
    @classmethod
    def _known_exchanges(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in LIVE_EXCHANGES]
        if unknown:
            raise ValueError(
                f"unknown exchange {', '.join(unknown)}: choose from {', '.join(LIVE_EXCHANGES)}"
            )
        if not value:
            raise ValueError(f"name at least one exchange of {', '.join(LIVE_EXCHANGES)}")
        return value

    @model_validator(mode="after")
    def _symbols_parse(self) -> ProducerSettings:
        # Both raise with a clear message before anything starts.
        self.symbols_by_exchange()
        self.urls_by_exchange()
        return self

    def urls_by_exchange(self) -> dict[str, str]:
        urls: dict[str, str] = {}
        for item in (part.strip() for part in self.exchange_urls.split(",")):
            if not item:
                continue
            name, sep, url = item.partition("=")
            if not sep or name not in ADAPTERS or "://" not in url:
                raise ValueError(
                    f"exchange URL {item!r}: write exchange=ws(s)://host[:port][/path] with "
                    f"exchange one of {', '.join(ADAPTERS)}"
                )
            urls[name] = url
        return urls

    def symbols_by_exchange(self) -> dict[str, list[str]]:
        """Canonical symbols for each chosen exchange. A perpetual contract given for every
        exchange (no ``exchange:`` prefix) goes to the exchanges that have them (Binance); an
        exchange that is left nothing of the symbols given is not streamed."""
        chosen: dict[str, list[str]] = {}
        shared: list[str] = []
        for item in (part.strip() for part in self.symbols.split(",")):
            if not item:
                continue
            exchange, sep, symbol = item.rpartition(":")
            if sep:
                if exchange not in self.exchanges:
                    raise ValueError(
                        f"symbol {item!r} names exchange {exchange!r}, which is not among "
                        f"the chosen exchanges ({', '.join(self.exchanges)})"
                    )
                chosen.setdefault(exchange, []).append(canonical_symbol(symbol))
            else:
                shared.append(canonical_symbol(symbol))
        by_exchange: dict[str, list[str]] = {}
        for name in self.exchanges:
            mine = [s for s in shared if not is_perpetual(s) or name in PERPETUALS]
            symbols = chosen.get(name) or mine or ([] if shared else DEFAULT_SYMBOLS[name])
            if symbols:
                markets(name, symbols)  # a contract of an exchange without futures: ValueError
                by_exchange[name] = symbols
        return by_exchange

    def simulator_symbols(self) -> list[str]:
        """The simulator's market: every chosen symbol, once, as the protocol names it: their
        perpetual contracts with binance-futures, their spot markets with the others."""
        named = perpetual if self.simulator_protocol == "binance-futures" else spot
        seen: dict[str, None] = {}
        for symbols in self.symbols_by_exchange().values():
            seen.update(dict.fromkeys(named(symbol) for symbol in symbols))
        return list(seen)
