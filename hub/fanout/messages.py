"""Stream entries -> the ``channel`` and ``data`` of dashboard messages (API.md §5).

Entries come as redis-py returns them with ``decode_responses=False``: a field map of bytes to bytes. Each
function here runs once per entry read (not per subscriber), so it does the least it can: telemetry frames
are decoded by ``ingest.codec`` (the one device frame decoder), everything else is one unpack or none. A
stored frame the codec refuses raises ``FrameError`` (a corrupted entry: the reader logs and skips it).

Shapes of ``data``:

- ``devices/{id}/telemetry``: ``{device_id, ts, metrics: {name: value}}`` per data point (a ``points`` frame
  gives one message per point, in order), ``{device_id, ts: [...], metrics: {name: [...]}}`` per columns
  frame. ``ts`` is integer ms since the epoch as in device frames (a columns frame may carry thousands);
  values are floats (booleans 1.0/0.0), as stored. A frame without ``ts`` gets its arrival time, the ms of
  the entry id (the device stream's id when the frame is read from there; the org stream's id may be a
  ms later).
- ``devices/{id}/events``: the REST event of ``GET /events`` without its ``id`` (the message's ``offset``
  names the entry in the stream read): ``{type, device_id, created_at, data}``.
- ``devices/{id}/aggregates/{res}``: the entry's ``p``, already in the contract's shape.
- ``devices/{id}/commands`` and ``alerts`` (streams their issues will write): the entry's ``p``, JSON of the
  channel's data, and for commands ``d``, the device id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack
import orjson

from hub.clock import iso_ms
from hub.fanout.channels import ALERTS_CHANNEL, aggregates_channel, commands_channel, events_channel, telemetry_channel
from ingest import at_rest, codec
from ingest.frames import Samples, TelemetryFrame
from ingest.limits import FrameLimits

__all__ = [
    "ChannelData",
    "FrameRef",
    "aggregate_message",
    "alert_message",
    "arrival_ms",
    "command_message",
    "event_message",
    "org_telemetry_messages",
    "referenced_telemetry_messages",
    "telemetry_messages",
]

Fields = dict[bytes, bytes]
# Stored frames were checked when received: read them back whatever the server's limits are now.
_BIG = 2**31 - 1
_STORED = FrameLimits(
    max_frame_bytes=_BIG,
    max_metrics=_BIG,
    max_points=_BIG,
    max_samples=_BIG,
    max_event_data_bytes=_BIG,
    past_ms=2**62,
    future_ms=2**62,
)
_TELEMETRY_KINDS = frozenset({b"telemetry", b"columns", b"readings"})
_DEVICE_EVENT_FIELDS = ("name", "data", "ts", "seq")


class ChannelData(NamedTuple):
    """One message to fan out: its concrete channel and its ``data``."""

    channel: str
    data: Any


@dataclass(frozen=True, slots=True)
class FrameRef:
    """An org telemetry entry of a large frame, stored only in the device's stream: read entry ``frame_id``
    of ``device_frames(org, device_id)`` and pass its fields to ``referenced_telemetry_messages``."""

    device_id: str
    frame_id: str


def arrival_ms(entry_id: bytes | str) -> int:
    """The ms part of a stream id: when Redis stored the entry."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def telemetry_messages(device_id: str, entry_id: bytes | str, fields: Fields) -> list[ChannelData]:
    """An entry of the device's frames stream (k, s, b, f): its telemetry messages; none for other kinds
    (event and command_result frames reach dashboards through the events and commands streams)."""
    kind = fields[b"k"]
    if kind not in _TELEMETRY_KINDS:
        return []
    binary, raw = at_rest.as_sent(fields[b"b"], fields[b"f"])
    frame = _decode(raw, binary, kind == b"readings", arrival_ms(entry_id))
    return _telemetry(device_id, frame)


def org_telemetry_messages(entry_id: bytes | str, fields: Fields) -> list[ChannelData] | FrameRef:
    """An entry of the organization's telemetry stream (d, s, b, and f or r): its messages, or, for a large
    frame held only in the device's stream, where to read it."""
    device_id = fields[b"d"].decode()
    raw = fields.get(b"f")
    if raw is None:
        return FrameRef(device_id, fields[b"r"].decode())
    # Only HTTP readings have seq 0 (and no type field); telemetry and columns frames say what they are.
    binary, raw = at_rest.as_sent(fields[b"b"], raw)
    frame = _decode(raw, binary, fields[b"s"] == b"0", arrival_ms(entry_id))
    return _telemetry(device_id, frame)


