"""A real HTTP webhook receiver for the delivery tests, started per test on a free port. Its
paths behave like webhooks do: ``/ok`` answers 204 (as Discord does), ``/flaky`` 503 twice then
204, ``/limited`` 429 with ``Retry-After: 1`` once then 204, ``/gone`` 404, ``/hang`` never
answers (until the test ends)."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Received:
    at: float
    body: Any
    status: int


@dataclass
class WebhookReceiver:
    base_url: str
    posts: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def answered(self, path: str) -> list[Received]:
        with self.lock:
            return [post for post in self.posts[path] if post.status < 300]


def _status(path: str, earlier: int) -> tuple[int, dict[str, str]]:
    if path.startswith("/flaky"):
        return (503, {}) if earlier < 2 else (204, {})
    if path.startswith("/limited"):
        return (429, {"Retry-After": "1"}) if earlier < 1 else (204, {})
    if path.startswith("/gone"):
        return 404, {}
    return 204, {}


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver: WebhookReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            payload = json.loads(self.rfile.read(length))
            if self.path.startswith("/hang"):
                receiver.release.wait(60)
                return
            with receiver.lock:
                status, headers = _status(self.path, len(receiver.posts[self.path]))
                receiver.posts[self.path].append(Received(time.monotonic(), payload, status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = WebhookReceiver(f"http://127.0.0.1:{server.server_port}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield receiver
    receiver.release.set()
    server.shutdown()
    server.server_close()
