"""Device frames as the SDK writes and reads them (API.md §4), with no I/O.

A frame is encoded once, when it is queued, as a MessagePack map whose last entry, ``seq``, is appended when
the frame is first sent (:meth:`QueuedFrame.numbered`): frames are numbered in the order they go out, after
the hub's ``hello`` has been heard, and resent byte for byte after a reconnect. What the hub would refuse for
certain (a bad metric name, a non-finite value, a frame over the size limit) is refused here, at once, with
``ValueError`` or ``TypeError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import orjson

__all__ = [
    "MAX_ERROR_CHARS",
    "QueuedFrame",
    "check_document",
    "columns_frame",
    "command_result_frame",
    "decode_message",
    "event_frame",
    "points_frame",
    "telemetry_frame",
    "timestamp_ms",
]

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_ERROR_CHARS = 1024
MAX_DATA_BYTES = 65_536
_SEQ_KEY = msgpack.packb("seq")
_NUMBERS = (int, float)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Binary columns are little-endian whatever the host.
_WIRE_I8 = np.dtype("<i8")
_WIRE_F8 = np.dtype("<f8")


@dataclass(frozen=True, slots=True)
class QueuedFrame:
    """A frame waiting for its seq: the MessagePack map of every field but ``seq``, which goes last."""

    kind: str
    head: bytes

    def numbered(self, seq: int) -> bytes:
        return self.head + _SEQ_KEY + msgpack.packb(seq)

    def __len__(self) -> int:
        return len(self.head) + len(_SEQ_KEY) + 9


def _queued(kind: str, fields: dict[str, Any]) -> QueuedFrame:
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_map_header(len(fields) + 2), packer.pack("type"), packer.pack(kind)]
    for key, value in fields.items():
        parts += (packer.pack(key), packer.pack(value))
    return QueuedFrame(kind, b"".join(parts))


def timestamp_ms(ts: int | datetime | None) -> int | None:
    """Milliseconds since the epoch: an int as it is, an aware ``datetime`` converted; None stays None."""
    if ts is None:
        return None
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise ValueError("ts: a datetime must be timezone-aware")
        return (ts - _EPOCH) // _MS  # exact: ts.timestamp() * 1000 is a float, one ms short for some instants
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise TypeError("ts: integer milliseconds since the epoch or an aware datetime")
    return ts


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise ValueError(f"{what} {name!r}: must match [A-Za-z0-9_.-]{{1,64}}")


def _metrics(metrics: Mapping[str, float | int | bool]) -> dict[str, float | int | bool]:
    if not metrics:
        raise ValueError("metrics: at least one")
    for name, value in metrics.items():
        _check_name(name, "metric name")
        if not isinstance(value, _NUMBERS) or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"metrics.{name}: must be a finite number, not {value!r}")
    return dict(metrics)


def telemetry_frame(metrics: Mapping[str, float | int | bool], ts: int | None) -> QueuedFrame:
    """One data point: ``{type: telemetry, ts, metrics}``."""
    fields: dict[str, Any] = {} if ts is None else {"ts": ts}
    fields["metrics"] = _metrics(metrics)
    return _queued("telemetry", fields)


def points_frame(points: Iterable[tuple[int, Mapping[str, float | int | bool]]]) -> QueuedFrame:
    """Several data points in one frame: ``{type: telemetry, points: [{ts, metrics}, …]}``."""
    body = [{"ts": ts, "metrics": _metrics(metrics)} for ts, metrics in points]
    if not body:
        raise ValueError("points: at least one")
    return _queued("telemetry", {"points": body})


def columns_frame(ts: npt.ArrayLike, metrics: Mapping[str, npt.ArrayLike]) -> QueuedFrame:
    """T timestamps (int64 ms) and, per metric, T float64 values, each sent as little-endian MessagePack bin."""
    times = np.asarray(ts)
    if times.ndim != 1 or times.dtype.kind not in "iu" or len(times) == 0:
        raise TypeError("ts: a non-empty 1-D array of integer milliseconds")
    if not metrics:
        raise ValueError("metrics: at least one column")
    columns: dict[str, bytes] = {}
    for name, column in metrics.items():
        _check_name(name, "metric name")
        values = np.asarray(column)
        if values.shape != times.shape or values.dtype.kind not in "fiub":
            raise ValueError(f"metrics.{name}: a 1-D numeric array as long as ts ({len(times)})")
        values = values.astype(_WIRE_F8, copy=False)
        if not np.isfinite(values).all():
            raise ValueError(f"metrics.{name}: every value must be finite")
        columns[name] = values.tobytes()
    return _queued("columns", {"ts": times.astype(_WIRE_I8, copy=False).tobytes(), "metrics": columns})


def check_document(value: Any, what: str, limit: int = MAX_DATA_BYTES) -> None:
    """``value`` survives JSON (the hub keeps event data and results as JSON) within ``limit`` bytes."""
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:
        raise TypeError(f"{what}: must be JSON-compatible ({exc})") from None
    if len(encoded) > limit:
        raise ValueError(f"{what}: {len(encoded)} bytes as JSON, over the limit of {limit}")
    if orjson.loads(encoded) != value and _has_non_finite(value):
        raise ValueError(f"{what}: numbers must be finite")


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


def event_frame(name: str, data: Any, ts: int | None) -> QueuedFrame:
    """A named event with any JSON-compatible ``data``."""
    _check_name(name, "event name")
    check_document(data, "data")
    fields: dict[str, Any] = {"name": name} if ts is None else {"ts": ts, "name": name}
    if data is not None:
        fields["data"] = data
    return _queued("event", fields)


def command_result_frame(command_id: str, *, result: Any = None, error: str | None = None) -> bytes:
    """The answer to a command: ``completed`` with ``result``, or ``failed`` with ``error`` when one is given."""
    body: dict[str, Any] = {"type": "command_result", "command_id": command_id}
    if error is not None:
        body["status"] = "failed"
        body["error"] = error[:MAX_ERROR_CHARS]
    else:
        body["status"] = "completed"
        if result is not None:
            body["result"] = result
    return msgpack.packb(body, use_bin_type=True)


def decode_message(data: bytes | str) -> dict[str, Any]:
    """A hub -> device frame (MessagePack or JSON); ValueError if it is not a map with a ``type``."""
    try:
        message = msgpack.unpackb(data, raw=False) if isinstance(data, bytes) else orjson.loads(data)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ValueError(f"undecodable frame from the hub: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError("a frame from the hub is a map with a type")
    return message
