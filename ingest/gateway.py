"""The device WebSocket endpoint ``/api/v1/ws/device``, as a lean ASGI app (no per-message framework layer).

Handshake: the device key from ``Authorization: Bearer dk_…`` (401 otherwise), subprotocol ``telehub.v1``
when offered, then ``hello`` with the last stored seq. Each frame is decoded in the connection's task and
added to the shared batch; a rejected frame gets an ``error`` frame and the connection stays open. One
connection per device: a newer one, on any process, closes the older with 4003; a revoked or deleted device
is closed with 4001; shutdown stores and acks what is pending, then closes with 1012.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
from prometheus_client import Counter, Gauge

from ingest import at_rest, codec
from ingest.flusher import Flusher
from ingest.frames import CommandResultFrame, EventFrame, TelemetryFrame
from ingest.limits import FrameLimits
from ingest.ports import CommandSink, DeviceAuthenticator, DeviceIdentity, PresenceSink
from ingest.session import DeviceSession, Send
from ingest.stream_writer import StreamWriter

__all__ = ["DeviceGateway", "GatewaySettings", "denial_body", "deny_handshake", "hello_is_binary"]

log = logging.getLogger("telehub.ingest")

SUBPROTOCOL = "telehub.v1"
CLOSE_REVOKED = 4001
CLOSE_REPLACED = 4003
CLOSE_RESTART = 1012
# At shutdown, how long the devices have to answer the 1012 close frame before the process exits.
CLOSE_HANDSHAKE_S = 2.0
UNAUTHENTICATED = "send Authorization: Bearer <device key>"
SHUTTING_DOWN = "the server is shutting down; reconnect shortly"

CONNECTIONS = Gauge("telehub_device_connections", "open device WebSocket connections")
FRAMES_REJECTED = Counter("telehub_ingest_frames_rejected_total", "device frames answered with an error", ["code"])

Announce = Callable[[dict[str, Any]], Awaitable[None]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    limits: FrameLimits = field(default_factory=FrameLimits)
    # Frames one connection may have waiting to be stored before its socket is no longer read.
    max_in_flight: int = 1024
    shutdown_timeout_s: float = 10.0


class DeviceGateway:
    def __init__(
        self,
        *,
        authenticate: DeviceAuthenticator,
        presence: PresenceSink,
        flusher: Flusher,
        writer: StreamWriter,
        announce: Announce,
        settings: GatewaySettings | None = None,
        clock: Callable[[], int] = _now_ms,
        commands: CommandSink | None = None,
    ) -> None:
        self.authenticate = authenticate
        self.commands = commands
        self._tasks: set[asyncio.Task[None]] = set()
        self.presence = presence
        self.flusher = flusher
        self.writer = writer
        self.announce = announce
        self.settings = settings or GatewaySettings()
        self.clock = clock
        self.sessions: dict[DeviceIdentity, DeviceSession] = {}
        self.accepting = True
        # Cleared while draining: connections stop reading, so the last flush has an end.
        self._reading = asyncio.Event()
        self._reading.set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI endpoint (any ASGI server, and the in-process test client). ``telehub serve`` takes device
        connections on the leaner path of :mod:`ingest.device_connection`, over the same methods below."""
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        if not self.accepting:
            await deny_handshake(scope, send, 503, "unavailable", SHUTTING_DOWN)
            return
        device = await self.authenticate_header(_header(scope, b"authorization"))
        if device is None:
            await deny_handshake(scope, send, 401, "unauthenticated", UNAUTHENTICATED)
            return
        offered = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL if SUBPROTOCOL in offered else None})
        # Opened in a task of its own, so a cancel (an ASGI server may cancel the app as soon as the socket is
        # gone) never leaves a registered session, marked online, that nothing will close.
        opening = asyncio.ensure_future(
            self.open_session(device, send, binary=hello_is_binary(scope.get("query_string", b"")))
        )
        try:
            session = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(self._close_once_open)
            raise
        try:
            while True:
                await self.ready_to_read(session)
                message = await receive()
                if message["type"] != "websocket.receive" or session.closed.is_set():
                    return
                data = message.get("bytes")
                self.receive(session, data if data is not None else message.get("text") or "")
        finally:
            await self.close_session(session)

    # The steps of a connection, whichever server runs it.

    async def authenticate_header(self, authorization: str | None) -> DeviceIdentity | None:
        """The device of an ``Authorization: Bearer <device key>`` header, or None."""
        if authorization is None:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return await self.authenticate(token.strip())

    async def open_session(self, device: DeviceIdentity, send: Send, *, binary: bool) -> DeviceSession:
        """After the handshake: replace an older connection of the device, say hello, mark it online."""
        session = DeviceSession(device, send, max_in_flight=self.settings.max_in_flight, binary=binary)
        older = self.sessions.get(device)
        if older is not None:
            older.close(CLOSE_REPLACED, "session_replaced")
        self.sessions[device] = session
        CONNECTIONS.inc()
        session.generation = await self.writer.next_generation(device.org_id, device.device_id)
        if session.announced_meanwhile > session.generation:  # a newer connection opened meanwhile
            session.close(CLOSE_REPLACED, "session_replaced")
        await self.announce(
            {
                "type": "session_opened",
                "org_id": device.org_id,
                "device_id": device.device_id,
                "connection_id": session.connection_id,
                "generation": session.generation,
            }
        )
        last_seq = await self.writer.last_seq(device.org_id, device.device_id)
        session.start(last_seq, self.clock())
        await self.presence.connected(device, session.connection_id)
        if self.commands is not None:  # its queued commands, after the hello, while frames are read
            self._spawn(self.commands.connected(device))
        return session

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("a device connection's background work (commands, presence) failed", exc_info=exc)

    def can_read(self, session: DeviceSession) -> bool:
        """Whether the connection may read another frame now (the store has room, the session too)."""
        return self.flusher.has_room() and session.has_room() and self._reading.is_set()

    async def ready_to_read(self, session: DeviceSession) -> None:
        """Wait until :meth:`can_read`: the backpressure that stops reading sockets."""
        while not self.can_read(session):
            await self.flusher.room()
            await session.room()
            await self._reading.wait()

    def receive(self, session: DeviceSession, data: bytes | str) -> None:
        """One message from the device: decoded and added to the batch, or answered with an error frame."""
        try:
            frame = codec.decode_frame(data, now_ms=self.clock(), limits=self.settings.limits)
        except codec.FrameError as exc:
            FRAMES_REJECTED.labels(exc.code).inc()
            session.reply(codec.error(exc.seq, exc.code, exc.message), binary=isinstance(data, bytes))
            return
        session.binary = frame.binary
        if isinstance(frame, CommandResultFrame) and self.commands is not None:
            session.frame_added()  # counted in flight until taken or refused
            self._spawn(self._command_result(session, frame))
            return
        seq = 0 if isinstance(frame, CommandResultFrame) else frame.seq
        if seq == session.received_seq + 1:  # the usual case, inline: the next frame in order
            session.received_seq = seq
        elif not session.received(seq):
            # Stored it would be lost (the store keeps only seqs above the highest stored), so it is refused.
            FRAMES_REJECTED.labels("invalid_seq").inc()
            message = f"seq {seq} comes after {session.received_seq} on this connection: seqs must grow"
            session.reply(codec.error(seq, "invalid_seq", message), binary=frame.binary)
            return
        session.frame_added()
        if isinstance(frame, TelemetryFrame):
            encoding, raw = at_rest.stored(frame)
            self.flusher.add(session.device, seq, _kind(frame), encoding, raw, session, frame.samples)
        else:
            self.flusher.add(session.device, seq, _kind(frame), at_rest.encoding(frame.binary), frame.raw, session)

    async def _command_result(self, session: DeviceSession, frame: CommandResultFrame) -> None:
        """The command takes the result (then the frame joins the device's history), or the device is told why
        not; either way the frame is answered."""
        assert self.commands is not None
        try:
            refused = await self.commands.result(session.device, frame)
        except Exception:
            log.exception("taking the result of %s failed", frame.command_id)
            refused = ("unavailable", "the result could not be taken now; send it again")
        if refused is None:
            self.flusher.add(session.device, 0, b"command_result", at_rest.encoding(frame.binary), frame.raw, session)
            return
        session.refused()
        FRAMES_REJECTED.labels(refused[0]).inc()
        session.reply(codec.error(None, *refused), binary=frame.binary)

    async def close_session(self, session: DeviceSession) -> None:
        """After the connection ended, however it ended: forget it and mark the device offline."""
        if self.sessions.get(session.device) is session:
            del self.sessions[session.device]
        CONNECTIONS.dec()
        await session.finish()
        # In a task of its own: the offline mark lands even when this connection's task is cancelled.
        await asyncio.shield(self._spawn(self.presence.disconnected(session.device, session.connection_id)))

    def _close_once_open(self, opening: asyncio.Task[DeviceSession]) -> None:
        """``opening`` went on after its connection's task was cancelled: close the session it opened."""
        if not opening.cancelled() and opening.exception() is None:
            self._spawn(self.close_session(opening.result()))

    def on_control(self, message: dict[str, Any]) -> None:
        """A message from the control channel (any process): close a replaced or revoked connection here."""
        try:
            device = DeviceIdentity(message["org_id"], message["device_id"])
        except (KeyError, TypeError):
            return
        session = self.sessions.get(device)
        if session is None:
            return
        if message.get("type") == "session_opened" and message.get("connection_id") != session.connection_id:
            # Notices can arrive out of order (published over different connections, or through different
            # nodes of a cluster): only a newer connection replaces this one. A notice without a generation
            # (from a process of an earlier version) replaces it, as it always did.
            generation = message.get("generation")
            if type(generation) is not int:
                session.close(CLOSE_REPLACED, "session_replaced")
            elif session.generation is None:
                session.announced_meanwhile = max(session.announced_meanwhile, generation)
            elif generation > session.generation:
                session.close(CLOSE_REPLACED, "session_replaced")
        elif message.get("type") == "device_key_revoked":
            session.close(CLOSE_REVOKED, "revoked")

    async def drain(self) -> None:
        """Shutdown: refuse new devices, store and ack everything pending, then close every connection 1012."""
        self.accepting = False
        self._reading.clear()
        try:
            await asyncio.wait_for(self.flusher.stop(), self.settings.shutdown_timeout_s)
        except TimeoutError:
            log.error("shutdown: frames still unstored after %.0f s (Redis down?)", self.settings.shutdown_timeout_s)
        sessions = list(self.sessions.values())
        for session in sessions:
            session.close(CLOSE_RESTART, "server restarting")
        waits = [asyncio.create_task(s.closed.wait()) for s in sessions]
        if waits:
            await asyncio.wait(waits, timeout=self.settings.shutdown_timeout_s)
            for task in waits:
                task.cancel()
        # Let the receive loops run on: they see the close and end, so the server can finish.
        self._reading.set()
        # Then wait for each closing handshake to end (the device's own close frame read). A process that
        # exits with a device's frames still unread resets the connection, and a reset can discard the 1012
        # before the device has read it.
        ends = [asyncio.create_task(s.ended.wait()) for s in sessions]
        if ends:
            await asyncio.wait(ends, timeout=CLOSE_HANDSHAKE_S)
            for task in ends:
                task.cancel()


def _kind(frame: TelemetryFrame | EventFrame | CommandResultFrame) -> bytes:
    if isinstance(frame, TelemetryFrame):
        return frame.kind.encode()
    if isinstance(frame, EventFrame):
        return b"event"
    return b"command_result"


def hello_is_binary(query_string: bytes) -> bool:
    """``hello`` answers no frame: MessagePack unless the URL asks ``?encoding=json``."""
    query = parse_qs(query_string.decode("latin-1"))
    encoding: str = query.get("encoding", ["msgpack"])[0]
    return encoding != "json"


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def denial_body(code: str, message: str) -> tuple[str, bytes]:
    """The request id and JSON body of a refused handshake (the contract's error envelope)."""
    request_id = "req_" + secrets.token_hex(12)
    return request_id, orjson.dumps({"error": {"code": code, "message": message, "request_id": request_id}})


async def deny_handshake(scope: dict[str, Any], send: Any, status: int, code: str, message: str) -> None:
    """Refuse the handshake with an HTTP status and the error envelope (or a bare close if unsupported)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        request_id, body = denial_body(code, message)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
        ]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 4001 if status == 401 else 1013 if status == 503 else 4029})
