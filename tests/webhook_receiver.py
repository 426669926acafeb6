"""A real HTTP receiver for the webhook tests: a threading HTTP server on 127.0.0.1 that records every request
and answers as scripted (status codes, delays), and the signature check a receiver makes."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from tests.conftest import TIMEOUT

WAIT = 10 * TIMEOUT


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.body)
        return value


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay_s: float = 0.0


def verify_signature(
    header: str, secret: str, body: bytes, *, tolerance_s: int = 300, now: float | None = None
) -> bool:
    """What a receiver does: take t and v1 from the header, refuse an old t, recompute the HMAC-SHA256 of
    "<t>.<body>" with the secret and compare in constant time."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: with the hub's 4 + 4 concurrent deliveries (each on a new
    # connection, HTTP/1.0) and a busy accept thread, a SYN dropped past it is resent only after 1 s.
    request_queue_size = 128


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._plans: dict[str, list[Reply]] = {}
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                try:
                    body = self.rfile.read(int(self.headers.get("content-length", "0")))
                    reply = receiver._arrived(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                    )
                    time.sleep(reply.delay_s)
                    self.send_response(reply.status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:  # the hub gave up (timeout) and closed the connection
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        """The next requests to ``path`` get these replies in order; later ones get 200 at once."""
        with self._changed:
            self._plans[path] = list(replies)

    def _arrived(self, request: Received) -> Reply:
        with self._changed:
            self.received.append(request)
            self._changed.notify_all()
            plan = self._plans.get(request.path)
            return plan.pop(0) if plan else Reply()

    def requests(self, path: str | None = None) -> list[Received]:
        with self._changed:
            return [r for r in self.received if path is None or r.path == path]

    def wait_for(self, count: int, path: str | None = None, *, within: float = WAIT) -> list[Received]:
        """The first ``count`` requests (to ``path``), waiting for them up to ``within`` seconds."""
        deadline = time.monotonic() + within
        with self._changed:
            while True:
                found = [r for r in self.received if path is None or r.path == path]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(found)} of {count} requests to {path or 'any path'}: {found}")
                self._changed.wait(left)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.close()
