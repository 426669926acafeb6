"""``HubClient``: a dashboard's side of ``/api/v1/ws`` (API.md §5), resuming with ``since`` after any reconnect.

::

    async with HubClient("http://hub:8080", token, encoding="msgpack") as hub:
        telemetry = await hub.subscribe("devices/+/telemetry", last=10)
        async for message in telemetry:
            if message.gap_before:
                ...  # the hub could not replay what was missed: reload over REST
            print(message.channel, message.data)

Each subscription keeps, per stream, the last offset read (clients.positions). After a reconnect (a dropped
connection, a hub restarting with 1012, 4008 ``slow_consumer``) every subscription is made again with
``since`` that position: the hub replays what was missed, with no gap and no duplicate. When it cannot
(``recovered: false``) the subscription's ``gaps`` grows, its next message has ``gap_before`` set and
``on_gap`` is called. Messages wait in a bounded buffer per subscription; while one is full the socket is
not read, so a reader that falls far behind is closed by the hub with 4008 and resumes with ``since``:
memory stays bounded and nothing is lost. A refused credential (401, close 4001) ends the session, unless
``token`` is a callable, which is asked for a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgpack
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from clients.backoff import Backoff
from clients.errors import ClientClosed, SessionEnded, SubscriptionError
from clients.reconnect import keep_connected
from clients.subscription import GapCallback, Message, Subscription
from clients.urls import websocket_url

__all__ = ["HubClient", "Message", "Subscription"]

log = logging.getLogger("telehub.clients")


Encoding = Literal["json", "msgpack"]
TokenSource = str | Callable[[], Awaitable[str]]
ReplyHook = Callable[[dict[str, Any]], None]
MSGPACK_PROTOCOL = Subprotocol("telehub.v1.msgpack")
UNAUTHENTICATED = 4001
# Closes after which resubscribing at once is right: a hub restarting, a reader that fell behind.
QUICK_CLOSES = frozenset({1012, 4008})


class _Disconnected(Exception):
    """The connection an op was sent on went away before its answer."""


class HubClient:
    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        encoding: Encoding = "json",
        buffer_size: int = 10_000,
        backoff: Backoff | None = None,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
    ) -> None:
        if encoding not in ("json", "msgpack"):
            raise ValueError("encoding is 'json' or 'msgpack'")
        self.url = websocket_url(url, "/ws")
        self.encoding: Encoding = encoding
        self.buffer_size = buffer_size
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.connections = 0
        # The close code of the latest connection that ended (None: none has).
        self.last_close_code: int | None = None
        self.ended: SessionEnded | None = None
        self._token = token
        self._subscriptions: dict[str, Subscription] = {}
        self._ws: ClientConnection | None = None
        self._generation = 0
        # Per (epoch, channel): the offset of the latest message and its index among the messages of that copy
        # of its entry (one entry may give several; a subscribe reply starts new copies: its replay).
        self._copies: dict[tuple[str, str], tuple[str, int]] = {}
        self._ids = itertools.count(1)
        # Ops waiting for their answer: the future, and what to do with a reply before the next message is read.
        self._answers: dict[int, tuple[asyncio.Future[dict[str, Any]], ReplyHook | None]] = {}
        self._changed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # Lifetime.

    async def __aenter__(self) -> HubClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, and keep reconnecting in the background. Returns once connected the first time; raises
        ``SessionEnded`` if the hub refuses the credential."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="telehub-dashboard")
        await self.wait_connected()

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for task in list(self._tasks):
            task.cancel()
        self._end(ClientClosed())

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def wait_connected(self) -> None:
        while self._ws is None:
            if self.ended is not None:
                raise self.ended
            self._changed.clear()
            await self._changed.wait()

    # Ops.

    async def subscribe(
        self,
        channel: str,
        *,
        last: int | None = None,
        since: dict[str, str] | None = None,
        on_gap: GapCallback | None = None,
    ) -> Subscription:
        """Subscribe to ``channel`` (MQTT wildcards ``+``, ``#``), replaying the newest ``last`` messages first or
        everything after ``since`` (``{offset, epoch}``, as an earlier subscription's ``since()`` gave it).
        Raises ``SubscriptionError`` with the hub's code (``invalid_channel``, ``already_subscribed``…)."""
        if self.ended is not None:
            raise self.ended
        if channel in self._subscriptions:
            raise SubscriptionError("already_subscribed", f"already subscribed to {channel}")
        subscription = Subscription(
            channel, self._unsubscribe, last=last, since=since, on_gap=on_gap, buffer_size=self.buffer_size
        )
        self._subscriptions[channel] = subscription
        if self._ws is not None:
            self._spawn(self._subscribe_on(self._ws, self._generation, subscription))
        try:
            await subscription.ready
        except SubscriptionError:
            self._subscriptions.pop(channel, None)
            raise
        return subscription

    async def ping(self) -> None:
        """A round trip through the hub's session (not only the socket)."""
        await self._ask({"op": "ping"})

    async def _unsubscribe(self, subscription: Subscription) -> None:
        if self._subscriptions.get(subscription.channel) is subscription:
            del self._subscriptions[subscription.channel]
            with contextlib.suppress(_Disconnected, SubscriptionError):
                await self._ask({"op": "unsubscribe", "channel": subscription.channel})

    async def _ask(
        self, op: dict[str, Any], ws: ClientConnection | None = None, on_reply: ReplyHook | None = None
    ) -> dict[str, Any]:
        """Send ``op`` with a fresh id and wait for its reply; ``_Disconnected`` if the connection goes first.
        ``on_reply`` runs in the reader as the reply arrives, before any later message is handled."""
        ws = ws or self._ws
        if ws is None:
            raise _Disconnected()
        op_id = next(self._ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[op_id] = (answer, on_reply)
        try:
            await ws.send(self._encode({**op, "id": op_id}))
            return await answer
        except ConnectionClosed:
            raise _Disconnected() from None
        finally:
            self._answers.pop(op_id, None)

    async def _subscribe_on(self, ws: ClientConnection, generation: int, subscription: Subscription) -> None:
        if subscription.generation == generation:
            return
        subscription.generation = generation
        op = {"op": "subscribe", "channel": subscription.channel, **subscription.resume_op()}

        def replied(result: dict[str, Any]) -> None:
            self._copies.clear()  # what follows a reply is its replay: new copies of entries
            subscription.replied(result, resumed="since" in op)
            subscription.live_on = generation

        try:
            await self._ask(op, ws, replied)
        except _Disconnected:
            return  # the next connection subscribes again
        except SubscriptionError as exc:
            if self._subscriptions.get(subscription.channel) is subscription:
                del self._subscriptions[subscription.channel]
            subscription.refused(exc)

    # The connection.

    async def _run(self) -> None:
        ended = await keep_connected(
            self.url,
            self._session,
            headers=self._auth_headers,
            subprotocols=[MSGPACK_PROTOCOL] if self.encoding == "msgpack" else None,
            backoff=self.backoff,
            # A callable token is asked again instead: a refused one may have expired.
            final_statuses=(401, 403) if isinstance(self._token, str) else (),
            open_timeout=self.open_timeout,
            ping_interval=self.ping_interval,
            what="dashboard",
        )
        self._end(ended)

    async def _auth_headers(self) -> dict[str, str]:
        token = self._token if isinstance(self._token, str) else await self._token()
        return {"Authorization": f"Bearer {token}"}

    async def _session(self, ws: ClientConnection) -> bool:
        """One connection: subscribe everything again, then read; True when a quick reconnect is right."""
        self._generation += 1
        self._ws = ws
        self._copies.clear()
        self.connections += 1
        self.backoff.reset()
        self._changed.set()
        for subscription in list(self._subscriptions.values()):
            self._spawn(self._subscribe_on(ws, self._generation, subscription))
        try:
            async for raw in ws:
                await self._received(self._decode(raw))
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            for answer, _ in self._answers.values():
                if not answer.done():
                    answer.set_exception(_Disconnected())
        code = self.last_close_code = ws.close_code
        if code == UNAUTHENTICATED and isinstance(self._token, str):
            raise SessionEnded(code, ws.close_reason or "unauthenticated")
        log.info("telehub: dashboard connection closed (%s %s); resubscribing", code, ws.close_reason)
        return code in QUICK_CLOSES

    async def _received(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "message":
            await self._deliver(message)
            return
        waiting = self._answers.get(message.get("id"))  # type: ignore[arg-type]
        if waiting is None or waiting[0].done():
            if kind == "error":
                log.warning("telehub: dashboard error %s", message.get("error"))
            return
        answer, on_reply = waiting
        if kind == "error":
            error = message.get("error") or {}
            answer.set_exception(SubscriptionError(str(error.get("code")), str(error.get("message"))))
            return
        result = message.get("result") or {}
        if on_reply is not None:
            on_reply(result)
        answer.set_result(result)

    async def _deliver(self, message: dict[str, Any]) -> None:
        channel, epoch, offset = message["channel"], message["epoch"], message["offset"]
        previous = self._copies.get((epoch, channel))
        index = previous[1] + 1 if previous is not None and previous[0] == offset else 0
        self._copies[(epoch, channel)] = (offset, index)
        # Only subscriptions answered on this connection: a message never runs ahead of its subscription's reply.
        live = self._generation
        matching = [s for s in self._subscriptions.values() if s.live_on == live and s.matches(channel)]
        if len(matching) > 1:  # overlapping patterns: the epoch names the stream, and so the subscription
            matching = [s for s in matching if s.position.has_epoch(channel, epoch)] or matching
        for subscription in matching:
            await subscription.put(message, index)

    # Encoding and tasks.

    def _encode(self, op: dict[str, Any]) -> bytes | str:
        return msgpack.packb(op, use_bin_type=True) if self.encoding == "msgpack" else orjson.dumps(op).decode()

    @staticmethod
    def _decode(raw: bytes | str) -> dict[str, Any]:
        decoded = msgpack.unpackb(raw, raw=False) if isinstance(raw, bytes) else orjson.loads(raw)
        if not isinstance(decoded, dict):
            raise ValueError("a message from the hub is a map")
        return decoded

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _end(self, error: SessionEnded) -> None:
        if self.ended is None:
            self.ended = error
            if not isinstance(error, ClientClosed):
                log.error("telehub: %s; not reconnecting", error)
        for subscription in self._subscriptions.values():
            subscription.finish(error)
        self._changed.set()
