"""Where a dashboard subscription has read to (API.md §5 recovery), and which channels a pattern matches; no I/O.

A subscription reads one stream or several. Its reply's ``offset`` and ``epoch`` are then plain, or
*composite*: ``label=value`` parts joined by ``,``, one per stream, the label being a channel's levels after
the device id (``telemetry``, ``aggregates/1m``, ``events``, ``commands``; ``alerts`` for alerts). A hub that
spreads each organization's devices over P partitions reads, for a wildcard device level, one stream per
partition of telemetry, aggregates and events: their labels are ``<label>.<p>`` (``telemetry.3``), and a
device's messages move part ``p = CRC-32(device id) mod P`` (``message_label``), P being how many such parts
the reply has. Per stream
a :class:`Position` keeps the epoch, the offset the reply covered, and the offset of the last message read.
Resuming sends, per stream, the last message read (or, when none was, what the reply covered), so the hub
replays exactly what came after: no gap and no duplicate.

One stream entry may give several messages with one offset (a ``points`` frame gives one per point), so a stream
also counts the messages read at its last offset. Each message comes with its index among the messages of its
copy of the entry (``HubClient`` numbers them): a second copy of an entry, which another subscription's replay
on the same connection hands to every subscription matching the channel, is then told from the rest of the
first one and dropped. (clients/js/positions.js does the same.)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["Position", "channel_label", "matches", "message_label", "offset_key", "partition_counts"]

_PARTS = ","
# read_count of an entry known to be read in full (its message count unknown).
WHOLE_ENTRY = 1 << 62
_LABEL = "="


def matches(pattern: str, channel: str) -> bool:
    """MQTT matching: ``+`` is one level, ``#`` (last) the rest."""
    levels = channel.split("/")
    for index, level in enumerate(pattern.split("/")):
        if level == "#":
            return True
        if index >= len(levels) or (level != "+" and level != levels[index]):
            return False
    return len(pattern.split("/")) == len(levels)


def channel_label(channel: str) -> str:
    """A channel's stream label in composite positions: its levels after the device id (``alerts`` as is)."""
    levels = channel.split("/")
    return "/".join(levels[2:]) if levels[0] == "devices" and len(levels) > 2 else channel


def message_label(channel: str, labels: dict[str, int]) -> str:
    """The label of the stream a message on ``channel`` came from, given the partitioned labels of its
    subscription (``labels``: base label -> number of partitions, from ``partition_counts``)."""
    label = channel_label(channel)
    count = labels.get(label)
    if not count:
        return label
    device = channel.split("/")[1]
    return f"{label}.{zlib.crc32(device.encode()) % count}"


def partition_counts(labels: list[str]) -> dict[str, int]:
    """Base label -> how many ``<base>.<p>`` labels there are."""
    counts: dict[str, int] = {}
    for label in labels:
        base, dot, part = label.rpartition(".")
        if dot and part.isdigit():
            counts[base] = counts.get(base, 0) + 1
    return counts


def offset_key(offset: str) -> tuple[int, int]:
    """An offset (a Redis stream id, ``<ms>-<n>``) as something that orders."""
    ms, _, serial = offset.partition("-")
    return int(ms), int(serial or 0)


def _split(text: str) -> dict[str, str]:
    if _LABEL not in text:
        return {"": text}
    return dict(part.split(_LABEL, 1) for part in text.split(_PARTS))


def _join(parts: dict[str, str]) -> str:
    if list(parts) == [""]:
        return parts[""]
    return _PARTS.join(f"{label}{_LABEL}{value}" for label, value in sorted(parts.items()))


@dataclass(slots=True)
class _Stream:
    epoch: str
    covered: str
    read: str | None = None
    # Messages read at offset ``read``: a points frame's entry gives several.
    read_count: int = 0

    @property
    def resume_at(self) -> str:
        return self.read if self.read is not None else self.covered


class Position:
    """Per stream of one subscription: its epoch, the offset its reply covered and the last offset read."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}
        # Partitioned labels (``telemetry.3``): base label -> how many partitions.
        self._partitions: dict[str, int] = {}

    @property
    def known(self) -> bool:
        return bool(self._streams)

    @classmethod
    def from_since(cls, offset: str, epoch: str) -> Position:
        """A position a caller kept (``since``): everything up to it was read."""
        position = cls()
        epochs = _split(epoch)
        for label, value in _split(offset).items():
            if label in epochs:
                # Everything up to it: the entry at that offset was read whole.
                position._streams[label] = _Stream(epochs[label], value, value, WHOLE_ENTRY)
        position._partitions = partition_counts(list(position._streams))
        return position

    def replied(self, offset: str, epoch: str, *, recovered: bool) -> None:
        """A subscribe reply. Recovered: what was read stands and the hub replays what follows it. Not
        recovered (or first subscribed): reading starts after what the reply covered."""
        epochs = _split(epoch)
        streams: dict[str, _Stream] = {}
        for label, covered in _split(offset).items():
            before = self._streams.get(label)
            kept = recovered and before is not None and before.epoch == epochs.get(label)
            read, count = (before.read, before.read_count) if kept and before is not None else (None, 0)
            streams[label] = _Stream(epochs.get(label, ""), covered, read, count)
        self._streams = streams
        self._partitions = partition_counts(list(streams))

    def has_epoch(self, channel: str, epoch: str) -> bool:
        stream = self._streams.get(self._label(channel))
        return stream is not None and stream.epoch == epoch

    def advance(self, channel: str, offset: str, epoch: str, index: int = 0) -> bool:
        """A message arrived, the ``index``-th of its copy of a stream entry; False when it was read already (a
        duplicate, to drop). A new epoch (the stream's history was lost and begun again) starts that stream over."""
        label = self._label(channel)
        stream = self._streams.get(label)
        if stream is None or stream.epoch != epoch:
            self._streams[label] = _Stream(epoch, offset, offset, index + 1)
            return True
        if stream.read is not None:
            order = offset_key(offset)
            if order < offset_key(stream.read):
                return False
            if order == offset_key(stream.read):
                # The next message of the entry read last, or a copy of one read already.
                if index != stream.read_count:
                    return False
                stream.read_count += 1
                return True
        stream.read = offset
        stream.read_count = index + 1
        return True

    def since(self) -> dict[str, str]:
        """The ``since`` that resumes right after what was read."""
        return {
            "offset": _join({label: s.resume_at for label, s in self._streams.items()}),
            "epoch": _join({label: s.epoch for label, s in self._streams.items()}),
        }

    def _label(self, channel: str) -> str:
        return "" if list(self._streams) == [""] else message_label(channel, self._partitions)
