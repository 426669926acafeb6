"""The device WebSocket on the lean path: an asyncio protocol over websockets' sans-I/O ``ServerProtocol``.

Frames go from ``data_received`` straight to :meth:`DeviceGateway.receive`: no ASGI messages, no queue, no
task switch per frame (the ASGI path costs about twice the CPU per small frame; see docs/performance.md).
The gateway does everything else, exactly as on its ASGI path: authentication, the session and its acks,
replacement, revocation, drain. Backpressure pauses the transport (TCP stops being read) until the store
and the session have room again; what one read already brought in is still taken (at most one read buffer
more than the bound). Heartbeats: a ping after ``ping_interval_s`` of silence, the connection dropped when no
pong (or anything else) arrives within ``ping_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from ingest.gateway import (
    SHUTTING_DOWN,
    SUBPROTOCOL,
    UNAUTHENTICATED,
    DeviceGateway,
    denial_body,
    hello_is_binary,
)
from ingest.session import DeviceSession

__all__ = ["DeviceConnection", "HeartbeatPolicy"]

log = logging.getLogger("telehub.ingest")

# How long a closing connection waits for the device's close frame before dropping the TCP connection.
CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True, kw_only=True)
class HeartbeatPolicy:
    # Silence before a ping; then the time the device has to answer (None: wait for ever).
    ping_interval_s: float = 20.0
    ping_timeout_s: float | None = 20.0


class DeviceConnection(asyncio.Protocol):
    """One device's TCP connection from the handshake request on. Not reusable."""

    def __init__(self, gateway: DeviceGateway, *, max_frame_bytes: int, heartbeat: HeartbeatPolicy | None) -> None:
        self.gateway = gateway
        self.heartbeat = heartbeat
        self.ws = ServerProtocol(
            select_subprotocol=_select_subprotocol, max_size=max_frame_bytes, logger=logging.getLogger(__name__)
        )
        self.transport: asyncio.Transport | None = None
        self.session: DeviceSession | None = None
        self.loop = asyncio.get_running_loop()
        self._fragments: list[bytes] = []
        self._fragment_binary = True
        self._paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_heard = self.loop.time()
        self._ping_sent_at: float | None = None
        self._heartbeat: asyncio.TimerHandle | None = None
        self._lost = asyncio.Event()

    # asyncio.Protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        self._last_heard = self.loop.time()
        self.ws.receive_data(data)
        self._handle(self.ws.events_received())
        self._flush()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._handle(self.ws.events_received())
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost.set()
        self._writable.set()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self.session is not None:
            self._spawn(self.gateway.close_session(self.session))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # Events from the WebSocket protocol.

    def _handle(self, events: list[Request | Frame | Any]) -> None:
        for event in events:
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request):
                self._spawn(self._handshake(event))

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        data = frame.data if type(frame.data) is bytes else bytes(frame.data)
        if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
            if frame.fin:
                self._message(data, opcode is Opcode.BINARY)
            else:
                self._fragments = [data]
                self._fragment_binary = opcode is Opcode.BINARY
        elif opcode is Opcode.CONT:
            self._fragments.append(data)
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                self._message(data, self._fragment_binary)
        elif opcode is Opcode.PONG:
            self._ping_sent_at = None

    def _message(self, data: bytes, binary: bool) -> None:
        session = self.session
        if session is None:  # frames before the handshake's end: a protocol violation, never acked
            self._abort()
            return
        if session.closed.is_set():
            return
        if binary:
            self.gateway.receive(session, data)
        else:
            try:
                self.gateway.receive(session, data.decode())
            except UnicodeDecodeError:  # websockets checks UTF-8 of text frames; fragments are joined here
                self.gateway.receive(session, data)
        if not self._paused and not self.gateway.can_read(session):
            self._pause(session)

    # Handshake.

    async def _handshake(self, request: Request) -> None:
        response = self.ws.accept(request)
        if response.status_code != 101:
            self._send_response(response)
            return
        if not self.gateway.accepting:
            self._send_response(_error_response(503, "unavailable", SHUTTING_DOWN))
            return
        device = await self.gateway.authenticate_header(request.headers.get("Authorization"))
        if self._lost.is_set():
            return
        if device is None:
            self._send_response(_error_response(401, "unauthenticated", UNAUTHENTICATED))
            return
        # Frames may follow the 101 at once: read none until the session that takes them exists.
        assert self.transport is not None
        self.transport.pause_reading()
        self._send_response(response)
        query = request.path.partition("?")[2].encode("latin-1")
        self.session = await self.gateway.open_session(device, self._send, binary=hello_is_binary(query))
        if self._lost.is_set():  # gone during the hello: the session ends as it began
            await self.gateway.close_session(self.session)
            return
        if self.heartbeat is not None:
            self._schedule_heartbeat()
        self._paused = True
        self._spawn(self._resume_when_ready(self.session))

    def _send_response(self, response: Response) -> None:
        self.ws.send_response(response)
        self._flush()

    # Sending: the session's writer task calls this with ASGI-shaped messages.

    async def _send(self, message: dict[str, Any]) -> None:
        if self._lost.is_set():
            raise ConnectionError("the device connection is closed")
        kind = message["type"]
        if kind == "websocket.send":
            data = message.get("bytes")
            if data is not None:
                self.ws.send_binary(data)
            else:
                self.ws.send_text(message["text"].encode())
        elif kind == "websocket.close":
            if self.ws.state is State.OPEN:
                self.ws.send_close(message.get("code", 1000), message.get("reason", ""))
            self.loop.call_later(CLOSE_TIMEOUT_S, self._abort)
        self._flush()
        if not self._writable.is_set():
            await self._writable.wait()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            else:  # the protocol's end of stream: the closing handshake is done (or the handshake refused)
                transport.close()
                return
        if self.ws.close_expected() and self.ws.state is State.CLOSED:
            transport.close()

    def _abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # Backpressure.

    def _pause(self, session: DeviceSession) -> None:
        assert self.transport is not None
        self._paused = True
        self.transport.pause_reading()
        self._spawn(self._resume_when_ready(session))

    async def _resume_when_ready(self, session: DeviceSession) -> None:
        await self.gateway.ready_to_read(session)
        self._paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # Heartbeats.

    def _schedule_heartbeat(self) -> None:
        assert self.heartbeat is not None
        self._heartbeat = self.loop.call_later(self.heartbeat.ping_interval_s / 2, self._check_heartbeat)

    def _check_heartbeat(self) -> None:
        assert self.heartbeat is not None
        now = self.loop.time()
        timeout = self.heartbeat.ping_timeout_s
        if self._paused:  # not reading on purpose: the device's silence is ours
            self._last_heard, self._ping_sent_at = now, None
        elif self._ping_sent_at is not None:
            if self._last_heard >= self._ping_sent_at:  # anything heard since the ping will do
                self._ping_sent_at = None
            elif timeout is not None and now - self._ping_sent_at > timeout:
                log.info("device %s missed its heartbeat; dropping the connection", self.session)
                self._abort()
                return
        silent = now - self._last_heard >= self.heartbeat.ping_interval_s
        if self._ping_sent_at is None and silent and self.ws.state is State.OPEN:
            self.ws.send_ping(b"")
            self._ping_sent_at = now
            self._flush()
        self._schedule_heartbeat()

    def _spawn(self, coroutine: Any) -> None:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if not isinstance(exc, (ConnectionError, InvalidHandshake)):
                log.error("device connection task failed", exc_info=exc)
            self._abort()


def _select_subprotocol(protocol: ServerProtocol, subprotocols: Any) -> Subprotocol | None:
    """``telehub.v1`` when the device offers it; no subprotocol otherwise (the device is still served)."""
    return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in subprotocols else None


def _error_response(status: int, code: str, message: str) -> Response:
    """A refused handshake in the contract's error envelope (the same body the ASGI path sends)."""
    request_id, body = denial_body(code, message)
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("X-Request-Id", request_id),
            ("Connection", "close"),
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)
