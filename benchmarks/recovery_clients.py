"""The ``recovery`` workload's clients: devices that publish counted frames, and a dashboard that keeps every message.

- ``CountedDevice``: a device on ``/api/v1/ws/device`` (the ingest load generator's ``WebSocketDevice``: the
  opening, ``hello``, cumulative acks, pings) whose frame ``seq`` carries the metric ``n = seq``, so that a
  dashboard can tell from each message which frame of which device it is. ``publish(count)`` sends the next
  ``count`` frames as fast as acks allow (at most the session's window unacked) and resolves once all are acked.
  The frames are MessagePack, the same bytes for every device (``loadgen.FrameBook``), framed before they count.
- ``RecordingDashboard``: one dashboard on ``/api/v1/ws`` (API.md §5) that decodes every message it is sent and
  records ``(arrival, device, n, offset, epoch)``; the checks are the caller's. Each op's reply resolves a
  future; ``on_reply`` runs in the same read as the reply arrives (to publish a marker at once), and
  ``watch(device, n)`` resolves when that frame's message arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgpack
import orjson

from benchmarks.fanout_clients import DASHBOARD_PATH, MSGPACK_SUBPROTOCOL
from benchmarks.loadgen import CLOSE_TIMEOUT_S, OPEN_TIMEOUT_S, FrameBook, LoadSession, WebSocketDevice
from benchmarks.wsclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    HandshakeError,
    encode_frame,
    handshake_request,
    parse_handshake_response,
)

__all__ = ["CountedDevice", "Received", "RecordingDashboard", "frame_book", "open_connection"]

Connection = TypeVar("Connection", "RecordingDashboard", "CountedDevice")


def _counted_frame(index: int) -> bytes:
    """Frame ``index`` of any device: seq and metric ``n`` both ``index + 1``; ``ts`` left to the server."""
    seq = index + 1
    return encode_frame(msgpack.packb({"type": "telemetry", "seq": seq, "metrics": {"n": seq, "temp": 21.5}}))


def frame_book() -> FrameBook:
    """The frames of every device from seq 1 on, encoded as they are first needed (``CountedDevice.prepare``)."""
    return FrameBook(_counted_frame, first=0, count=0)


class CountedDevice(WebSocketDevice):
    """A device whose frames carry ``n = seq``; ``publish`` sends a counted run of them, windowed by acks."""

    def __init__(self, session: LoadSession, *, device_id: str, **opening: Any) -> None:
        super().__init__(session, **opening)
        self.device_id = device_id
        # Send no frame beyond this seq; ``done`` resolves once every frame up to it is resolved.
        self.until = 0
        # Unacked frames allowed while publishing (the session's window unless ``publish`` says otherwise).
        self.window = session.window
        self._done: asyncio.Future[None] | None = None

    def prepare(self, count: int) -> None:
        """Encode the next ``count`` frames now, so that ``publish`` only writes bytes."""
        assert self.session.book is not None
        if count > 0:
            self.session.book.window(self.sent_seq + count - 1, self.sent_seq + count)

    def publish(self, count: int, window: int | None = None) -> asyncio.Future[None]:
        """Send frames ``sent_seq + 1 .. sent_seq + count``, at most ``window`` unacked (default: the session's);
        the future resolves once all are acked."""
        self.until = self.sent_seq + count
        self.window = window or self.session.window
        self._done = asyncio.get_running_loop().create_future()
        self.fill()
        self._check_done()
        return self._done

    def fill(self) -> None:
        target = min(self.resolved_seq + self.window, self.until)
        if self._paused or self._closing or self.sent_seq >= target or self.transport is None:
            return
        self.transport.write(self.wire(self.sent_seq, target))
        count = target - self.sent_seq
        self.sent_seq = target
        self.session.sent += count
        self.session.inflight += count

    def resolve(self, seq: int, *, error: bool = False) -> None:
        super().resolve(seq, error=error)
        self._check_done()

    def _check_done(self) -> None:
        if self._done is not None and not self._done.done() and self.resolved_seq >= self.until:
            self._done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError(f"device {self.device_id} lost its connection: {exc!r}"))


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the dashboard got it."""

    at: float
    channel: str
    device: str
    n: int
    offset: str
    epoch: str


class RecordingDashboard(asyncio.Protocol):
    """A dashboard that decodes and keeps every message (``received``) and answers pings."""

    def __init__(self, *, host: str, port: int, key: str, binary: bool) -> None:
        self._binary = binary
        subprotocol = MSGPACK_SUBPROTOCOL if binary else None
        self._request, self._accept = handshake_request(
            host=host,
            port=port,
            path=DASHBOARD_PATH,
            headers={"Authorization": f"Bearer {key}"},
            subprotocol=subprotocol,
        )
        self._subprotocol = subprotocol
        self._head: bytearray | None = bytearray()
        self._parser = FrameParser()
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.received: list[Received] = []
        self.replies: dict[int, asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        # Called with the reply's result as soon as it is read, before the messages read with it are handled.
        self.on_reply: Callable[[dict[str, Any]], None] | None = None
        self.close_code: int | None = None
        self._watched: tuple[str, int] | None = None
        self._seen: asyncio.Future[float] | None = None
        self._closing = False
        self._next_id = 0

    # Ops.

    def send(self, op: dict[str, Any]) -> tuple[float, asyncio.Future[tuple[float, dict[str, Any]]]]:
        """Send ``op`` with a fresh id; the send time (perf_counter) and the future of its reply's arrival."""
        assert self.transport is not None
        self._next_id += 1
        op = {**op, "id": self._next_id}
        reply = self.replies[self._next_id] = asyncio.get_running_loop().create_future()
        frame = encode_frame(msgpack.packb(op), OP_BINARY) if self._binary else encode_frame(orjson.dumps(op), OP_TEXT)
        sent = time.perf_counter()
        self.transport.write(frame)
        return sent, reply

    def watch(self, device: str, n: int) -> asyncio.Future[float]:
        """The arrival time of the message of ``device``'s frame ``n``."""
        self._watched = (device, n)
        self._seen = asyncio.get_running_loop().create_future()
        return self._seen

    async def close(self) -> None:
        """Close the WebSocket (1000) and wait for the server's close (or drop it after CLOSE_TIMEOUT_S)."""
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame((1000).to_bytes(2, "big"), OP_CLOSE))
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT_S)
            except TimeoutError:
                self.transport.abort()
                await self.closed

    # asyncio.Protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        try:
            if self._head is not None:
                self._head += data
                start = parse_handshake_response(self._head, accept=self._accept, subprotocol=self._subprotocol)
                if start is None:
                    return
                data, self._head = bytes(self._head[start:]), None
                self.ready.set_result(None)
            messages = self._parser.feed(data)
        except (HandshakeError, ValueError) as exc:
            self._fail(exc)
            return
        for opcode, payload in messages:
            if opcode in (OP_TEXT, OP_BINARY):
                self._message(now, msgpack.unpackb(payload) if opcode == OP_BINARY else orjson.loads(payload))
            elif opcode == OP_PING:
                self._write(encode_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self._closing:
                    self._closing = True
                    self._write(encode_frame(payload[:2], OP_CLOSE))
                if self.transport is not None:
                    self.transport.close()

    def _message(self, now: float, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "message":
            data = message["data"]
            received = Received(
                now,
                message["channel"],
                data["device_id"],
                int(data["metrics"]["n"]),
                message["offset"],
                message["epoch"],
            )
            self.received.append(received)
            if self._seen is not None and (received.device, received.n) == self._watched and not self._seen.done():
                self._seen.set_result(now)
        elif kind in ("reply", "error"):
            future = self.replies.get(message.get("id", -1))
            if kind == "error":
                exc = RuntimeError(f"the server refused op {message.get('id')}: {message.get('error')}")
                if future is not None and not future.done():
                    future.set_exception(exc)
                return
            if self.on_reply is not None:
                self.on_reply(message["result"])
            if future is not None and not future.done():
                future.set_result((now, message["result"]))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, exc: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("the server closed the connection during the handshake"))
        gone = ConnectionError(f"the dashboard's connection was lost (close code {self.close_code}): {exc!r}")
        for future in [*self.replies.values(), self._seen]:
            if future is not None and not future.done():
                future.set_exception(gone)
        if not self.closed.done():
            self.closed.set_result(None)


async def open_connection(host: str, port: int, make: Callable[[], Connection]) -> tuple[float, Connection]:
    """Connect and wait until ready (the 101 for a dashboard, ``hello`` for a device); the seconds it took."""
    began = time.perf_counter()
    _, connection = await asyncio.get_running_loop().create_connection(make, host, port)
    await asyncio.wait_for(connection.ready, OPEN_TIMEOUT_S)
    return time.perf_counter() - began, connection
