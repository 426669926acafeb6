"""One process's fan-out: the Hub of local subscriptions, the Node reading the streams they need, the Broker,
the limit on connections per credential, and the open sessions (closed with 1012 when the server drains).

Both ways in, the lean connection ``telehub serve`` uses and the ASGI endpoint, authenticate and open
sessions through this object, so they behave the same.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hub.auth.authenticator import Authenticator
from hub.auth.principal import Principal
from hub.config import HubConfig
from hub.errors import Unauthenticated
from hub.fanout.broker import StreamBroker
from hub.fanout.channels import Source
from hub.fanout.limiter import ConnectionLimiter, Lease
from hub.fanout.node import Node
from hub.fanout.ops import OpError, decode_op
from hub.fanout.registry import Encoding, Hub
from hub.fanout.session import DashboardSession, Outbox, SessionLimits
from ingest.aggregates import resolution_label

__all__ = [
    "AUTH_TIMEOUT_S",
    "GOING_AWAY",
    "MSGPACK_PROTOCOL",
    "TOO_MANY_CONNECTIONS",
    "UNAUTHENTICATED",
    "Fanout",
    "too_many",
]

MSGPACK_PROTOCOL = "telehub.v1.msgpack"
AUTH_TIMEOUT_S = 5.0
UNAUTHENTICATED = 4001
TOO_MANY_CONNECTIONS = 4029
GOING_AWAY = 1012


def too_many(fanout: Fanout) -> str:
    """Why a connection over the limit per credential is refused."""
    return f"this credential has {fanout.limiter.limit} dashboard connections open already; close one first"


class Fanout:
    def __init__(
        self,
        redis: Any,
        authenticator: Authenticator,
        *,
        resolutions: tuple[str, ...],
        limits: SessionLimits | None = None,
        max_connections: int = 1_000,
        retention: dict[str, int] | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.broker = StreamBroker(redis)
        self.hub = Hub(resolutions=resolutions, on_source_removed=lambda source: self.node.unfollow(source))
        self.node = Node(self.broker, self.hub)
        self.limits = limits or SessionLimits()
        self.limiter = ConnectionLimiter(redis, max_connections)
        self._retention = retention or {}
        self.sessions: set[DashboardSession] = set()
        self._expiries: dict[DashboardSession, asyncio.TimerHandle] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        self.accepting = True

    @classmethod
    def from_config(cls, config: HubConfig, redis: Any, authenticator: Authenticator) -> Fanout:
        widths = config.aggregate_resolutions_ms
        resolutions = tuple(resolution_label(width) for width in widths)
        base = config.retention
        retention: dict[str, int] = {
            "frames": base.frames_ms,
            "telemetry": base.telemetry_ms,
            "events": base.events_ms,
        }
        retention.update(zip(resolutions, config.aggregate_retention_ms, strict=True))
        limits = SessionLimits(
            send_buffer_bytes=config.dashboard_send_buffer_bytes,
            max_subscriptions=config.dashboard_max_subscriptions,
            max_replay=config.dashboard_max_replay,
        )
        return cls(
            redis,
            authenticator,
            resolutions=resolutions,
            limits=limits,
            max_connections=config.dashboard_max_connections,
            retention=retention,
        )

    def start(self) -> None:
        self.node.start()
        self.limiter.start()

    async def stop(self) -> None:
        await self.limiter.stop()
        await self.node.stop()

    async def drain(self) -> None:
        """The server is going away: refuse new dashboards and close the open ones with 1012."""
        self.accepting = False
        for session in list(self.sessions):
            session.close(GOING_AWAY, "server shutting down; reconnect and resubscribe with since")

    def on_control(self, message: dict[str, Any]) -> None:
        """A control message from any process: a deleted user's or API key's dashboards close with 4001."""
        if message.get("type") != "credential_revoked":
            return
        for session in list(self.sessions):
            principal = session.principal
            if (principal.kind, principal.id, principal.org_id) == (message["kind"], message["id"], message["org_id"]):
                session.close(UNAUTHENTICATED, "credential revoked")

    def retention_of(self, source: Source) -> int | None:
        """How long ``source``'s stream keeps entries (None: not known here)."""
        if source.kind == "telemetry":
            return self._retention.get("frames" if source.device_id is not None else "telemetry")
        if source.kind == "aggregates":
            return self._retention.get(source.resolution or "")
        return self._retention.get(source.kind)

    # Authentication.

    async def principal(self, token: str) -> Principal | None:
        """Who ``token`` is, when it may subscribe (a user or API key; device keys may not)."""
        try:
            principal = await self.authenticator.resolve(token)
        except Unauthenticated:
            return None
        return None if principal.kind == "device" else principal

    async def first_message_principal(self, raw: bytes | str) -> Principal | None:
        """The principal of a first message ``{"op": "auth", "token": …}``; None for anything else."""
        try:
            op = decode_op(raw)
        except OpError:
            return None
        token = op.get("token")
        if op.get("op") != "auth" or not isinstance(token, str):
            return None
        return await self.principal(token)

    # Sessions.

    async def admit(self, principal: Principal) -> Lease | None:
        return await self.limiter.admit(principal)

    def open(self, outbox: Outbox, principal: Principal, encoding: Encoding) -> DashboardSession:
        session = DashboardSession(
            outbox,
            encoding=encoding,
            principal=principal,
            hub=self.hub,
            node=self.node,
            broker=self.broker,
            limits=self.limits,
            retention=self.retention_of,
        )
        self.sessions.add(session)
        if not self.accepting:
            session.close(GOING_AWAY, "server shutting down")
        elif principal.expires_at is not None:
            # A JWT's dashboard lasts as long as the token: then 4001, and the client logs in again.
            delay = max(0.0, principal.expires_at - time.time())
            self._expiries[session] = asyncio.get_running_loop().call_later(
                delay, session.close, UNAUTHENTICATED, "token expired; log in again and reconnect"
            )
        return session

    async def end(self, session: DashboardSession, lease: Lease | None) -> None:
        session.ended()
        self.sessions.discard(session)
        expiry = self._expiries.pop(session, None)
        if expiry is not None:
            expiry.cancel()
        if lease is not None:
            # In a task of its own: the place is given back even when the connection's task is cancelled (an ASGI
            # server may cancel the app as soon as the socket is gone).
            releasing = asyncio.get_running_loop().create_task(self.limiter.release(lease))
            self._releasing.add(releasing)
            releasing.add_done_callback(self._releasing.discard)
            await asyncio.shield(releasing)
