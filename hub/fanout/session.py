"""A dashboard connection (ARCHITECTURE.md, roles: Client session): its ops and what it is sent.

Everything the session sends (replies, errors, messages) goes to its ``Outbox`` in order. ``put`` never waits:
the outbox bounds what is waiting for the client (default 1 MiB); a client that lets more pile up is closed
with 4008 ``slow_consumer`` and its subscriptions removed; nobody else notices. How the bytes reach the socket
is the outbox's: the lean connection writes WebSocket frames to the transport, the ASGI one has a writer task.

Subscribing is free of gaps and duplicates: the subscription is registered first while live messages for
this session are held back; then each stream's newest id is read (the position covered), the reply is
queued, then the replay (``since``: the entries after the given offsets up to that position, in chunks paced
by the client's reading; ``last``: the newest N up to it), and the held messages are let through, leaving out
those at or before the position covered.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hub.auth.principal import Principal
from hub.fanout.broker import Entry, StreamBroker, offset_key
from hub.fanout.channels import InvalidChannel, Pattern, Source, parse_pattern
from hub.fanout.node import Node, channel_messages
from hub.fanout.ops import OpError, Resume, compose, decode_op, parse_resume
from hub.fanout.registry import Encoding, Hub, Outgoing

__all__ = ["SLOW_CONSUMER", "DashboardSession", "Outbox", "SessionLimits"]

SLOW_CONSUMER = 4008
REPLAY_CHUNK = 1000


@dataclass(frozen=True, kw_only=True)
class SessionLimits:
    send_buffer_bytes: int = 1 << 20
    max_subscriptions: int = 100
    # Bytes of one client message, and entries one subscribe may replay per stream (more: recovered false).
    max_message_bytes: int = 16_384
    max_replay: int = 10_000
    max_last: int = 1_000


class Outbox(Protocol):
    """Where a session's messages go, in order."""

    def put(self, message: Outgoing) -> bool:
        """Queue ``message`` without waiting; False when more than the send buffer's bound is now waiting."""

    def close(self, code: int, reason: str) -> None:
        """End the connection: after what is queued, or, for a slow consumer, without it."""

    def backlog(self) -> int:
        """Bytes queued and not yet taken by the client."""

    async def room(self) -> None:
        """Wait until most of what is queued has gone to the client (or the connection is closed)."""


# A stream's retention in ms (None: unknown), to tell whether its history still reaches an offset.
RetentionOf = Callable[[Source], int | None]


