"""The Redis keys of the ingest side: streams of frames and events, each device's last stored seq and state.

An organization's devices are spread over ``P`` *partitions* (``partition_of``: CRC-32 of the device id mod
``P``), a deployment constant (``TELEHUB_PARTITIONS``, kept in ``th:layout``: hub/layout.py). Every key of a
device, and partition ``p`` of each organization-wide stream, carries the hash tag of its partition,
``{<org_id>.<p>}``: one flush of one partition is one Lua call on one Redis Cluster slot (the device's frames,
its last seq and the organization stream written atomically), and one busy organization spreads over ``P``
slots, so over every shard. With ``P = 1`` the tag is ``{org_id}`` itself, the tag of the organization's other
keys (``hub/keys.py``), so a single Redis keeps the layout it always had.

Events that belong to no device partition (``alert.*``, ``command.*``) go to the organization's own log,
``org_log``; ``GET /events`` merges it with the partitions of ``org_events`` (with ``P = 1`` they are one
stream).
"""

from __future__ import annotations

import zlib

from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = [
    "LayoutUnknown",
    "device_aggregates",
    "device_events",
    "device_frames",
    "device_state",
    "forget_partitions",
    "last_seqs",
    "org_aggregates",
    "org_event_streams",
    "org_events",
    "org_log",
    "org_telemetry",
    "partition_of",
    "partition_tag",
    "partitions",
    "use_partitions",
]

PREFIX = "th"
MAX_PARTITIONS = 1024
# None until the store's layout is known (hub/layout.py): no key of a partition can be named before.
_partitions: int | None = None


class LayoutUnknown(RedisConnectionError):
    """A key was asked for before the process knew the store's layout (hub/layout.py settles it at start, and
    again and again while Redis is unreachable). Handled wherever Redis being unreachable is: REST answers
    503, ingest holds its frames and retries, readers retry."""

    def __init__(self) -> None:
        super().__init__("the store's key layout is not known yet (waiting for Redis)")


def use_partitions(count: int) -> None:
    """Set ``P`` for this process (hub/layout.py does, from the layout stored in Redis, before any key is made)."""
    global _partitions
    if not 1 <= count <= MAX_PARTITIONS:
        raise ValueError(f"partitions: 1..{MAX_PARTITIONS}, not {count}")
    _partitions = count


def forget_partitions() -> None:
    """Back to not knowing the layout (a process that will settle it again, such as a test)."""
    global _partitions
    _partitions = None


def partitions() -> int:
    """``P``: how many partitions each organization's devices are spread over."""
    if _partitions is None:
        raise LayoutUnknown
    return _partitions


def partition_of(device_id: str) -> int:
    """The partition of a device: CRC-32 (zlib's, IEEE) of its id's UTF-8 bytes mod ``P``. Dashboard clients
    compute the same to tell which part of a composite offset a wildcard subscription's message moves."""
    count = partitions()
    return zlib.crc32(device_id.encode()) % count if count > 1 else 0


def partition_tag(org_id: str, partition: int) -> str:
    """The hash tag (without braces) of partition ``partition`` of an organization."""
    return org_id if partitions() == 1 else f"{org_id}.{partition}"


def _device_tag(org_id: str, device_id: str) -> str:
    return partition_tag(org_id, partition_of(device_id))


def device_frames(org_id: str, device_id: str) -> str:
    """Stream: every frame the device sent, as received (k kind, s seq, b binary 1/0, f frame bytes)."""
    return f"{PREFIX}:{{{_device_tag(org_id, device_id)}}}:frames:{device_id}"


def device_events(org_id: str, device_id: str) -> str:
    """Stream: the device's events (device.online/offline, its own event frames)."""
    return f"{PREFIX}:{{{_device_tag(org_id, device_id)}}}:events:{device_id}"


def org_telemetry(org_id: str, partition: int) -> str:
    """Stream: every accepted telemetry/columns frame of the partition's devices (d device, s seq, b, f)."""
    return f"{PREFIX}:{{{partition_tag(org_id, partition)}}}:telemetry"


def org_events(org_id: str, partition: int) -> str:
    """Stream: the device events of the partition's devices (device.online/offline, device.event)."""
    return f"{PREFIX}:{{{partition_tag(org_id, partition)}}}:events"


def org_log(org_id: str) -> str:
    """Stream: the organization's events of no device partition (alert.*, command.*); with ``P = 1`` the
    same stream as ``org_events(org_id, 0)``."""
    return f"{PREFIX}:{{{org_id}}}:events"


def org_event_streams(org_id: str) -> list[str]:
    """Every stream of the organization's event log: the partitions of ``org_events``, then ``org_log`` when
    it is another stream."""
    count = partitions()
    streams = [org_events(org_id, p) for p in range(count)]
    return streams if count == 1 else [*streams, org_log(org_id)]


def device_aggregates(org_id: str, device_id: str, resolution: str) -> str:
    """Stream: the device's closed windows of one resolution (``1s``, ``1m``, ``1h``): d device, s window start
    (ms), c corrected 1/0, p the ``devices/{id}/aggregates/{resolution}`` channel payload (JSON)."""
    return f"{PREFIX}:{{{_device_tag(org_id, device_id)}}}:aggregates:{resolution}:{device_id}"


def org_aggregates(org_id: str, resolution: str, partition: int) -> str:
    """Stream: every closed window of one resolution of the partition's devices (same fields as the device's)."""
    return f"{PREFIX}:{{{partition_tag(org_id, partition)}}}:aggregates:{resolution}"


def connection_generations(org_id: str) -> str:
    """Hash: device id -> how many connections it has opened (over every process): orders the connections of
    one device, so a late notice from an older one never closes a newer one."""
    return f"{PREFIX}:{{{org_id}}}:conngen"


def last_seqs(org_id: str, partition: int) -> str:
    """Hash: device id -> the highest seq stored for it (the partition's devices), written in the same script
    as its frames."""
    return f"{PREFIX}:{{{partition_tag(org_id, partition)}}}:lastseq"


def device_state(org_id: str, device_id: str) -> str:
    """Hash: the device's presence, written by hub/presence.py: ``status`` (online|offline), ``last_seen``
    (epoch ms), and while online ``connection`` and ``node`` (the process holding its connection)."""
    return f"{PREFIX}:{{{_device_tag(org_id, device_id)}}}:devstate:{device_id}"
