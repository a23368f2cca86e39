"""Binance USD-M futures: perpetual contracts, ``<symbol>@trade`` on the futures host.

The same combined-stream protocol and REST shapes as spot (``binance.py``) on other hosts and
paths; each contract's canonical symbol ends in ``-PERP`` (``BTC-USDT-PERP``), so its trades
and candles never mix with the spot market's under exchange ``binance``. Docs:
https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
"""

from __future__ import annotations

from typing import ClassVar

from cryptolake.common.symbols import PERP_SUFFIX
from cryptolake.producer.exchanges.base import HistoryPage, HistoryRequest
from cryptolake.producer.exchanges.binance import BinanceAdapter, native_stream_symbol
from cryptolake.producer.gaps import Gap

# The futures history by trade id is "MARKET_DATA": it needs an API key (no signature).
API_KEY_HEADER = "X-MBX-APIKEY"


class BinanceFuturesAdapter(BinanceAdapter):
    """Frames as on spot, plus the order type ``X`` (``MARKET``, ``LIQUIDATION``, ``ADL``…):
    every type is a trade on the tape and in the klines, so each is kept. A raw frame::

        {"stream": "btcusdt@trade",
         "data": {"e": "trade", "E": 1733500000123, "T": 1733500000120, "s": "BTCUSDT",
                  "t": 5912345678, "p": "97001.10", "q": "0.004", "X": "MARKET", "m": false}}
    """

    name: ClassVar[str] = "binance-futures"
    exchange: ClassVar[str | None] = "binance"
    default_url: ClassVar[str] = "wss://fstream.binance.com"
    default_rest_url: ClassVar[str | None] = "https://fapi.binance.com"
    history_path: ClassVar[str] = "/fapi/v1/historicalTrades"
    recent_path: ClassVar[str] = "/fapi/v1/trades"
    klines_path: ClassVar[str] = "/fapi/v1/klines"
    symbol_suffix: ClassVar[str] = PERP_SUFFIX

    def history_request(self, symbol: str, gap: Gap, cursor: str | None) -> HistoryRequest:
        """With an API key, ``GET /fapi/v1/historicalTrades`` from ``fromId`` (as on spot);
        without one, ``GET /fapi/v1/trades``: the newest 1,000 trades, one page, so only a gap
        that recent closes (older ids are recorded unrecoverable). Docs:
        https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api"""
        if self.api_key:
            request = super().history_request(symbol, gap, cursor)
            return HistoryRequest(request.url, request.params, {API_KEY_HEADER: self.api_key})
        params = {"symbol": native_stream_symbol(symbol).upper(), "limit": str(self.history_limit)}
        return HistoryRequest(f"{str(self.rest_url).rstrip('/')}{self.recent_path}", params)

    def parse_history(self, symbol: str, body: bytes, recv_time_us: int) -> HistoryPage:
        """As on spot; the newest-trades page (no API key) is the only page there is."""
        page = super().parse_history(symbol, body, recv_time_us)
        return page if self.api_key else HistoryPage(page.parsed, None)
