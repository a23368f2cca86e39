"""CryptoLake alerts: rules over the 1-minute Gold candles (volatility, price change, price
cross), evaluated as ``gold/candles_1m`` changes, each firing logged once in ``gold/alerts`` and
delivered to its webhook (Discord, Slack or plain JSON) with retries."""
