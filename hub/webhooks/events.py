"""Webhook events (API.md §6) from stream entries: which stream each type comes from, and its payload.

- ``device.online``, ``device.offline``, ``alert.*``, ``command.completed|failed|timed_out``: one event per
  entry of the organization's event log (``e`` type, ``d`` device, ``b`` binary flag, ``f`` payload); ``data``
  is the payload without ``type``, with ``device_id``.
- ``data.received``: the organization's telemetry stream, coalesced per device and arrival second
  (:class:`TelemetryCoalescer`): ``data: {device_id, count, start, end}``, ``count`` the frames (or HTTP
  readings posts) stored in that second.
- ``aggregation.completed``: one event per closed window written to the organization's aggregate streams
  (a correction of a closed window too): ``data`` is the window as ``devices/{id}/aggregates/{res}`` shows it
  (``device_id, start, end, metrics``, ``corrected`` when it is one) plus ``resolution``.

Event ids are derived from the entry they come from, and delivery ids from the event and the webhook, so
reading an entry again after a crash makes the same ids (the queue refuses a delivery id it has seen).
Pure code: no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
import orjson

from hub.clock import iso_ms

__all__ = [
    "EVENT_TYPES",
    "Event",
    "SourceKind",
    "TelemetryCoalescer",
    "aggregate_event",
    "delivery_id",
    "log_event",
    "source_kind",
]

EVENT_TYPES = (
    "device.online",
    "device.offline",
    "data.received",
    "alert.triggered",
    "alert.resolved",
    "command.completed",
    "command.failed",
    "command.timed_out",
    "aggregation.completed",
)
SourceKind = Literal["events", "telemetry", "aggregates"]
# A second's data.received waits this long past its end for frames still on their way (clock skew).
COALESCE_GRACE_MS = 1000

Fields = dict[bytes, bytes]


def source_kind(event_type: str) -> SourceKind:
    if event_type == "data.received":
        return "telemetry"
    if event_type == "aggregation.completed":
        return "aggregates"
    return "events"


@dataclass(frozen=True, slots=True)
class Event:
    """One event of one organization; ``body`` is the delivery's JSON body, the same for every webhook."""

    id: str
    type: str
    created_ms: int
    body: bytes


def _digest(*parts: str) -> str:
    return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()


def delivery_id(event_id: str, webhook_id: str) -> str:
    return "dlv_" + _digest(event_id, webhook_id)


def entry_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def make_event(org_id: str, source: str, entry_id: str, event_type: str, created_ms: int, data: Any) -> Event:
    event_id = "evt_" + _digest(org_id, source, entry_id, event_type)
    body = {"id": event_id, "type": event_type, "created_at": iso_ms(created_ms), "org_id": org_id, "data": data}
    return Event(event_id, event_type, created_ms, orjson.dumps(body))


def log_event(org_id: str, source: str, entry_id: str, fields: Fields) -> Event | None:
    """The event of an event-log entry, or None for types webhooks do not carry (device.event,
    command.queued, ...)."""
    event_type = fields[b"e"].decode()
    if event_type not in EVENT_TYPES:
        return None
    raw = fields.get(b"f", b"")
    try:
        payload: Any = msgpack.unpackb(raw, raw=False) if fields.get(b"b") == b"1" else orjson.loads(raw)
    except (ValueError, msgpack.UnpackException):
        payload = {}
    data = {k: v for k, v in payload.items() if k != "type"} if isinstance(payload, dict) else {}
    data["device_id"] = fields[b"d"].decode() if b"d" in fields else data.get("device_id")
    return make_event(org_id, source, entry_id, event_type, entry_ms(entry_id), data)


def aggregate_event(org_id: str, source: str, resolution: str, entry_id: str, fields: Fields) -> Event:
    data = orjson.loads(fields[b"p"])
    if isinstance(data, dict):
        data["resolution"] = resolution
    return make_event(org_id, source, entry_id, "aggregation.completed", entry_ms(entry_id), data)


@dataclass(slots=True)
class Bucket:
    """The telemetry entries of one device in one arrival second."""

    device_id: str
    second: int
    first_entry: str
    entries: list[str] = field(default_factory=list)


class TelemetryCoalescer:
    """Groups one organization's telemetry entries per device and arrival second, and says which seconds are
    over. Entries are read in id order, so a second is over once an entry of a later second was read, or
    ``COALESCE_GRACE_MS`` after its end by the clock."""

    def __init__(self, org_id: str, source: str) -> None:
        self.org_id = org_id
        self.source = source
        self.buckets: dict[tuple[str, int], Bucket] = {}
        self.newest_ms = 0

    def add(self, device_id: str, entry_id: str) -> None:
        ms = entry_ms(entry_id)
        self.newest_ms = max(self.newest_ms, ms)
        key = (device_id, ms // 1000)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(device_id, ms // 1000, entry_id)
        bucket.entries.append(entry_id)

    def closed(self, now_ms: int) -> list[Bucket]:
        """Remove and return the buckets whose second is over."""
        done = [
            key
            for key, bucket in self.buckets.items()
            if (bucket.second + 1) * 1000 <= self.newest_ms or (bucket.second + 1) * 1000 + COALESCE_GRACE_MS <= now_ms
        ]
        return [self.buckets.pop(key) for key in done]

    def event(self, bucket: Bucket) -> Event:
        start = bucket.second * 1000
        data = {
            "device_id": bucket.device_id,
            "count": len(bucket.entries),
            "start": iso_ms(start),
            "end": iso_ms(start + 1000),
        }
        created = entry_ms(bucket.first_entry)
        return make_event(self.org_id, self.source, bucket.first_entry, "data.received", created, data)
