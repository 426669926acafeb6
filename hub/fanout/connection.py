"""``GET /api/v1/ws`` on the lean path: a dashboard connection written to straight from the fan-out.

A delivery is the Hub handing a session an ``Outgoing`` whose WebSocket frame is made once for all its
receivers; this connection appends the frame to a list and writes the list to the transport in one call: on
the next turn of the event loop, or, when it wrote less than ``COALESCE_S`` ago, that long after its last
write. A quiet dashboard is written to at once; a busy one gets at most one write (one system call, the
largest cost of a delivery) per ``COALESCE_S``, whatever the rate of the streams it follows. No ASGI message,
no task, no copy per delivery: this is what keeps one delivery within its few µs (ARCHITECTURE.md budgets).

What waits for the client is what the transport holds plus that list; when it passes the send buffer's bound
the session closes the connection with 4008 (the frames not yet written are dropped, the close frame goes out
after what the transport holds, and a client that reads nothing is dropped ``CLOSE_TIMEOUT_S`` later).

The client's messages are handled one at a time, in order, by one task; while more than ``MAX_PENDING_OPS``
wait, the socket is not read. Authentication, the connection limit, encodings and errors are as on the ASGI
path (``hub.fanout.endpoint``); a refused handshake is answered in the contract's error envelope (401, 429,
503) rather than a bare 403.
"""

from __future__ import annotations

import asyncio

from websockets.http11 import Request, Response

from hub.auth.authenticator import bearer_token
from hub.auth.principal import Principal
from hub.fanout.limiter import Lease
from hub.fanout.registry import Encoding, Outgoing
from hub.fanout.service import (
    AUTH_TIMEOUT_S,
    MSGPACK_PROTOCOL,
    TOO_MANY_CONNECTIONS,
    UNAUTHENTICATED,
    Fanout,
    too_many,
)
from hub.fanout.session import SLOW_CONSUMER, DashboardSession
from ingest.flag import Flag
from ingest.gateway import denial_body
from ingest.lean_websocket import HeartbeatPolicy, LeanWebSocket, error_response

__all__ = ["DashboardConnection"]

MAX_PENDING_OPS = 32
# The least time between two writes to one dashboard's socket (s).
COALESCE_S = 0.005


