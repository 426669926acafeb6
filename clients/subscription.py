"""One dashboard subscription: the messages received for it (a bounded buffer) and where it has read to."""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from clients.errors import ClientClosed, SessionEnded, SubscriptionError
from clients.positions import Position, matches

__all__ = ["GapCallback", "Message", "Subscription"]


@dataclass(frozen=True, slots=True)
class Message:
    """A channel message. ``gap_before``: messages before this one were missed and could not be replayed
    (the hub answered ``recovered: false``): reload what this channel shows over REST."""

    channel: str
    offset: str
    epoch: str
    data: Any
    gap_before: bool = False


# Called (plain or async) with the subscription when a resubscribe could not replay what was missed.
GapCallback = Callable[["Subscription"], Any]


class Subscription:
    """An async iterator of :class:`Message`; ends after ``unsubscribe()`` or the client's ``close()``, and
    raises ``SessionEnded`` when the session ends for good."""

    def __init__(
        self,
        channel: str,
        unsubscribe: Callable[[Subscription], Awaitable[None]],
        *,
        last: int | None,
        since: dict[str, str] | None,
        on_gap: GapCallback | None,
        buffer_size: int,
    ) -> None:
        self.channel = channel
        self.position = Position.from_since(since["offset"], since["epoch"]) if since else Position()
        self.last = last
        self.on_gap = on_gap
        # The latest reply's ``recovered``, and how many resubscribes could not replay what was missed.
        self.recovered: bool | None = None
        self.gaps = 0
        # The connection (by number) this subscription was last sent on, and the one that answered it.
        self.generation = 0
        self.live_on = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unsubscribe = unsubscribe
        self._buffer: deque[Message] = deque()
        self._capacity = buffer_size
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._gap_pending = False
        self._end: SessionEnded | None = None
        self._callbacks: set[asyncio.Future[Any]] = set()

    def __repr__(self) -> str:
        return f"<Subscription {self.channel} buffered={len(self._buffer)} gaps={self.gaps}>"

    # The reader's side.

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        while not self._buffer:
            if self._end is not None:
                if isinstance(self._end, ClientClosed):
                    raise StopAsyncIteration
                raise self._end
            self._readable.clear()
            await self._readable.wait()
        message = self._buffer.popleft()
        self._writable.set()
        return message

    async def get(self) -> Message:
        """The next message (``StopAsyncIteration`` once the subscription ended and its buffer is empty)."""
        return await self.__anext__()

    def since(self) -> dict[str, str]:
        """``{offset, epoch}`` right after what was received: keep it to subscribe again later with ``since``."""
        return self.position.since()

    async def unsubscribe(self) -> None:
        """Leave the channel; messages already buffered can still be read."""
        await self._unsubscribe(self)
        self.finish(ClientClosed("unsubscribed"))

    # The client's side.

    def matches(self, channel: str) -> bool:
        return matches(self.channel, channel)

    def resume_op(self) -> dict[str, Any]:
        """The subscribe op's ``since`` or ``last``: resume where reading stopped, once anything was known."""
        if self.position.known:
            return {"since": self.position.since()}
        return {"last": self.last} if self.last else {}

    def replied(self, result: dict[str, Any], *, resumed: bool) -> None:
        recovered = bool(result.get("recovered"))
        self.recovered = recovered
        self.position.replied(str(result.get("offset", "")), str(result.get("epoch", "")), recovered=recovered)
        if resumed and not recovered:
            self.gaps += 1
            self._gap_pending = True
            if self.on_gap is not None:
                outcome = self.on_gap(self)
                if inspect.isawaitable(outcome):
                    task = asyncio.ensure_future(outcome)
                    self._callbacks.add(task)
                    task.add_done_callback(self._callbacks.discard)
        if not self.ready.done():
            self.ready.set_result(None)

    def refused(self, error: SubscriptionError) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
        else:
            self.finish(SessionEnded(4000, f"the hub refused to resubscribe {self.channel}: {error}"))

    async def put(self, raw: dict[str, Any], index: int = 0) -> None:
        """A message from the hub, the ``index``-th of its copy of a stream entry; waits while the buffer is full
        (so the socket is not read meanwhile)."""
        channel, offset, epoch = raw["channel"], raw["offset"], raw["epoch"]
        if self._end is not None or not self.position.advance(channel, offset, epoch, index):
            return
        while len(self._buffer) >= self._capacity and self._end is None:
            self._writable.clear()
            await self._writable.wait()
        self._buffer.append(Message(channel, offset, epoch, raw.get("data"), self._gap_pending))
        self._gap_pending = False
        self._readable.set()

    def finish(self, error: SessionEnded) -> None:
        if self._end is None:
            self._end = error
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()
        self._readable.set()
        self._writable.set()
