"""A dashboard connection (ARCHITECTURE.md, roles: Client session): its ops, its bounded send buffer.

Everything the session sends (replies, errors, messages) goes through one buffer, in order, drained by one
writer task. ``send`` never waits: a client that lets more than ``send_buffer_bytes`` pile up is closed
with 4008 ``slow_consumer`` and its subscriptions removed; nobody else notices.

Subscribing is free of gaps and duplicates: the subscription is registered first while live messages for
this session are held back; then the stream's position is read (``since``: the entries after the given
offset, ``last``: the newest N, neither: its newest id), the reply and the replayed messages are queued, and
the held messages are let through, leaving out those at or before the position already covered.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson
from starlette.websockets import WebSocket

from hub.auth.principal import Principal
from hub.fanout.broker import Entry, StreamBroker, offset_key
from hub.fanout.channels import InvalidChannel, Pattern, Source, parse_pattern
from hub.fanout.node import Node, channel_messages
from hub.fanout.registry import Encoding, Hub, encode_json, encode_msgpack

__all__ = ["DashboardSession", "OpError", "SessionLimits", "decode_op"]

SLOW_CONSUMER = 4008


@dataclass(frozen=True, kw_only=True)
class SessionLimits:
    send_buffer_bytes: int = 1 << 20
    max_subscriptions: int = 100
    # Bytes of one client message, and entries one subscribe may replay (more: recovered false).
    max_message_bytes: int = 16_384
    max_replay: int = 10_000
    max_last: int = 1_000


class OpError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Resume:
    since: tuple[str, str] | None
    last: int | None


class DashboardSession:
    def __init__(
        self,
        websocket: WebSocket,
        *,
        encoding: Encoding,
        principal: Principal,
        hub: Hub,
        node: Node,
        broker: StreamBroker,
        limits: SessionLimits,
    ) -> None:
        self.websocket = websocket
        self.encoding: Encoding = encoding
        self.principal = principal
        self.hub, self.node, self.broker, self.limits = hub, node, broker, limits
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._ready = asyncio.Event()
        self._close_code: int | None = None
        self._held: list[tuple[bytes, Source, str]] | None = None

    # The Hub's side.

    def send(self, payload: bytes, source: Source, offset: str) -> None:
        if self._held is not None:
            self._held.append((payload, source, offset))
            self._account(len(payload))
        else:
            self._queue(payload)

    def _queue(self, payload: bytes) -> None:
        if self._close_code is not None:
            return
        self._buffer.append(payload)
        self._account(len(payload))
        self._ready.set()

    def _account(self, size: int) -> None:
        self._buffered += size
        if self._buffered > self.limits.send_buffer_bytes and self._close_code is None:
            self._close_code = SLOW_CONSUMER
            self.hub.remove(self)
            self._ready.set()

    def send_auth_reply(self) -> None:
        """The reply to a first-message ``auth``."""
        self._reply({"type": "reply", "id": None, "result": {"principal": self.principal.as_json()}})

    def _reply(self, message: dict[str, Any]) -> None:
        self._queue(encode_msgpack(message) if self.encoding == "msgpack" else encode_json(message))

    # The connection's side.

    async def run(self) -> None:
        writer = asyncio.get_running_loop().create_task(self._write())
        try:
            while not writer.done():
                receiving = asyncio.ensure_future(self.websocket.receive())
                await asyncio.wait({receiving, writer}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()
                    break
                message = receiving.result()
                if message["type"] == "websocket.disconnect":
                    break
                await self._handle(message.get("bytes") or message.get("text") or b"")
        finally:
            self.hub.remove(self)
            self._close_code = self._close_code or 1000
            self._ready.set()
            if not writer.done():
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _write(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._buffer = self._buffer, []
            for payload in batch:
                if self._close_code == SLOW_CONSUMER:
                    break
                self._buffered -= len(payload)
                if self.encoding == "msgpack":
                    await self.websocket.send_bytes(payload)
                else:
                    await self.websocket.send_text(payload.decode())
            if self._close_code is not None:
                if self._close_code == SLOW_CONSUMER:
                    await self.websocket.close(SLOW_CONSUMER, "slow_consumer")
                return

    async def _handle(self, raw: bytes | str) -> None:
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

    async def _subscribe(self, op_id: Any, op: dict[str, Any]) -> None:
        org_id = self.principal.org_id
        pattern = parse_pattern(op.get("channel"), resolutions=self.hub.resolutions)
        resume = _resume(op, self.limits)
        if any(p.text == pattern.text for _, p in self.hub.subscriptions(self)):
            raise OpError("already_subscribed", f"already subscribed to {pattern.text}")
        if len(self.hub.subscriptions(self)) >= self.limits.max_subscriptions:
            raise OpError("too_many_subscriptions", f"at most {self.limits.max_subscriptions} per connection")
        sources = sorted(pattern.sources(org_id, self.hub.resolutions), key=lambda s: s.key)
        if (resume.since or resume.last) and len(sources) != 1:
            raise OpError(
                "invalid_request",
                "since and last need a channel read from one stream: one kind, for one device or for all (+)",
            )
        self._held = []
        covered: dict[Source, str] = {}
        try:
            self.hub.subscribe(self, org_id, pattern)
            for source in sources:
                covered[source] = await self.broker.newest(source.key)
                self.node.follow(source, covered[source])
            result: dict[str, Any] = {"channel": pattern.text}
            replay: list[Entry] = []
            if len(sources) == 1:
                source = sources[0]
                epoch = await self.node.epoch(source)
                replay, recovered = await self._history(source, epoch, resume)
                if replay:
                    covered[source] = max(covered[source], replay[-1][0], key=offset_key)
                result.update(epoch=epoch, offset=covered[source], recovered=recovered)
            self._reply({"type": "reply", "id": op_id, "result": result})
            if replay:
                await self._replay(sources[0], pattern, replay)
        except BaseException:
            self.hub.unsubscribe(self, org_id, pattern)
            raise
        finally:
            held, self._held = self._held or [], None
            self._buffered -= sum(len(payload) for payload, _, _ in held)
        for payload, source, offset in held:
            if offset_key(offset) > offset_key(covered.get(source, "0-0")):
                self._queue(payload)

    async def _history(self, source: Source, epoch: str, resume: _Resume) -> tuple[list[Entry], bool]:
        """The entries to replay and whether the history asked for is all there."""
        if resume.last:
            return await self.broker.last(source.key, resume.last), True
        if resume.since is None:
            return [], False
        offset, their_epoch = resume.since
        oldest = await self.broker.oldest(source.key)
        if their_epoch != epoch or (oldest is not None and offset_key(offset) < offset_key(oldest)):
            return [], False
        entries: list[Entry] = []
        while len(entries) <= self.limits.max_replay:
            chunk = await self.broker.after(source.key, entries[-1][0] if entries else offset, 1000)
            entries += chunk
            if len(chunk) < 1000:
                return entries, True
        return [], False

    async def _replay(self, source: Source, pattern: Pattern, entries: list[Entry]) -> None:
        epoch = await self.node.epoch(source)
        for entry_id, fields in entries:
            for channel, data in await channel_messages(source, entry_id, fields, self.broker.entry):
                if pattern.matches(channel):
                    self._reply(
                        {"type": "message", "channel": channel, "offset": entry_id, "epoch": epoch, "data": data}
                    )


def decode_op(raw: bytes | str) -> dict[str, Any]:
    try:
        op = msgpack.unpackb(raw) if isinstance(raw, bytes) else orjson.loads(raw)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise OpError("invalid_message", f"not a JSON or MessagePack object: {exc}") from None
    if not isinstance(op, dict):
        raise OpError("invalid_message", "a message is an object with an op")
    return op


def _resume(op: dict[str, Any], limits: SessionLimits) -> _Resume:
    since, last = op.get("since"), op.get("last")
    if since is not None:
        if not (
            isinstance(since, dict) and isinstance(since.get("offset"), str) and isinstance(since.get("epoch"), str)
        ):
            raise OpError("invalid_request", "since is {offset, epoch}, as a reply or message gave them")
        try:
            offset_key(since["offset"])
        except ValueError:
            raise OpError("invalid_request", "since.offset is not an offset this server gave") from None
        if last is not None:
            raise OpError("invalid_request", "give since or last, not both")
        return _Resume((since["offset"], since["epoch"]), None)
    if last is not None:
        if type(last) is not int or not 1 <= last <= limits.max_last:
            raise OpError("invalid_request", f"last is an integer from 1 to {limits.max_last}")
        return _Resume(None, last)
    return _Resume(None, None)
