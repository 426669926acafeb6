"""A WebSocket server connection on the lean path: an asyncio protocol over websockets' sans-I/O
``ServerProtocol``, with no ASGI in between.

uvicorn's ASGI WebSocket turns every frame into a message dict, a queue entry and a task switch; the device
and dashboard connections instead take frames straight from ``data_received`` and write straight to the
transport. This base does what both need: the handshake request handed to ``handshake`` (a coroutine that
answers with ``accept_response`` or ``refuse``), messages reassembled from fragments and handed to
``message``, the close handshake with a bound on how long the peer may take, and heartbeats: a ping after
``ping_interval_s`` of silence, the connection dropped when nothing (a pong or anything else) arrives within
``ping_timeout_s``. A subclass that stops reading on purpose sets ``reading_paused``, so that its own silence
is not held against the peer.

Once the connection is open, the frames of the common case (complete, masked, unfragmented data frames, pings
and pongs, within the size limit) are read by :func:`ingest.ws_frames.direct_frames` straight from the bytes
received, which costs a small frame about a third of websockets' generator-based parser. The first frame it
does not take (a close, a fragment, anything invalid or too large) and everything after it go to websockets'
``ServerProtocol`` for the rest of the connection, from a frame boundary, so closing, fragments and every
protocol error are websockets' own. At debug level each frame read there is logged as websockets logs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
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

from ingest.flag import Flag
from ingest.ws_frames import DirectFrames, direct_frames

__all__ = ["CLOSE_TIMEOUT_S", "HeartbeatPolicy", "LeanWebSocket", "error_response"]

log = logging.getLogger("telehub.websocket")

# How long a closing connection waits for the peer's close frame before dropping the TCP connection.
CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True, kw_only=True)
class HeartbeatPolicy:
    # Silence before a ping; then the time the peer has to answer (None: wait for ever).
    ping_interval_s: float = 20.0
    ping_timeout_s: float | None = 20.0


class LeanWebSocket(asyncio.Protocol):
    """One TCP connection from the handshake request on. Not reusable."""

    def __init__(self, *, subprotocol: str, max_frame_bytes: int, heartbeat: HeartbeatPolicy | None) -> None:
        self.heartbeat = heartbeat
        self.subprotocol = subprotocol
        self.ws = ServerProtocol(
            select_subprotocol=_offered(subprotocol), max_size=max_frame_bytes, logger=logging.getLogger(__name__)
        )
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.reading_paused = False
        self.lost = Flag()
        self.writable = Flag(initially=True)
        self._fragments: list[bytes] = []
        self._fragment_binary = True
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_heard = self.loop.time()
        self._ping_sent_at: float | None = None
        self._heartbeat: asyncio.TimerHandle | None = None
        self._request: Request | None = None
        self._max_frame_bytes = max_frame_bytes
        # Set once open (``send_response``) while nothing unparsed is buffered: frames go to ``direct_frames``.
        self._direct: DirectFrames | None = None

    # What a connection does with its handshake and its messages.

    async def handshake(self, request: Request) -> None:
        raise NotImplementedError

    def message(self, data: bytes, binary: bool) -> None:
        raise NotImplementedError

    def closed(self) -> None:
        """The TCP connection is gone."""

    # asyncio.Protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        self._last_heard = self.loop.time()
        direct = self._direct
        if direct is not None:
            rest = direct_frames(direct, data, self)
            if rest is None:
                if direct.replies:
                    self.flush()
                    direct.replies = False
                return
            self._direct = None  # websockets' parser from here on, starting at a frame boundary
            data = rest
        self.ws.receive_data(data)
        self._handle(self.ws.events_received())
        self.flush()

    def eof_received(self) -> bool | None:
        self._direct = None  # a partial frame held there is lost either way: the peer is gone
        self.ws.receive_eof()
        self._handle(self.ws.events_received())
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self.writable.set()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self.closed()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # Events from the WebSocket protocol.

    def _handle(self, events: list[Request | Frame | Any]) -> None:
        for event in events:
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request):
                self._request = event
                self.spawn(self.handshake(event))

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        data = frame.data if type(frame.data) is bytes else bytes(frame.data)
        if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
            if frame.fin:
                self.message(data, opcode is Opcode.BINARY)
            else:
                self._fragments = [data]
                self._fragment_binary = opcode is Opcode.BINARY
        elif opcode is Opcode.CONT:
            self._fragments.append(data)
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                self.message(data, self._fragment_binary)
        elif opcode is Opcode.PONG:
            self.pong_received()

    def pong_received(self) -> None:
        """Whichever parser read it: the ping is answered."""
        self._ping_sent_at = None

    # Writing.

    def send_response(self, response: Response) -> None:
        """The handshake's answer: 101, or a refusal (then the connection closes)."""
        self.ws.send_response(response)
        if self.ws.state is State.OPEN and not self.ws.reader.buffer:
            self._direct = DirectFrames(max_size=self._max_frame_bytes)
        self.flush()
        if self._request is not None:
            # websockets' parser keeps the request for the connection's life: its headers (a few KiB) are not
            # needed once answered.
            self._request.headers.clear()
            self._request = None

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake; the TCP connection is dropped if the peer has not answered in time."""
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
        self.loop.call_later(CLOSE_TIMEOUT_S, self.abort)
        self.flush()

    def flush(self) -> None:
        """Write what the WebSocket protocol has for the peer."""
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

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # Heartbeats.

    def start_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self._heartbeat = self.loop.call_later(self.heartbeat.ping_interval_s / 2, self._check_heartbeat)

    def _check_heartbeat(self) -> None:
        assert self.heartbeat is not None
        now = self.loop.time()
        timeout = self.heartbeat.ping_timeout_s
        if self.reading_paused:  # not reading on purpose: the peer's silence is ours
            self._last_heard, self._ping_sent_at = now, None
        elif self._ping_sent_at is not None:
            if self._last_heard >= self._ping_sent_at:  # anything heard since the ping will do
                self._ping_sent_at = None
            elif timeout is not None and now - self._ping_sent_at > timeout:
                log.info("%s missed its heartbeat; dropping the connection", self)
                self.abort()
                return
        silent = now - self._last_heard >= self.heartbeat.ping_interval_s
        if self._ping_sent_at is None and silent and self.ws.state is State.OPEN:
            self.ws.send_ping(b"")
            self._ping_sent_at = now
            self.flush()
        self.start_heartbeat()

    # Tasks: a failure drops the connection.

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if not isinstance(exc, (ConnectionError, InvalidHandshake)):
                log.error("%s: a connection task failed", type(self).__name__, exc_info=exc)
            self.abort()


def _offered(subprotocol: str) -> Callable[[ServerProtocol, Any], Subprotocol | None]:
    """Selects ``subprotocol`` when the peer offers it, none otherwise (the peer is still served)."""

    def select(protocol: ServerProtocol, subprotocols: Any) -> Subprotocol | None:
        return Subprotocol(subprotocol) if subprotocol in subprotocols else None

    return select


def error_response(status: int, body: bytes, request_id: str) -> Response:
    """A refused handshake carrying the contract's JSON error envelope ``body``."""
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("X-Request-Id", request_id),
            ("Connection", "close"),
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)
