"""The ``commands`` workload's clients: a REST connection, devices that answer commands, a dashboard that times them.

- ``RestConnection``: one keep-alive HTTP/1.1 connection on which requests go one at a time (no pipelining);
  responses are parsed by httptools, the C parser uvicorn itself serves with. ``request`` resolves with the
  status, the decoded JSON body and the response's arrival time (perf_counter).
- ``AnsweringDevice``: a device on ``/api/v1/ws/device`` (the ingest load generator's ``WebSocketDevice``: the
  opening, ``hello``, pings) that answers every ``command`` frame at once, in the same read, with a MessagePack
  ``command_result`` ``completed``; it records when each command arrived and when it answered.
- ``CommandWatcher``: a dashboard on ``devices/+/commands`` (API.md §5) that records when each command's
  ``completed`` status change arrives.

Both recorders keep a ``Moments`` book: the time each command id was seen, and a future per id that a
measuring coroutine can wait on whether the moment came before or after it asked (a device can answer before
the POST's 202 has been read).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, cast

import httptools
import msgpack
import orjson

from benchmarks.loadgen import LoadSession, WebSocketDevice
from benchmarks.recovery_clients import RecordingDashboard
from benchmarks.wsclient import OP_BINARY, OP_TEXT, encode_frame

__all__ = ["AnsweringDevice", "CommandWatcher", "Moments", "RestConnection", "RestError"]

API = "/api/v1"


class RestError(Exception):
    """A REST call the workload needs did not answer as it must (the status and the body's start)."""


class Moments:
    """When each command id was seen; ``at(id)`` is a future of that time, resolved at once if already seen."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self._waiting: dict[str, asyncio.Future[float]] = {}

    def record(self, command_id: str, when: float) -> None:
        if command_id in self.seen:
            return
        self.seen[command_id] = when
        waiting = self._waiting.pop(command_id, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(when)

    def at(self, command_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if command_id in self.seen:
            future.set_result(self.seen[command_id])
        else:
            self._waiting[command_id] = future
        return future

    def fail(self, exc: BaseException) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(exc)
        self._waiting.clear()

    def forget(self, command_id: str) -> None:
        self.seen.pop(command_id, None)
        self._waiting.pop(command_id, None)


class RestConnection(asyncio.Protocol):
    """One keep-alive connection to the REST API with a bearer token; one request at a time."""

    def __init__(self, *, host: str, port: int, token: str) -> None:
        self._host = f"{host}:{port}".encode()
        self._token = token.encode()
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._response: asyncio.Future[tuple[int, Any, float]] | None = None
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def request(self, method: str, path: str, body: Any = None) -> asyncio.Future[tuple[int, Any, float]]:
        """Send one request; the future of (status, JSON body or None, arrival time of the whole response)."""
        assert self.transport is not None and self._response is None, "one request at a time"
        payload = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {API}{path} HTTP/1.1\r\n".encode()
            + b"Host: "
            + self._host
            + b"\r\nAuthorization: Bearer "
            + self._token
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
        )
        self._response = asyncio.get_running_loop().create_future()
        self.transport.write(head + payload)
        return self._response

    async def call(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> tuple[Any, float]:
        """``request`` that raises ``RestError`` unless the status is ``expect``; the body and arrival time."""
        status, answer, at = await self.request(method, path, body)
        if status != expect:
            raise RestError(f"{method} {path} answered {status}, not {expect}: {str(answer)[:300]}")
        return answer, at

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks.

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        raw = b"".join(self._body)
        self._body.clear()
        response, self._response = self._response, None
        if response is not None and not response.done():
            response.set_result((self._parser.get_status_code(), orjson.loads(raw) if raw else None, now))

    # asyncio.Protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses
        self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RestError(f"the server's response did not parse: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"the REST connection was lost: {exc!r}"))

    def _fail(self, exc: BaseException) -> None:
        if self._response is not None and not self._response.done():
            self._response.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()


class AnsweringDevice(WebSocketDevice):
    """A device that answers each command as soon as it reads it: ``received`` and ``answered`` record when."""

    def __init__(self, session: LoadSession, *, device_id: str, **opening: Any) -> None:
        super().__init__(session, **opening)
        self.device_id = device_id
        self.received = Moments()
        self.answered = Moments()
        # Command frames read in all (a command written twice would count twice).
        self.commands = 0

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode in (OP_BINARY, OP_TEXT):
            message = msgpack.unpackb(payload) if opcode == OP_BINARY else orjson.loads(payload)
            if isinstance(message, dict) and message.get("type") == "command":
                self._answer(message["command_id"], binary=opcode == OP_BINARY)
                return
        super()._message(opcode, payload)

    def _answer(self, command_id: str, *, binary: bool) -> None:
        """Answer in the command's encoding, in the read that brought it."""
        self.received.record(command_id, time.perf_counter())
        self.commands += 1
        result = {"type": "command_result", "command_id": command_id, "status": "completed", "result": {"ok": True}}
        frame = encode_frame(msgpack.packb(result)) if binary else encode_frame(orjson.dumps(result), OP_TEXT)
        assert self.transport is not None
        self.transport.write(frame)
        self.answered.record(command_id, time.perf_counter())

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        gone = ConnectionError(f"device {self.device_id} lost its connection: {exc!r}")
        self.received.fail(gone)
        self.answered.fail(gone)


class CommandWatcher(RecordingDashboard):
    """A dashboard that records when each command's ``completed`` change arrives (``completed``), and how many
    changes of each status it was sent (``changes``)."""

    def __init__(self, **opening: Any) -> None:
        super().__init__(**opening)
        self.completed = Moments()
        self.changes: Counter[str] = Counter()

    def _message(self, now: float, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            super()._message(now, message)
            return
        data = message["data"]
        self.changes[data.get("status")] += 1
        if data.get("status") == "completed":
            self.completed.record(data["command_id"], now)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.completed.fail(ConnectionError(f"the dashboard's connection was lost: {exc!r}"))