class DashboardConnection(LeanWebSocket):
    """One dashboard's TCP connection from the handshake request on; the session's outbox. Not reusable."""

    def __init__(self, fanout: Fanout, *, max_frame_bytes: int, heartbeat: HeartbeatPolicy | None) -> None:
        super().__init__(subprotocol=MSGPACK_PROTOCOL, max_frame_bytes=max_frame_bytes, heartbeat=heartbeat)
        self.fanout = fanout
        self.limit = fanout.limits.send_buffer_bytes
        self.session: DashboardSession | None = None
        self._lease: Lease | None = None
        # Ops received and not yet handled (at most MAX_PENDING_OPS or so): a list costs less than a deque.
        self._ops: list[bytes | str] = []
        self._op_arrived = Flag()
        self._open = False
        # Frames not yet handed to the transport, their size, and what the transport held at the last write.
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._backlog = 0
        self._write_scheduled = False
        self._last_write = 0.0

    def __str__(self) -> str:
        return f"dashboard {self.session.principal.id if self.session else '(unauthenticated)'}"

    # The session's outbox.

    def put(self, message: Outgoing) -> bool:
        frame = message.frame
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        if not self._write_scheduled:
            self._write_scheduled = True
            wait = self._last_write + COALESCE_S - self.loop.time()
            if wait > 0:
                self.loop.call_later(wait, self._write)
            else:
                self.loop.call_soon(self._write)
        if self._pending_bytes + self._backlog <= self.limit:
            return True
        self._backlog = self.transport.get_write_buffer_size() if self.transport is not None else 0
        return self._pending_bytes + self._backlog <= self.limit

    def backlog(self) -> int:
        transport = self.transport
        return self._pending_bytes + (transport.get_write_buffer_size() if transport is not None else 0)

    async def room(self) -> None:
        self._write()
        if not self.writable.is_set():  # the transport is over its high-water mark: wait for the low one
            await self.writable.wait()

    def _write(self) -> None:
        self._write_scheduled = False
        transport = self.transport
        if not self._pending or transport is None or transport.is_closing():
            return
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        transport.writelines(pending)
        self._last_write = self.loop.time()
        self._backlog = transport.get_write_buffer_size()

    def close(self, code: int, reason: str = "") -> None:
        if code == SLOW_CONSUMER:
            self._pending, self._pending_bytes = [], 0
        else:
            self._write()
        super().close(code, reason)

    # The connection.

    def closed(self) -> None:
        self._open = False
        self._op_arrived.set()

    def message(self, data: bytes, binary: bool) -> None:
        if not self._open:  # before the 101: a protocol violation
            self.abort()
            return
        self._ops.append(data if binary else data.decode(errors="replace"))
        self._op_arrived.set()
        if len(self._ops) > MAX_PENDING_OPS and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    async def handshake(self, request: Request) -> None:
        response = self.ws.accept(request)
        if response.status_code != 101:
            self.send_response(response)
            return
        fanout = self.fanout
        if not fanout.accepting:
            self.send_response(_refusal(503, "unavailable", "the server is shutting down; connect again"))
            return
        token = bearer_token(request.headers.get("Authorization"))
        principal: Principal | None = None
        if token is not None:
            principal = await fanout.principal(token)
            if principal is None:
                self.send_response(_refusal(401, "unauthenticated", "invalid or expired credential"))
                return
            self._lease = await fanout.admit(principal)
            if self._lease is None:
                self.send_response(_refusal(429, "too_many_connections", too_many(fanout)))
                return
        if self.lost.is_set():
            await self._release()
            return
        encoding: Encoding = "msgpack" if response.headers.get("Sec-WebSocket-Protocol") == MSGPACK_PROTOCOL else "json"
        self.send_response(response)
        self._open = True
        self.start_heartbeat()
        # A task of its own, so that the handshake's request and response are not kept for the connection's life.
        self.spawn(self._run(principal, encoding))

    async def _run(self, principal: Principal | None, encoding: Encoding) -> None:
        try:
            await self._serve(principal, encoding)
        finally:
            if self.session is not None:
                await self.fanout.end(self.session, self._lease)
            else:
                await self._release()

    async def _serve(self, principal: Principal | None, encoding: Encoding) -> None:
        first_message_auth = principal is None
        if principal is None:
            principal = await self._first_message_auth()
            if principal is None:
                self.close(UNAUTHENTICATED, "authenticate first: {op: auth, token} within 5 s")
                return
            self._lease = await self.fanout.admit(principal)
            if self._lease is None:
                self.close(TOO_MANY_CONNECTIONS, too_many(self.fanout))
                return
        session = self.session = self.fanout.open(self, principal, encoding)
        if first_message_auth:
            session.send_auth_reply()
        while self._open and session.close_code is None:
            if not self._ops:
                self._op_arrived.clear()
                await self._op_arrived.wait()
                continue
            await session.handle(self._ops.pop(0))
            if self.reading_paused and len(self._ops) <= MAX_PENDING_OPS // 2 and self.transport is not None:
                self.reading_paused = False
                self.transport.resume_reading()

    async def _first_message_auth(self) -> Principal | None:
        deadline = self.loop.time() + AUTH_TIMEOUT_S
        while not self._ops:
            remaining = deadline - self.loop.time()
            if not self._open or remaining <= 0:
                return None
            self._op_arrived.clear()
            try:
                await asyncio.wait_for(self._op_arrived.wait(), remaining)
            except TimeoutError:
                return None
        return await self.fanout.first_message_principal(self._ops.pop(0))

    async def _release(self) -> None:
        if self._lease is not None:
            await self.fanout.limiter.release(self._lease)
            self._lease = None


def _refusal(status: int, code: str, message: str) -> Response:
    request_id, body = denial_body(code, message)
    return error_response(status, body, request_id)
