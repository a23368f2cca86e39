"""The API routers: market data, the SSE stream, probes and metrics."""
