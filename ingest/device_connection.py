"""The device WebSocket on the lean path: an asyncio protocol over websockets' sans-I/O ``ServerProtocol``.

Frames go from ``data_received`` straight to :meth:`DeviceGateway.receive`: no ASGI messages, no queue, no
task switch per frame (the ASGI path costs about twice the CPU per small frame; see docs/performance.md).
The gateway does everything else, exactly as on its ASGI path: authentication, the session and its acks,
replacement, revocation, drain. Backpressure pauses the transport (TCP stops being read) until the store
and the session have room again; what one read already brought in is still taken (at most one read buffer
more than the bound). The WebSocket protocol, heartbeats and closing are :mod:`ingest.lean_websocket`'s.
"""

from __future__ import annotations

import logging
from typing import Any

from websockets.http11 import Request, Response

from ingest.gateway import (
    SHUTTING_DOWN,
    SUBPROTOCOL,
    UNAUTHENTICATED,
    DeviceGateway,
    denial_body,
    hello_is_binary,
)
from ingest.lean_websocket import HeartbeatPolicy, LeanWebSocket, error_response
from ingest.session import DeviceSession

__all__ = ["DeviceConnection", "HeartbeatPolicy"]

log = logging.getLogger("telehub.ingest")


class DeviceConnection(LeanWebSocket):
    """One device's TCP connection from the handshake request on. Not reusable."""

    def __init__(self, gateway: DeviceGateway, *, max_frame_bytes: int, heartbeat: HeartbeatPolicy | None) -> None:
        super().__init__(subprotocol=SUBPROTOCOL, max_frame_bytes=max_frame_bytes, heartbeat=heartbeat)
        self.gateway = gateway
        self.session: DeviceSession | None = None

    def __str__(self) -> str:
        return f"device {self.session}"

    def closed(self) -> None:
        if self.session is not None:
            self.spawn(self.gateway.close_session(self.session))

    def message(self, data: bytes, binary: bool) -> None:
        session = self.session
        if session is None:  # frames before the handshake's end: a protocol violation, never acked
            self.abort()
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
        if not self.reading_paused and not self.gateway.can_read(session):
            self._pause(session)

    # Handshake.

    async def handshake(self, request: Request) -> None:
        response = self.ws.accept(request)
        if response.status_code != 101:
            self.send_response(response)
            return
        if not self.gateway.accepting:
            self.send_response(_refusal(503, "unavailable", SHUTTING_DOWN))
            return
        device = await self.gateway.authenticate_header(request.headers.get("Authorization"))
        if self.lost.is_set():
            return
        if device is None:
            self.send_response(_refusal(401, "unauthenticated", UNAUTHENTICATED))
            return
        # Frames may follow the 101 at once: read none until the session that takes them exists.
        assert self.transport is not None
        self.transport.pause_reading()
        self.send_response(response)
        query = request.path.partition("?")[2].encode("latin-1")
        self.session = await self.gateway.open_session(device, self._send, binary=hello_is_binary(query))
        if self.lost.is_set():  # gone during the hello: the session ends as it began
            await self.gateway.close_session(self.session)
            return
        self.start_heartbeat()
        self.reading_paused = True
        self.spawn(self._resume_when_ready(self.session))

    # Sending: the session's writer task calls this with ASGI-shaped messages.

    async def _send(self, message: dict[str, Any]) -> None:
        if self.lost.is_set():
            raise ConnectionError("the device connection is closed")
        kind = message["type"]
        if kind == "websocket.send":
            data = message.get("bytes")
            if data is not None:
                self.ws.send_binary(data)
            else:
                self.ws.send_text(message["text"].encode())
            self.flush()
        elif kind == "websocket.close":
            self.close(message.get("code", 1000), message.get("reason", ""))
        if not self.writable.is_set():
            await self.writable.wait()

    # Backpressure.

    def _pause(self, session: DeviceSession) -> None:
        assert self.transport is not None
        self.reading_paused = True
        self.transport.pause_reading()
        self.spawn(self._resume_when_ready(session))

    async def _resume_when_ready(self, session: DeviceSession) -> None:
        await self.gateway.ready_to_read(session)
        self.reading_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


def _refusal(status: int, code: str, message: str) -> Response:
    """A refused handshake in the contract's error envelope (the same body the ASGI path sends)."""
    request_id, body = denial_body(code, message)
    return error_response(status, body, request_id)
