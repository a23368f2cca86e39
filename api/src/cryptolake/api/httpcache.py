"""Rendered responses served from memory: the hot path of the API.

A GET on a data endpoint is answered from this cache when the same path and query string were
rendered since the tables last changed (``LakeStore.generation``) — no routing, validation or
table access. The body is kept as rendered and gzip-compressed once, for clients that accept
it. Everything else (misses, errors, CORS requests, a storage outage) goes through the full
stack, which also answers 401 when a key is wrong: this layer only serves a hit to a request
that passes the same key check.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptolake.api.observability import tag_request
from cryptolake.api.security import key_matches, scope_key
from cryptolake.api.store import LakeStore

CACHEABLE_PATHS = frozenset(
    {
        "/v1/symbols", "/v1/candles", "/v1/indicators/sma", "/v1/stats/hourly",
        "/v1/stats/daily", "/v1/trades/latest", "/v1/kpis", "/v1/alerts",
    }
)  # fmt: skip
# Smaller bodies gain little from compression.
GZIP_MIN_BYTES = 1024
_TAGGED = ("symbol", "interval", "window")


@dataclass(frozen=True)
class CachedResponse:
    generation: int
    body: bytes
    gzipped: bytes | None
    tags: dict[str, str]

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"")


class ResponseCache:
    """A least-recently-used map bounded by the bytes it holds."""

    def __init__(self, max_bytes: int) -> None:
        self._items: OrderedDict[tuple[str, bytes], CachedResponse] = OrderedDict()
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, bytes], generation: int) -> CachedResponse | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is None or entry.generation != generation:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: tuple[str, bytes], entry: CachedResponse) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            if entry.size > self._max_bytes:
                return
            self._items[key] = entry
            self._bytes += entry.size
            while self._bytes > self._max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.size


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class CachedResponses:
    """ASGI middleware in front of the routes (inside tracing and request metrics)."""

    def __init__(
        self,
        app: ASGIApp,
        store: LakeStore,
        cache: ResponseCache,
        api_keys: Callable[[], list[bytes]],
    ) -> None:
        self.app, self.store, self.cache, self.api_keys = app, store, cache, api_keys
        # Misses being rendered: concurrent requests for the same key wait for the first.
        self._rendering: dict[tuple[str, bytes], asyncio.Event] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope["path"] not in CACHEABLE_PATHS
            or self.store.error is not None
            or _header(scope, b"origin") is not None
            or not self._authorized(scope)
        ):
            await self.app(scope, receive, send)
            return
        key = (scope["path"], scope["query_string"])
        gzip_ok = b"gzip" in (_header(scope, b"accept-encoding") or b"")
        generation = self.store.generation
        entry = self.cache.get(key, generation)
        rendering = self._rendering.get(key)
        if entry is None and rendering is not None:
            await rendering.wait()
            entry = self.cache.get(key, generation)
        if entry is not None:
            # The route the request metrics label it with (these paths are route templates).
            scope["route"] = SimpleNamespace(path=scope["path"])
            tag_request(**entry.tags)
            await _send(send, entry, gzip_ok)
            return
        done = self._rendering[key] = asyncio.Event()
        try:
            captured = await self._render(scope, receive, generation)
        finally:
            del self._rendering[key]
            done.set()
        if isinstance(captured, CachedResponse):
            await _send(send, captured, gzip_ok)
            return
        for message in captured:
            await send(message)

    async def _render(
        self, scope: Scope, receive: Receive, generation: int
    ) -> CachedResponse | list[Message]:
        """Run the full stack; a 200 is cached (and compressed off the event loop), anything
        else is handed back to be sent as it is."""
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)

        await self.app(scope, receive, capture)
        bodies = [m for m in captured if m["type"] == "http.response.body"]
        if not captured or captured[0].get("status") != 200 or len(bodies) != 1:
            return captured
        body = bodies[0].get("body", b"")
        tags = {
            name: value
            for name, value in parse_qsl(scope["query_string"].decode("latin-1"))
            if name in _TAGGED
        }
        compressed = None
        if len(body) >= GZIP_MIN_BYTES:
            compressed = await asyncio.to_thread(gzip.compress, body, 6, mtime=0)
        entry = CachedResponse(generation, body, compressed, tags)
        self.cache.put((scope["path"], scope["query_string"]), entry)
        return entry

    def _authorized(self, scope: Scope) -> bool:
        keys = self.api_keys()
        if not keys:
            return True
        presented = scope_key(scope)
        return presented is not None and key_matches(presented, keys)


async def _send(send: Send, entry: CachedResponse, gzip_ok: bool) -> None:
    body = entry.gzipped if gzip_ok and entry.gzipped is not None else entry.body
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"vary", b"Accept-Encoding"),
    ]
    if body is entry.gzipped:
        headers.append((b"content-encoding", b"gzip"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