class DashboardSession:
    def __init__(
        self,
        outbox: Outbox,
        *,
        encoding: Encoding,
        principal: Principal,
        hub: Hub,
        node: Node,
        broker: StreamBroker,
        limits: SessionLimits,
        retention: RetentionOf,
    ) -> None:
        self.outbox = outbox
        self.encoding: Encoding = encoding
        self.principal = principal
        self.hub, self.node, self.broker, self.limits = hub, node, broker, limits
        self.retention = retention
        self.close_code: int | None = None
        self._held: list[tuple[Outgoing, Source, str]] | None = None
        self._held_bytes = 0

    # The Hub's side.

    def send(self, payload: Outgoing, source: Source, offset: str) -> None:
        if self._held is None:
            self._queue(payload)
            return
        self._held.append((payload, source, offset))
        self._held_bytes += len(payload)
        if self._held_bytes > self.limits.send_buffer_bytes:
            self.close(SLOW_CONSUMER, "slow_consumer")

    def _queue(self, payload: Outgoing) -> None:
        if self.close_code is None and not self.outbox.put(payload):
            self.close(SLOW_CONSUMER, "slow_consumer")

    # The connection's side.

    def close(self, code: int, reason: str) -> None:
        """Leave every subscription and close the connection with ``code``."""
        if self.close_code is None:
            self.close_code = code
            self.hub.remove(self)
            self.outbox.close(code, reason)

    def ended(self) -> None:
        """The connection is gone."""
        self.close_code = self.close_code or 1006
        self.hub.remove(self)

    def send_auth_reply(self) -> None:
        """The reply to a first-message ``auth``."""
        self._reply({"type": "reply", "id": None, "result": {"principal": self.principal.as_json()}})

    def _reply(self, message: dict[str, Any]) -> None:
        self._queue(Outgoing.encode(message, self.encoding))

    async def handle(self, raw: bytes | str) -> None:
        """One message from the client."""
        op_id: Any = None
        try:
            if len(raw) > self.limits.max_message_bytes:
                raise OpError("too_large", f"a message may have at most {self.limits.max_message_bytes} bytes")
            op = decode_op(raw)
            op_id = op.get("id")
            kind = op.get("op")
            if kind == "ping":
                self._reply({"type": "pong", "id": op_id})
            elif kind == "subscribe":
                await self._subscribe(op_id, op)
            elif kind == "unsubscribe":
                channel = op.get("channel")
                if not isinstance(channel, str) or not self.hub.unsubscribe(self, self.principal.org_id, channel):
                    raise OpError("not_subscribed", f"no subscription to {channel!r} on this connection")
                self._reply({"type": "reply", "id": op_id, "result": {"channel": channel}})
            elif kind == "auth":
                raise OpError("already_authenticated", "this connection is authenticated already")
            else:
                raise OpError("unknown_op", "op must be subscribe, unsubscribe or ping")
        except InvalidChannel as exc:
            self._error(op_id, "invalid_channel", exc.message)
        except OpError as exc:
            self._error(op_id, exc.code, str(exc))

    def _error(self, op_id: Any, code: str, message: str) -> None:
        self._reply({"type": "error", "id": op_id, "error": {"code": code, "message": message}})

    # Subscribing.

    async def _subscribe(self, op_id: Any, op: dict[str, Any]) -> None:
        org_id = self.principal.org_id
        pattern = parse_pattern(op.get("channel"), resolutions=self.hub.resolutions)
        sources = sorted(pattern.sources(org_id, self.hub.resolutions), key=lambda s: s.label)
        resume = parse_resume(op, composite=len(sources) > 1, max_last=self.limits.max_last)
        if any(p.text == pattern.text for _, p in self.hub.subscriptions(self)):
            raise OpError("already_subscribed", f"already subscribed to {pattern.text}")
        if len(self.hub.subscriptions(self)) >= self.limits.max_subscriptions:
            raise OpError("too_many_subscriptions", f"at most {self.limits.max_subscriptions} per connection")
        if self.close_code is not None:
            return
        self._held, self._held_bytes = [], 0
        # Per stream: the newest entry when live messages began to be held. Replays end there; held
        # messages after it are let through.
        covered: dict[Source, str] = {}
        try:
            self.hub.subscribe(self, org_id, pattern)
            for source in sources:
                covered[source] = await self.broker.newest(source.key)
                self.node.follow(source, covered[source])
            epochs = {source: await self.node.epoch(source) for source in sources}
            label = _labeller(sources)
            starts = await self._replay_starts(sources, epochs, covered, resume) if resume.since else None
            result = {
                "channel": pattern.text,
                "epoch": compose({label(s): epochs[s] for s in sources}),
                "offset": compose({label(s): covered[s] for s in sources}),
                "recovered": starts is not None or bool(resume.last),
            }
            self._reply({"type": "reply", "id": op_id, "result": result})
            if resume.last:
                newest = [
                    [(s, e) for e in await self.broker.last(s.key, resume.last, upto=covered[s])] for s in sources
                ]
                await self._replay(pattern, epochs, _merged(newest)[-resume.last :])
            for source, offset in (starts or {}).items():
                await self._replay_stream(pattern, epochs, source, offset, covered[source])
        except BaseException:
            self.hub.unsubscribe(self, org_id, pattern)
            raise
        finally:
            held, self._held = self._held or [], None
        for payload, source, offset in held:
            if offset_key(offset) > offset_key(covered.get(source, "0-0")):
                self._queue(payload)

    async def _replay_starts(
        self, sources: list[Source], epochs: dict[Source, str], covered: dict[Source, str], resume: Resume
    ) -> dict[Source, str] | None:
        """Per stream, the offset to replay after; None when the history asked for is not all there (another
        epoch, trimmed, or more than ``max_replay`` entries in one stream)."""
        assert resume.since is not None
        label = _labeller(sources)
        limit = self.limits.max_replay
        starts: dict[Source, str] = {}
        for source in sources:
            position = resume.since.get(label(source))
            if position is None or position[1] != epochs[source]:
                return None
            offset = position[0]
            if not await self.broker.reaches_back(source.key, offset, position[1], self.retention(source)):
                return None
            if offset_key(offset) < offset_key(covered[source]):
                if await self.broker.count_between(source.key, offset, covered[source], limit) > limit:
                    return None
                starts[source] = offset
        return starts

    async def _replay_stream(
        self, pattern: Pattern, epochs: dict[Source, str], source: Source, after: str, upto: str
    ) -> None:
        """The entries of ``source`` after ``after`` up to ``upto``, read in chunks."""
        while self.close_code is None:
            chunk = await self.broker.after(source.key, after, REPLAY_CHUNK, upto=upto)
            await self._replay(pattern, epochs, [(source, entry) for entry in chunk])
            if len(chunk) < REPLAY_CHUNK:
                return
            after = chunk[-1][0]

    async def _replay(self, pattern: Pattern, epochs: dict[Source, str], entries: list[tuple[Source, Entry]]) -> None:
        """Queue the messages of ``entries``, waiting for the client to take what is queued whenever it passes
        a quarter of the send buffer: a replay, however long, never fills the buffer by itself."""
        pace = self.limits.send_buffer_bytes // 4
        for source, (entry_id, fields) in entries:
            for channel, data in await channel_messages(source, entry_id, fields, self.broker.entry):
                if pattern.matches(channel):
                    message = {"type": "message", "channel": channel, "offset": entry_id, "epoch": epochs[source]}
                    message["data"] = data
                    self._reply(message)
            if self.outbox.backlog() > pace:
                await self.outbox.room()
            if self.close_code is not None:
                return


def _labeller(sources: list[Source]) -> Callable[[Source], str]:
    """A stream's label in this subscription's positions: none when the pattern reads one stream."""
    if len(sources) == 1:
        return lambda source: ""
    return lambda source: source.label


def _merged(streams: list[list[tuple[Source, Entry]]]) -> list[tuple[Source, Entry]]:
    """Entries of several streams in offset order (ties: in the order of ``streams``)."""
    return list(heapq.merge(*streams, key=lambda item: offset_key(item[1][0])))
