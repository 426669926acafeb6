"""uvicorn's WebSocket protocol for ``telehub serve``: device and dashboard connections on the lean path, the
rest by ASGI.

uvicorn hands a WebSocket upgrade to the class named by its ``ws`` setting: it builds one per connection,
gives it the transport and the request's bytes, then makes it the transport's protocol. This class reads
the request line: ``/api/v1/ws/device`` goes to :class:`ingest.device_connection.DeviceConnection` (frames
straight into the ingest loop), ``/api/v1/ws`` to :class:`hub.fanout.connection.DashboardConnection` (frames
straight from the fan-out), every other path to uvicorn's sans-I/O websockets implementation and the
ASGI app. It stays the transport's protocol and forwards each callback to the one it chose.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from hub.fanout.connection import DashboardConnection
from ingest.device_connection import DeviceConnection
from ingest.lean_websocket import HeartbeatPolicy

__all__ = ["DASHBOARD_PATH", "DEVICE_PATH", "WebSocketDispatch"]

DEVICE_PATH = b"/api/v1/ws/device"
DASHBOARD_PATH = b"/api/v1/ws"
# A dashboard's own messages are small ops (the session refuses more than 16 KiB with too_large).
DASHBOARD_MESSAGE_BYTES = 65_536


class WebSocketDispatch(asyncio.Protocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any]) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.transport: asyncio.Transport | None = None
        self.chosen: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        if self.chosen is None:
            self.chosen = self._choose(data)
            self.chosen.connection_made(self.transport)  # type: ignore[arg-type]
        self.chosen.data_received(data)

    def eof_received(self) -> bool | None:
        return self.chosen.eof_received() if self.chosen is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.chosen is not None:
            self.chosen.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.chosen is not None:
            self.chosen.pause_writing()

    def resume_writing(self) -> None:
        if self.chosen is not None:
            self.chosen.resume_writing()

    def _choose(self, request: bytes) -> asyncio.Protocol:
        """The device path, when this process runs an ingest gateway; uvicorn's ASGI WebSocket otherwise."""
        target = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
        path = target.partition(b"?")[0]
        interval, timeout = self.config.ws_ping_interval, self.config.ws_ping_timeout
        heartbeat = None if interval is None else HeartbeatPolicy(ping_interval_s=interval, ping_timeout_s=timeout)
        ingest = self.app_state.get("device_ingest")
        if path == DEVICE_PATH and ingest is not None:
            return DeviceConnection(ingest.gateway, max_frame_bytes=self.config.ws_max_size, heartbeat=heartbeat)
        fanout = self.app_state.get("fanout")
        if path == DASHBOARD_PATH and fanout is not None:
            return DashboardConnection(fanout, max_frame_bytes=DASHBOARD_MESSAGE_BYTES, heartbeat=heartbeat)
        return WebSocketsSansIOProtocol(config=self.config, server_state=self.server_state, app_state=self.app_state)
