"""``GET /api/v1/ws``: the dashboard WebSocket (API.md §5), and the process's fan-out (Hub, Node, Broker).

Authentication: ``Authorization: Bearer <jwt|sk_live_…>`` at the handshake (refused with 403 when invalid),
or, for browsers, a first message ``{"op": "auth", "token": "…"}`` within 5 s (else close 4001). Device keys
may not subscribe. JSON text frames by default; MessagePack binary frames with subprotocol
``telehub.v1.msgpack``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from hub.auth.authenticator import Authenticator, bearer_token
from hub.auth.principal import Principal
from hub.errors import Unauthenticated
from hub.fanout.broker import StreamBroker
from hub.fanout.node import Node
from hub.fanout.registry import Encoding, Hub
from hub.fanout.session import DashboardSession, OpError, SessionLimits, decode_op

__all__ = ["DashboardSocket", "Fanout"]

MSGPACK_PROTOCOL = "telehub.v1.msgpack"
AUTH_TIMEOUT_S = 5.0
UNAUTHENTICATED = 4001


class Fanout:
    """One process's fan-out: the Hub of local subscriptions, the Node reading the streams they need."""

    def __init__(self, redis: Any, resolutions: tuple[str, ...], limits: SessionLimits | None = None) -> None:
        self.broker = StreamBroker(redis)
        self.node: Node
        self.hub = Hub(resolutions=resolutions, on_source_removed=lambda source: self.node.unfollow(source))
        self.node = Node(self.broker, self.hub)
        self.limits = limits or SessionLimits()

    def start(self) -> None:
        self.node.start()

    async def stop(self) -> None:
        await self.node.stop()


class DashboardSocket:
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        websocket = WebSocket(scope, receive, send)
        app = scope["app"]
        fanout: Fanout = app.state.fanout
        authenticator: Authenticator = app.state.services.authenticator
        encoding: Encoding = "msgpack" if MSGPACK_PROTOCOL in scope.get("subprotocols", ()) else "json"
        token = bearer_token(websocket.headers.get("authorization"))
        principal: Principal | None = None
        if token is not None:
            principal = await _resolve(authenticator, token)
            if principal is None:
                await websocket.close(UNAUTHENTICATED)  # before accept: the handshake is refused (403)
                return
        await websocket.accept(subprotocol=MSGPACK_PROTOCOL if encoding == "msgpack" else None)
        if principal is None:
            principal = await _first_message_auth(websocket, authenticator)
            if principal is None:
                return
        session = DashboardSession(
            websocket,
            encoding=encoding,
            principal=principal,
            hub=fanout.hub,
            node=fanout.node,
            broker=fanout.broker,
            limits=fanout.limits,
        )
        if token is None:
            session.send_auth_reply()
        await session.run()


async def _resolve(authenticator: Authenticator, token: str) -> Principal | None:
    try:
        principal = await authenticator.resolve(token)
    except Unauthenticated:
        return None
    return None if principal.kind == "device" else principal


async def _first_message_auth(websocket: WebSocket, authenticator: Authenticator) -> Principal | None:
    """The principal of a first ``auth`` message within AUTH_TIMEOUT_S; None (connection closed) otherwise."""
    try:
        message = await asyncio.wait_for(websocket.receive(), AUTH_TIMEOUT_S)
        if message["type"] == "websocket.disconnect":
            return None
        op = decode_op(message.get("bytes") or message.get("text") or b"")
    except (TimeoutError, OpError, WebSocketDisconnect):
        await websocket.close(UNAUTHENTICATED, "authenticate first: {op: auth, token} within 5 s")
        return None
    token = op.get("token")
    principal = await _resolve(authenticator, token) if op.get("op") == "auth" and isinstance(token, str) else None
    if principal is None:
        await websocket.close(UNAUTHENTICATED, "invalid credential")
    return principal
