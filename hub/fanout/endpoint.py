"""``GET /api/v1/ws`` over ASGI: the dashboard WebSocket (API.md §5) for any ASGI server and the in-process tests.

``telehub serve`` takes these connections on the lean path instead (``hub.fanout.connection``); both
authenticate and run sessions through the process's ``Fanout``, so they behave the same. Authentication:
``Authorization: Bearer <jwt|sk_live_…>`` at the handshake (refused with 401 and the contract's error envelope
when invalid; 429 ``too_many_connections`` over the limit per credential), or a first message
``{"op": "auth", "token": "…"}`` within 5 s (else close 4001). Device keys may not subscribe.
JSON text frames by default; MessagePack binary frames with subprotocol ``telehub.v1.msgpack``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from hub.auth.authenticator import bearer_token
from hub.auth.principal import Principal
from hub.fanout.limiter import Lease
from hub.fanout.registry import Encoding, Outgoing
from hub.fanout.service import (
    AUTH_TIMEOUT_S,
    GOING_AWAY,
    MSGPACK_PROTOCOL,
    TOO_MANY_CONNECTIONS,
    UNAUTHENTICATED,
    Fanout,
    too_many,
)
from hub.fanout.session import SLOW_CONSUMER
from ingest.gateway import deny_handshake

__all__ = ["AsgiOutbox", "DashboardSocket"]

# How long closing may wait on a client that does not read.
CLOSE_TIMEOUT_S = 2.0


class AsgiOutbox:
    """A session's outbox over an ASGI WebSocket: a buffer drained by one writer task."""

    def __init__(self, websocket: WebSocket, limit: int) -> None:
        self.websocket = websocket
        self.limit = limit
        self._buffer: list[Outgoing] = []
        self._buffered = 0
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._close: tuple[int, str] | None = None

    def put(self, message: Outgoing) -> bool:
        if self._close is None:
            self._buffer.append(message)
            self._buffered += len(message)
            self._ready.set()
        return self._buffered <= self.limit

    def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            if code == SLOW_CONSUMER:
                self._buffer.clear()
            self._ready.set()

    def backlog(self) -> int:
        return self._buffered

    async def room(self) -> None:
        while self._buffered > self.limit // 4 and self._close is None:
            self._drained.clear()
            await self._drained.wait()

    async def run(self) -> None:
        """Write until closed (then send the close frame) or until the connection fails."""
        try:
            await self._write()
        finally:
            self._close = self._close or (1006, "")
            self._drained.set()

    async def _write(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._buffer = self._buffer, []
            for message in batch:
                if self._close is not None and self._close[0] == SLOW_CONSUMER:
                    break
                self._buffered -= len(message)
                if message.binary:
                    await self.websocket.send_bytes(message.data)
                else:
                    await self.websocket.send_text(message.data.decode())
                if self._buffered <= self.limit // 4:
                    self._drained.set()
            if self._close is not None and not self._buffer:
                self._drained.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.websocket.close(*self._close), CLOSE_TIMEOUT_S)
                return


class DashboardSocket:
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        websocket = WebSocket(scope, receive, send)
        fanout: Fanout = scope["app"].state.fanout
        encoding: Encoding = "msgpack" if MSGPACK_PROTOCOL in scope.get("subprotocols", ()) else "json"
        token = bearer_token(websocket.headers.get("authorization"))
        principal: Principal | None = None
        lease: Lease | None = None
        if not fanout.accepting:
            await deny_handshake(scope, send, 503, "unavailable", "the server is shutting down; connect again")
            return
        if token is not None:
            principal = await fanout.principal(token)
            if principal is None:
                await deny_handshake(scope, send, 401, "unauthenticated", "invalid or expired credential")
                return
            lease = await fanout.admit(principal)
            if lease is None:
                await deny_handshake(scope, send, 429, "too_many_connections", too_many(fanout))
                return
        await websocket.accept(subprotocol=MSGPACK_PROTOCOL if encoding == "msgpack" else None)
        if principal is None:
            principal = await _first_message_auth(websocket, fanout)
            if principal is None:
                return
            lease = await fanout.admit(principal)
            if lease is None:
                await websocket.close(TOO_MANY_CONNECTIONS, too_many(fanout))
                return
        outbox = AsgiOutbox(websocket, fanout.limits.send_buffer_bytes)
        session = fanout.open(outbox, principal, encoding)
        writer = asyncio.get_running_loop().create_task(outbox.run())
        try:
            if token is None:
                session.send_auth_reply()
            while not writer.done():
                receiving = asyncio.ensure_future(websocket.receive())
                await asyncio.wait({receiving, writer}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()
                    break
                message = receiving.result()
                if message["type"] == "websocket.disconnect":
                    break
                await session.handle(message.get("bytes") or message.get("text") or b"")
        finally:
            if not writer.done():
                outbox.close(GOING_AWAY, "")
                writer.cancel()
            await fanout.end(session, lease)
            await asyncio.gather(writer, return_exceptions=True)


async def _first_message_auth(websocket: WebSocket, fanout: Fanout) -> Principal | None:
    """The principal of a first ``auth`` message within AUTH_TIMEOUT_S; None (connection closed) otherwise."""
    try:
        message = await asyncio.wait_for(websocket.receive(), AUTH_TIMEOUT_S)
    except (TimeoutError, WebSocketDisconnect):
        message = {"type": "timeout"}
    if message["type"] == "websocket.disconnect":
        return None
    principal = None
    if message["type"] == "websocket.receive":
        principal = await fanout.first_message_principal(message.get("bytes") or message.get("text") or b"")
    if principal is None:
        await websocket.close(UNAUTHENTICATED, "authenticate first: {op: auth, token} within 5 s")
    return principal