def referenced_telemetry_messages(ref: FrameRef, fields: Fields | None) -> list[ChannelData]:
    """The messages of a large frame: ``fields`` of the device frames entry ``ref.frame_id``, or None when it
    is gone (trimmed, or the device was deleted): then there is nothing to send. Their offset is still the
    org entry's id (the stream the subscriber follows)."""
    if fields is None:
        return []
    return telemetry_messages(ref.device_id, ref.frame_id, fields)


def event_message(entry_id: bytes | str, fields: Fields) -> ChannelData | None:
    """An entry of a device's or the organization's events stream (e, d, b, f). Only ``device.*`` events go
    to ``devices/{id}/events``; others (alert.*, command.* in the org log) have channels of their own."""
    kind = fields[b"e"].decode()
    if not kind.startswith("device."):
        return None
    device_id = fields[b"d"].decode()
    raw = fields[b"f"]
    payload: Any = msgpack.unpackb(raw, raw=False) if fields[b"b"] == b"1" else orjson.loads(raw)
    # As hub/api/history_routes.py _event builds it for GET /events.
    if not isinstance(payload, dict):
        data: dict[str, Any] = {}
    elif kind == "device.event":
        data = {k: payload.get(k) for k in _DEVICE_EVENT_FIELDS}
    else:
        data = {k: v for k, v in payload.items() if k != "type" and k != "device_id"}
    created_at = iso_ms(arrival_ms(entry_id))
    return ChannelData(
        events_channel(device_id), {"type": kind, "device_id": device_id, "created_at": created_at, "data": data}
    )


def aggregate_message(resolution: str, fields: Fields) -> ChannelData:
    """An entry of an aggregates stream of ``resolution`` (d, s, c, p): ``p`` is the data as it stands."""
    return ChannelData(aggregates_channel(fields[b"d"].decode(), resolution), orjson.loads(fields[b"p"]))


def command_message(fields: Fields) -> ChannelData:
    """An entry of a commands stream: ``d`` the device, ``p`` the data as JSON (the commands issue writes it)."""
    return ChannelData(commands_channel(fields[b"d"].decode()), orjson.loads(fields[b"p"]))


def alert_message(fields: Fields) -> ChannelData:
    """An entry of the alerts stream: ``p`` the data as JSON (the alerts issue writes it)."""
    return ChannelData(ALERTS_CHANNEL, orjson.loads(fields[b"p"]))


def _decode(raw: bytes, binary: bool, readings: bool, now_ms: int) -> TelemetryFrame:
    if readings:
        return codec.decode_readings(raw, binary=binary, now_ms=now_ms, limits=_STORED)
    frame = codec.decode_frame(raw if binary else raw.decode(), now_ms=now_ms, limits=_STORED)
    if not isinstance(frame, TelemetryFrame):
        raise codec.FrameError("invalid_frame", f"a {type(frame).__name__} in a telemetry stream")
    return frame


def _telemetry(device_id: str, frame: TelemetryFrame) -> list[ChannelData]:
    channel = telemetry_channel(device_id)
    samples = frame.samples
    point = samples.lazy_point
    if point is not None:  # the common small frame: no arrays were built
        ts, values = point
        metrics = dict(zip(samples.names, map(float, values), strict=True))
        return [ChannelData(channel, {"device_id": device_id, "ts": ts, "metrics": metrics})]
    if frame.kind == "columns":
        return [ChannelData(channel, _columns(device_id, samples))]
    return [ChannelData(channel, data) for data in _points(device_id, samples)]


def _columns(device_id: str, samples: Samples) -> dict[str, Any]:
    """Samples are metric-major: T timestamps, then metric 0's T values, metric 1's, ..."""
    names = samples.names
    count = len(samples) // len(names)
    value = samples.value
    metrics = {name: value[i * count : (i + 1) * count].tolist() for i, name in enumerate(names)}
    return {"device_id": device_id, "ts": samples.column_ts.tolist(), "metrics": metrics}


def _points(device_id: str, samples: Samples) -> list[dict[str, Any]]:
    """The points of a long-format frame, in order. Samples do not keep point boundaries: a point ends where
    ts changes or a metric repeats, so two adjacent points with one ts and distinct metrics come as one."""
    names = samples.names
    points: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    current = None
    for ts, index, value in zip(samples.ts.tolist(), samples.metric.tolist(), samples.value.tolist(), strict=True):
        name = names[index]
        if ts != current or name in metrics:
            if metrics:
                points.append({"device_id": device_id, "ts": current, "metrics": metrics})
            current, metrics = ts, {}
        metrics[name] = value
    if metrics:
        points.append({"device_id": device_id, "ts": current, "metrics": metrics})
    return points
