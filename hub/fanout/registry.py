"""The Hub (ARCHITECTURE.md, roles): one process's registry of channel subscriptions, and delivery.

Subscriptions are kept by *scope*, the stream family they read (see ``channels``): a pattern with a literal
device level is in that device's scope, every other pattern in its organization's scope. The Node reads one
stream (a ``Source``) and calls ``deliver`` with it; only the subscriptions of that source's scope see the
message, so an exact ``devices/x/telemetry`` subscriber (offsets of x's frames stream) and a
``devices/+/telemetry`` one (offsets of the org telemetry stream) in one process never get each other's
copies. Within a scope, exact channels are one dict lookup and wildcard patterns are matched once per
distinct pattern (a thousand subscribers of ``devices/+/telemetry`` cost one match), on the channel split
once.

Each message is built once and encoded once per encoding some receiver uses (JSON: UTF-8 bytes of the text
frame; MessagePack: bytes of the binary frame); every receiver gets the same bytes object. A subscriber
matched through several patterns gets the message once. The Hub never touches the network: ``send`` is the
client session's, which buffers (bounded) and never blocks.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

import msgpack
import orjson

from aggregation import DEFAULT_RESOLUTIONS_MS
from hub.fanout.channels import Pattern, Source
from ingest.aggregates import resolution_label

__all__ = ["Encoding", "Hub", "Outgoing", "Subscriber", "encode_json", "encode_msgpack", "websocket_frame"]

logger = logging.getLogger(__name__)

Encoding = Literal["json", "msgpack"]
SourceCallback = Callable[[Source], None]
DEFAULT_RESOLUTIONS = tuple(resolution_label(width) for width in DEFAULT_RESOLUTIONS_MS)
_packer = msgpack.Packer(use_bin_type=True)


def websocket_frame(payload: bytes, binary: bool) -> bytes:
    """``payload`` as one unmasked, unfragmented server-to-client WebSocket frame (RFC 6455 §5.2)."""
    first = 0x82 if binary else 0x81
    size = len(payload)
    if size < 126:
        header = bytes((first, size))
    elif size < 65_536:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


class Outgoing:
    """One message in one encoding, shared by all its receivers: the payload (a text frame's UTF-8 bytes for
    JSON, a binary frame's for MessagePack) and, made on first use and then reused, the whole WebSocket frame
    that connections on the lean path write as it is."""

    __slots__ = ("_frame", "binary", "data")

    def __init__(self, data: bytes, binary: bool) -> None:
        self.data = data
        self.binary = binary
        self._frame: bytes | None = None

    def __len__(self) -> int:
        return len(self.data)

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = websocket_frame(self.data, self.binary)
        return self._frame

    @classmethod
    def encode(cls, message: dict[str, Any], encoding: Encoding) -> Outgoing:
        if encoding == "msgpack":
            return cls(encode_msgpack(message), True)
        return cls(encode_json(message), False)


class Subscriber(Protocol):
    """A dashboard connection as the Hub sees it. Told apart by identity (keep object's ``__eq__``/``__hash__``).

    ``send`` queues one encoded message (text frame for JSON, binary for MessagePack) and returns at once; a
    session whose buffer is full closes itself (4008). It may call back into the Hub (``remove``).
    """

    @property
    def encoding(self) -> Encoding: ...

    def send(self, payload: Outgoing, source: Source, offset: str) -> None:
        """Queue ``payload``, the message at ``offset`` of ``source`` (a session resuming a subscription
        uses them to leave out what its replay already sent)."""


def encode_json(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


def encode_msgpack(message: dict[str, Any]) -> bytes:
    return _packer.pack(message)


class _Scope:
    """The subscriptions reading one stream family: exact channels, and wildcard patterns by text."""

    __slots__ = ("exact", "patterns")

    def __init__(self) -> None:
        self.exact: dict[str, set[Subscriber]] = {}
        self.patterns: dict[str, tuple[Pattern, set[Subscriber]]] = {}

    def __bool__(self) -> bool:
        return bool(self.exact or self.patterns)

    def receivers(self, channel: str) -> Iterable[Subscriber]:
        exact = self.exact.get(channel)
        if not self.patterns:
            return exact or ()
        groups = [exact] if exact else []
        levels = channel.split("/")
        for pattern, subscribers in self.patterns.values():
            if pattern.matches_levels(levels):
                groups.append(subscribers)
        if len(groups) <= 1:
            return groups[0] if groups else ()
        return set().union(*groups)


class Hub:
    """Local subscriptions (subscriber, org, pattern) and delivery to them.

    ``on_source_added`` / ``on_source_removed`` are called when a stream gains its first subscription or
    loses its last, so the Node starts and stops its readers; ``sources()`` is the current set.
    ``resolutions`` are the aggregate resolutions a wildcard resolution level reads.
    """

    def __init__(
        self,
        *,
        resolutions: Iterable[str] = DEFAULT_RESOLUTIONS,
        on_source_added: SourceCallback | None = None,
        on_source_removed: SourceCallback | None = None,
    ) -> None:
        self.resolutions = tuple(resolutions)
        self._on_added = on_source_added
        self._on_removed = on_source_removed
        # (org id, device id or None for the org scope) -> its subscriptions.
        self._scopes: dict[tuple[str, str | None], _Scope] = {}
        # Per subscriber: (org id, pattern text) -> (pattern, the sources it reads).
        self._subscriptions: dict[Subscriber, dict[tuple[str, str], tuple[Pattern, frozenset[Source]]]] = {}
        self._source_counts: Counter[Source] = Counter()

    def subscribe(self, subscriber: Subscriber, org_id: str, pattern: Pattern) -> bool:
        """Add a subscription; False if the subscriber already has this pattern in this organization."""
        own = self._subscriptions.setdefault(subscriber, {})
        if (org_id, pattern.text) in own:
            return False
        sources = pattern.sources(org_id, self.resolutions)
        own[(org_id, pattern.text)] = (pattern, sources)
        scope = self._scopes.setdefault((org_id, pattern.device_id), _Scope())
        if pattern.exact:
            scope.exact.setdefault(pattern.text, set()).add(subscriber)
        else:
            scope.patterns.setdefault(pattern.text, (pattern, set()))[1].add(subscriber)
        for source in sources:
            self._source_counts[source] += 1
            if self._source_counts[source] == 1 and self._on_added is not None:
                self._on_added(source)
        return True

    def unsubscribe(self, subscriber: Subscriber, org_id: str, pattern: Pattern | str) -> bool:
        """Remove one subscription (by pattern or its text); False if there was none."""
        own = self._subscriptions.get(subscriber)
        text = pattern if isinstance(pattern, str) else pattern.text
        entry = own.pop((org_id, text), None) if own is not None else None
        if entry is None:
            return False
        if not own:
            del self._subscriptions[subscriber]
        self._drop(subscriber, org_id, *entry)
        return True

    def remove(self, subscriber: Subscriber) -> int:
        """Remove every subscription of ``subscriber`` (its connection closed); how many there were."""
        own = self._subscriptions.pop(subscriber, {})
        for (org_id, _), entry in own.items():
            self._drop(subscriber, org_id, *entry)
        return len(own)

    def subscriptions(self, subscriber: Subscriber) -> list[tuple[str, Pattern]]:
        """(org id, pattern) of each subscription of ``subscriber``, in the order made."""
        return [(org_id, pattern) for (org_id, _), (pattern, _) in self._subscriptions.get(subscriber, {}).items()]

    def sources(self) -> frozenset[Source]:
        """The streams with at least one local subscription: the ones to read."""
        return frozenset(self._source_counts)

    def deliver(self, source: Source, channel: str, offset: str, epoch: str, data: Any) -> int:
        """Send one message read from ``source`` to every subscriber it matches; how many it went to."""
        scope = self._scopes.get((source.org_id, source.device_id))
        if scope is None:
            return 0
        receivers = tuple(scope.receivers(channel))  # a copy: send may unsubscribe (a slow consumer closing)
        message = {"type": "message", "channel": channel, "offset": offset, "epoch": epoch, "data": data}
        as_json: Outgoing | None = None
        as_msgpack: Outgoing | None = None
        for subscriber in receivers:
            if subscriber.encoding == "msgpack":
                if as_msgpack is None:
                    as_msgpack = Outgoing(encode_msgpack(message), True)
                payload = as_msgpack
            else:
                if as_json is None:
                    as_json = Outgoing(encode_json(message), False)
                payload = as_json
            try:
                subscriber.send(payload, source, offset)
            except Exception:  # one broken session must not cost the others their message
                logger.exception("fan-out: sending to a subscriber failed")
        return len(receivers)

    def _drop(self, subscriber: Subscriber, org_id: str, pattern: Pattern, sources: frozenset[Source]) -> None:
        key = (org_id, pattern.device_id)
        scope = self._scopes[key]
        if pattern.exact:
            group = scope.exact[pattern.text]
            group.discard(subscriber)
            if not group:
                del scope.exact[pattern.text]
        else:
            group = scope.patterns[pattern.text][1]
            group.discard(subscriber)
            if not group:
                del scope.patterns[pattern.text]
        if not scope:
            del self._scopes[key]
        for source in sources:
            self._source_counts[source] -= 1
            if self._source_counts[source] == 0:
                del self._source_counts[source]
                if self._on_removed is not None:
                    self._on_removed(source)
