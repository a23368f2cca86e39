"""Per-client rate limit (in front of everything but the request metrics) and request timeout
(behind the response cache).

A client is its API key when it sends a configured one (so clients behind one NAT are told
apart), else its address. The limit uses the ``limits`` library (fixed windows, in memory:
per process, like the response cache). Probes and /metrics are never limited: a kubelet is no
abuser. Streams (``/v1/stream/``) have no timeout; their number is capped where they open."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable

import orjson
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptolake.api.security import key_matches, scope_key

UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
STREAM_PREFIX = "/v1/stream/"


def client_key(scope: Scope, keys: list[bytes]) -> str:
    """Who a request counts against: a digest of its API key when it is a configured one
    (an invented key must not buy a fresh budget), else its address."""
    key = scope_key(scope)
    if key is not None and keys and key_matches(key, keys):
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


async def _reply(send: Send, status: int, code: str, message: str, retry_after: int) -> None:
    body = orjson.dumps(
        {"error": {"status": status, "code": code, "message": message, "parameter": None}}
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if retry_after:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RateLimit:
    """ASGI middleware, outermost but for the metrics: 429 beyond ``rate_limit`` per client."""

    def __init__(self, app: ASGIApp, rate_limit: str, api_keys: Callable[[], list[bytes]]) -> None:
        self.app, self.api_keys = app, api_keys
        self.limit: RateLimitItem | None = parse(rate_limit) if rate_limit else None
        self.limiter = FixedWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.limit is not None
            and scope["type"] == "http"
            and (scope["path"] not in UNLIMITED_PATHS)
        ):
            who = client_key(scope, self.api_keys())
            if not self.limiter.hit(self.limit, who):
                reset = self.limiter.get_window_stats(self.limit, who).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                message = f"over {self.limit} for this client: retry in {wait} s"
                await _reply(send, 429, "rate_limited", message, wait)
                return
        await self.app(scope, receive, send)


class Timeout:
    """ASGI middleware behind the response cache (a cached answer needs no timer): 504 when
    a request is not answered within ``timeout_s``. Streams are left alone."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(STREAM_PREFIX):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_s):
                await self.app(scope, receive, tracked)
        except TimeoutError:
            if started:
                raise  # part of the answer is out: only closing the connection is left
            message = f"no answer within {self.timeout_s:g} s (CRYPTOLAKE_REQUEST_TIMEOUT_S)"
            await _reply(send, 504, "timeout", message, 0)
