"""Sans-I/O device wire codec (API.md §4): one WebSocket message in, one validated frame out; no I/O, no clock.

Binary messages are MessagePack, text messages JSON; both decode to the same frames. Validation is strict: a
frame with an unknown field, a missing or mistyped one, or a value out of range is refused whole with a
``FrameError``; the gateway answers it with an ``error`` frame and the connection stays open.

Error codes (``FrameError.code``):
    invalid_encoding     not MessagePack / JSON, bad UTF-8, trailing data, MessagePack extension types
    invalid_frame        not a map, missing, unknown or mistyped field, non-string map key, bad event name
    unknown_type         ``type`` is a string but not a device frame type
    invalid_seq          ``seq`` missing, not an integer (bools are not), or outside 1..2**63-1
    invalid_timestamp    a ``ts`` that is not an integer (floats and bools are not) or outside
                         [now - past_ms, now + future_ms]
    invalid_metric_name  a metric name not matching ``[A-Za-z0-9_.-]{1,64}``
    invalid_value        a metric value that is not a finite number; a non-finite float in data/result
    too_large            any count or size over ``FrameLimits``
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from math import isfinite
from typing import Any, Literal, NoReturn, overload

import msgpack
import numpy as np
import numpy.typing as npt
import orjson

from ingest.frames import CommandResultFrame, DeviceFrame, EventFrame, Samples, TelemetryFrame
from ingest.limits import MAX_ERROR_CHARS, FrameLimits

__all__ = ["FrameError", "ack", "decode_frame", "decode_readings", "encode_message", "error", "hello"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
COMMAND_ID_PATTERN = re.compile(r"cmd_[A-Za-z0-9_-]{1,60}")
# seq stays exact as a double: in Redis's Lua (where exactly-once compares it) and in JavaScript clients.
MAX_SEQ = 2**53 - 1

_OVER_CAP = re.compile(r"(\d+) exceeds max_(str|bin|array|map|ext)_len\(\d+\)")
_NUMBER_TYPES = frozenset({int, float, bool})
# Binary columns are little-endian whatever the host (on little-endian hosts these are int64/float64).
_WIRE_I8: np.dtype[np.int64] = np.dtype("<i8")
_WIRE_F8: np.dtype[np.float64] = np.dtype("<f8")
# Metric names already found valid, so a frame of known names costs one set comparison. Cleared when full.
_known_names: set[str] = set()
# Frames up to this size are unpacked with fixed caps (``_small_frame_unpacker``): a list of this many items
# is the largest allocation a hostile small frame can cause.
_SMALL_FRAME_BYTES = 1024
_KNOWN_NAMES_MAX = 10_000

_TELEMETRY_FIELDS = frozenset({"type", "seq", "ts", "metrics", "points"})
_POINT_FIELDS = frozenset({"ts", "metrics"})
_COLUMNS_FIELDS = frozenset({"type", "seq", "ts", "metrics"})
_EVENT_FIELDS = frozenset({"type", "seq", "ts", "name", "data"})
_RESULT_FIELDS = frozenset({"type", "command_id", "status", "result", "error"})


class FrameError(Exception):
    """A refused device frame. ``code`` and ``message`` go into the error frame, with ``seq`` when it was read."""

    def __init__(self, code: str, message: str, seq: int | None = None) -> None:
        super().__init__(code, message, seq)
        self.code = code
        self.message = message
        self.seq = seq

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def decode_frame(data: bytes | str, *, now_ms: int, limits: FrameLimits) -> DeviceFrame:
    """Decode and validate one device message: bytes are a binary message (MessagePack), str a text one (JSON).

    ``now_ms`` is the server clock, used for a missing ``ts`` and the accepted ts range. Raises ``FrameError``
    and nothing else for any input.
    """
    binary = not isinstance(data, str)
    if isinstance(data, str):
        if len(data) > limits.max_frame_bytes:
            raise _too_large("frame", len(data), limits.max_frame_bytes)
        try:
            raw = data.encode()
        except UnicodeEncodeError:
            raise FrameError("invalid_encoding", "text is not valid UTF-8") from None
    else:
        raw = data if type(data) is bytes else bytes(data)
    if len(raw) > limits.max_frame_bytes:
        raise _too_large("frame", len(raw), limits.max_frame_bytes)
    obj = _unpack(raw, limits) if binary else _parse_json(raw)
    if type(obj) is not dict:
        raise FrameError("invalid_frame", "frame must be a map")
    try:
        kind = obj.get("type")
        decoder = _DECODERS.get(kind) if type(kind) is str else None
        if decoder is None:
            if type(kind) is str:
                raise FrameError("unknown_type", f"type: unknown frame type {_short(kind)!r}")
            raise FrameError("invalid_frame", "type: required, a string")
        return decoder(obj, raw, binary, now_ms, limits)
    except FrameError as exc:
        exc.seq = _readable_seq(obj)
        raise


def decode_readings(raw: bytes, *, binary: bool, now_ms: int, limits: FrameLimits) -> TelemetryFrame:
    """An HTTP readings body: a telemetry frame without ``type`` and ``seq`` (``{ts?, metrics}`` or
    ``{points}``), MessagePack when ``binary`` else JSON. Its kind is ``readings`` and its seq 0 (HTTP has no
    seq, so these are stored at least once, not exactly once)."""
    if len(raw) > limits.max_frame_bytes:
        raise _too_large("body", len(raw), limits.max_frame_bytes)
    obj = _unpack(raw, limits) if binary else _parse_json(raw)
    if type(obj) is not dict:
        raise FrameError("invalid_frame", "the body must be a map")
    for field in ("type", "seq"):
        if field in obj:
            raise FrameError("invalid_frame", f"{field}: not part of a readings body")
    frame = _telemetry({**obj, "seq": 1}, raw, binary, now_ms, limits)
    return TelemetryFrame(0, "readings", frame.samples, raw, binary)


@overload
def encode_message(message: Mapping[str, Any], *, binary: Literal[True]) -> bytes: ...
@overload
def encode_message(message: Mapping[str, Any], *, binary: Literal[False]) -> str: ...
@overload
def encode_message(message: Mapping[str, Any], *, binary: bool) -> bytes | str: ...
def encode_message(message: Mapping[str, Any], *, binary: bool) -> bytes | str:
    """Encode a server -> device frame: MessagePack bytes when ``binary``, else JSON text.

    Answer a frame in the encoding it came in (``frame.binary``). Unserializable content raises TypeError: the
    server built the message, so that is a bug, not a device error.
    """
    body = message if type(message) is dict else dict(message)
    if binary:
        return msgpack.packb(body, use_bin_type=True)
    return orjson.dumps(body).decode()


def hello(device_id: str, last_seq: int, server_time: int) -> dict[str, Any]:
    """The first frame after connect: the last seq stored for the device and the server clock (ms)."""
    return {"type": "hello", "device_id": device_id, "last_seq": last_seq, "server_time": server_time}


def ack(seq: int) -> dict[str, Any]:
    """Every frame with seq <= ``seq`` is durably stored or was refused with an error."""
    return {"type": "ack", "seq": seq}


def error(seq: int | None, code: str, message: str) -> dict[str, Any]:
    """A refused frame; ``seq`` is left out when it could not be read."""
    if seq is None:
        return {"type": "error", "code": code, "message": message}
    return {"type": "error", "seq": seq, "code": code, "message": message}


# Parsing.


def _unpack(raw: bytes, limits: FrameLimits) -> Any:
    """MessagePack -> Python, every declared length capped so a hostile frame costs little memory or CPU.

    A length over a cap that the frame could hold is ``too_large`` (no seq: decoding stopped there); one the
    frame cannot hold is ``invalid_encoding``. Extension types, timestamps included, are refused; non-string
    map keys are left to validation (``invalid_frame``).
    """
    size = len(raw)
    try:
        if size <= _SMALL_FRAME_BYTES:
            return _small_frame_unpacker(limits.decoder_caps)(raw)
        max_str, max_array, max_map = limits.decoder_caps
        return msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=False,
            ext_hook=_refuse_ext,
            max_ext_len=0,
            max_str_len=max_str,
            max_bin_len=size,
            max_array_len=min(size, max_array),  # lists are allocated at their declared length
            max_map_len=min(size // 2, max_map),
        )
    except TypeError:  # an unhashable map key (a list or map)
        raise FrameError("invalid_frame", "map keys must be strings") from None
    except (ValueError, msgpack.UnpackException) as exc:
        # msgpack's words for a cap: "70000 exceeds max_str_len(65536)".
        over = _OVER_CAP.fullmatch(str(exc))
        if over is None:
            detail = _short(str(exc) or "malformed")
        elif over[2] == "ext":
            detail = "extension types are not accepted"
        elif int(over[1]) > size:
            detail = f"a {over[2]} of length {over[1]} in {size} bytes"
        else:
            raise FrameError("too_large", f"a {over[2]} of length {over[1]} is longer than frames allow") from None
        raise FrameError("invalid_encoding", f"not valid MessagePack: {detail}") from None


@functools.lru_cache(maxsize=8)
def _small_frame_unpacker(caps: tuple[int, int, int]) -> Callable[[bytes], Any]:
    """``msgpack.unpackb`` with its options bound, for frames of at most ``_SMALL_FRAME_BYTES``: the caps are
    those of the largest such frame, which refuse the same frames as caps fitted to each frame's size (a length
    over the frame's size fails either way, as ``invalid_encoding``), for half the cost of passing them per call.
    """
    max_str, max_array, max_map = caps
    return functools.partial(
        msgpack.unpackb,
        raw=False,
        strict_map_key=False,
        ext_hook=_refuse_ext,
        max_ext_len=0,
        max_str_len=min(_SMALL_FRAME_BYTES, max_str),
        max_bin_len=_SMALL_FRAME_BYTES,
        max_array_len=min(_SMALL_FRAME_BYTES, max_array),
        max_map_len=min(_SMALL_FRAME_BYTES // 2, max_map),
    )


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError("extension types are not accepted")


def _parse_json(raw: bytes) -> Any:
    """JSON -> Python. orjson refuses NaN/Infinity literals and numbers that overflow float64."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError("invalid_encoding", f"not valid JSON: {_short(str(exc))}") from None


# Frame types.


def _telemetry(obj: dict[Any, Any], raw: bytes, binary: bool, now_ms: int, limits: FrameLimits) -> TelemetryFrame:
    """``metrics`` (one point, ``ts`` optional) or ``points`` (each with an optional ``ts``), exactly one."""
    if not obj.keys() <= _TELEMETRY_FIELDS:
        _check_fields(obj, _TELEMETRY_FIELDS)
    seq = obj.get("seq")
    if type(seq) is not int or not 0 < seq <= MAX_SEQ:
        seq = _seq(obj)
    metrics: Any = obj.get("metrics")
    if type(metrics) is not dict or "points" in obj:  # anything but the common one-point frame
        if ("metrics" in obj) == ("points" in obj):
            raise FrameError("invalid_frame", "exactly one of metrics or points is required")
        if "points" in obj:
            if "ts" in obj:
                raise FrameError("invalid_frame", "ts: not allowed with points (give each point its ts)")
            return TelemetryFrame(seq, "telemetry", _points(obj["points"], now_ms, limits), raw, binary)
        if "ts" in obj:
            _timestamp(obj["ts"], "ts", now_ms, limits)
        _metric_map(metrics, "metrics", limits)  # not a map: refused
    ts = obj.get("ts", now_ms)
    if type(ts) is not int or not now_ms - limits.past_ms <= ts <= now_ms + limits.future_ms:
        ts = _timestamp(ts, "ts", now_ms, limits)
    if not 0 < len(metrics) <= limits.max_metrics:
        _metric_map(metrics, "metrics", limits)
    if not metrics.keys() <= _known_names:
        _check_names(metrics, "metrics")
    samples = Samples.point(ts, tuple(metrics), _numbers(metrics))
    return TelemetryFrame(seq, "telemetry", samples, raw, binary)


def _points(points: object, now_ms: int, limits: FrameLimits) -> Samples:
    """Long format in the order received. Checks are inline; a message is only built for a refused point."""
    if type(points) is not list or not points:
        raise FrameError("invalid_frame", "points: must be a non-empty list")
    if len(points) > limits.max_points:
        raise _too_large("points", len(points), limits.max_points)
    low, high = now_ms - limits.past_ms, now_ms + limits.future_ms
    index: dict[str, int] = {}
    ts_list: list[int] = []
    metric_list: list[int] = []
    value_list: list[Any] = []
    for i, point in enumerate(points):
        if type(point) is not dict:
            raise FrameError("invalid_frame", f"points[{i}]: must be a map")
        if not point.keys() <= _POINT_FIELDS:
            _check_fields(point, _POINT_FIELDS, f"points[{i}].")
        ts = point.get("ts", now_ms)
        if type(ts) is not int or not low <= ts <= high:
            _timestamp(ts, f"points[{i}].ts", now_ms, limits)
        metrics: Any = point.get("metrics")
        if type(metrics) is not dict or not 0 < len(metrics) <= limits.max_metrics:
            _metric_map(metrics, f"points[{i}].metrics", limits)
        for name in metrics:
            if name not in index:
                _check_name(name, f"points[{i}].metrics")
                index[name] = len(index)
                if len(index) > limits.max_metrics:
                    raise _too_large("distinct metric names", len(index), limits.max_metrics)
        values = _numbers(metrics, i)
        metric_list += map(index.__getitem__, metrics)
        value_list += values
        ts_list += [ts] * len(values)
        if len(value_list) > limits.max_samples:
            raise _too_large("samples", len(value_list), limits.max_samples)
    return Samples(
        np.array(ts_list, dtype=np.int64),
        np.array(metric_list, dtype=np.int32),
        np.array(value_list, dtype=np.float64),
        tuple(index),
    )


def _columns(obj: dict[Any, Any], raw: bytes, binary: bool, now_ms: int, limits: FrameLimits) -> TelemetryFrame:
    """T timestamps and M metric columns of T values, each a list or little-endian bytes -> T*M samples.

    Bytes become arrays with ``np.frombuffer`` over one joined copy (the array keeps its buffer alive); lists
    go through numpy's type discovery. Either way no per-sample Python runs, and the arrays are fresh.
    """
    _check_fields(obj, _COLUMNS_FIELDS)
    seq = _seq(obj)
    if "ts" not in obj:
        raise FrameError("invalid_frame", "ts: required, a list of integers or little-endian int64 bytes")
    metrics = _metric_map(obj.get("metrics"), "metrics", limits)
    _check_names(metrics, "metrics")
    ts_column = obj["ts"]
    count, m = _column_length(ts_column, "ts"), len(metrics)
    if count == 0:
        raise FrameError("invalid_frame", "ts: must not be empty")
    if count * m > limits.max_samples:
        raise _too_large("samples", count * m, limits.max_samples)
    ts = _timestamp_column(ts_column, now_ms, limits)
    for name, column in metrics.items():
        if _column_length(column, "metrics." + name) != count:
            raise FrameError("invalid_frame", f"metrics.{name}: must have as many values as ts ({count})")
    columns = list(metrics.values())
    bin_columns = all(type(column) is bytes for column in columns)
    if bin_columns:
        value: npt.NDArray[np.float64] = np.frombuffer(b"".join(columns), dtype=_WIRE_F8)
    else:
        value = np.concatenate([_value_column(column, "metrics." + name) for name, column in metrics.items()])
    finite = np.isfinite(value)
    if not finite.all():
        column_index, offset = divmod(int(np.argmin(finite)), count)
        raise FrameError("invalid_value", f"metrics.{tuple(metrics)[column_index]}[{offset}]: must be a finite number")
    samples = Samples.table(ts, value, tuple(metrics))
    return TelemetryFrame(seq, "columns", samples, raw, binary, bin_columns and type(ts_column) is bytes)


def _event(obj: dict[Any, Any], raw: bytes, binary: bool, now_ms: int, limits: FrameLimits) -> EventFrame:
    """A named event; ``name`` follows the metric name rule, ``data`` is any JSON-compatible value."""
    _check_fields(obj, _EVENT_FIELDS)
    seq = _seq(obj)
    ts = _timestamp(obj["ts"], "ts", now_ms, limits) if "ts" in obj else now_ms
    name = obj.get("name")
    if type(name) is not str or NAME_PATTERN.fullmatch(name) is None:
        raise FrameError("invalid_frame", "name: required, matching [A-Za-z0-9_.-]{1,64}")
    data = obj.get("data")
    _check_document(data, "data", binary, limits)
    return EventFrame(seq, ts, name, data, raw, binary)


def _command_result(
    obj: dict[Any, Any], raw: bytes, binary: bool, now_ms: int, limits: FrameLimits
) -> CommandResultFrame:
    """The answer to a command, by its id; ``error`` (at most 1024 characters) may come with either status."""
    _check_fields(obj, _RESULT_FIELDS)
    command_id = obj.get("command_id")
    if type(command_id) is not str or COMMAND_ID_PATTERN.fullmatch(command_id) is None:
        raise FrameError("invalid_frame", "command_id: required, a command id (cmd_...)")
    status = obj.get("status")
    if status != "completed" and status != "failed":
        raise FrameError("invalid_frame", "status: required, 'completed' or 'failed'")
    message = obj.get("error")
    if message is not None and type(message) is not str:
        raise FrameError("invalid_frame", "error: must be a string")
    if message is not None and len(message) > MAX_ERROR_CHARS:
        raise _too_large("error characters", len(message), MAX_ERROR_CHARS)
    result = obj.get("result")
    _check_document(result, "result", binary, limits)
    return CommandResultFrame(command_id, status, result, message, raw, binary)


_DECODERS: dict[str, Callable[[dict[Any, Any], bytes, bool, int, FrameLimits], DeviceFrame]] = {
    "telemetry": _telemetry,
    "columns": _columns,
    "event": _event,
    "command_result": _command_result,
}


# Field checks.


def _readable_seq(obj: object) -> int | None:
    """The frame's seq for the error frame, if the frame is a map with a valid one."""
    seq = obj.get("seq") if type(obj) is dict else None
    return seq if type(seq) is int and 0 < seq <= MAX_SEQ else None


def _check_fields(obj: dict[Any, Any], allowed: frozenset[str], prefix: str = "") -> None:
    if not obj.keys() <= allowed:
        unknown = next(key for key in obj if key not in allowed)
        raise FrameError("invalid_frame", f"{prefix}{_short(str(unknown))}: unknown field")


def _seq(obj: dict[Any, Any]) -> int:
    seq = obj.get("seq")
    if type(seq) is not int or not 0 < seq <= MAX_SEQ:
        raise FrameError("invalid_seq", "seq: required, an integer from 1 to 2**53-1")
    return seq


def _timestamp(value: object, field: str, now_ms: int, limits: FrameLimits) -> int:
    if type(value) is not int:
        raise FrameError("invalid_timestamp", f"{field}: must be an integer (ms since the epoch)")
    if not now_ms - limits.past_ms <= value <= now_ms + limits.future_ms:
        raise FrameError("invalid_timestamp", f"{field}: {value} is outside the accepted range")
    return value


def _metric_map(metrics: object, field: str, limits: FrameLimits) -> dict[Any, Any]:
    if type(metrics) is not dict:
        raise FrameError("invalid_frame", f"{field}: required, a map of metric name to value")
    if not metrics:
        raise FrameError("invalid_frame", f"{field}: must not be empty")
    if len(metrics) > limits.max_metrics:
        raise _too_large(f"{field} names", len(metrics), limits.max_metrics)
    return metrics


def _check_names(metrics: dict[Any, Any], field: str) -> None:
    if not metrics.keys() <= _known_names:
        for name in metrics:
            _check_name(name, field)


def _check_name(name: object, field: str) -> None:
    """A string matching NAME_PATTERN. Valid names are remembered (process-wide, bounded) and not checked again."""
    if name in _known_names:
        return
    if type(name) is not str:
        raise FrameError("invalid_frame", f"{field}: metric names must be strings")
    if NAME_PATTERN.fullmatch(name) is None:
        raise FrameError("invalid_metric_name", f"{field}.{_short(name)}: must match [A-Za-z0-9_.-]{{1,64}}")
    if len(_known_names) >= _KNOWN_NAMES_MAX:
        _known_names.clear()
    _known_names.add(name)


def _numbers(metrics: dict[str, Any], point: int | None = None) -> list[Any]:
    """The values of a metrics map, all finite int/float/bool, else ``invalid_value`` naming the first bad one.

    Fast path: ``sum`` raises TypeError on anything else a decoder yields (None, str, bytes, list, map) and
    is non-finite when a value is; only then (or on float overflow) is each value looked at.
    """
    values = list(metrics.values())
    try:
        if isfinite(sum(values)):
            return values
    except (TypeError, OverflowError):
        pass
    for name, value in metrics.items():
        try:
            valid = type(value) in _NUMBER_TYPES and isfinite(value)
        except OverflowError:  # an int beyond float64
            valid = False
        if not valid:
            field = "metrics" if point is None else f"points[{point}].metrics"
            raise FrameError("invalid_value", f"{field}.{name}: must be a finite number")
    return values


def _column_length(column: object, field: str) -> int:
    if type(column) is list:
        return len(column)
    if type(column) is bytes:
        if len(column) % 8:
            raise FrameError("invalid_frame", f"{field}: binary column length must be a multiple of 8")
        return len(column) // 8
    raise FrameError("invalid_frame", f"{field}: must be a list or little-endian 8-byte binary")


def _list_array(column: list[Any], kinds: str) -> npt.NDArray[Any] | None:
    """A 1-D array by numpy's type discovery if its dtype kind is one of ``kinds``: 'i' only for ints (bools
    among ints too), 'f' for numbers with a float, 'b' for bools only, 'U'/'S'/'O' for anything else."""
    try:
        array = np.array(column)
    except (ValueError, TypeError, OverflowError):
        return None
    return array if array.ndim == 1 and array.dtype.kind in kinds else None


def _timestamp_column(column: list[Any] | bytes, now_ms: int, limits: FrameLimits) -> npt.NDArray[np.int64]:
    """Every ts checked at once; a bool among the ints is looked for only when 0 or 1 is present and allowed."""
    if isinstance(column, bytes):
        ts: npt.NDArray[np.int64] | None = np.frombuffer(column, dtype=_WIRE_I8)
    else:
        ts = _list_array(column, "i")
    if ts is None:
        raise FrameError("invalid_timestamp", "ts: must be integers (ms since the epoch)")
    low, high = now_ms - limits.past_ms, now_ms + limits.future_ms
    first, last = int(ts.min()), int(ts.max())
    if first < low or last > high:
        bad = int(np.argmax((ts < low) | (ts > high)))
        raise FrameError("invalid_timestamp", f"ts[{bad}]: {int(ts[bad])} is outside the accepted range")
    if first <= 1 and isinstance(column, list) and any(type(v) is bool for v in column):
        raise FrameError("invalid_timestamp", "ts: must be integers (ms since the epoch), not booleans")
    return ts


def _value_column(column: list[Any] | bytes, field: str) -> npt.NDArray[np.float64]:
    """Float64 values from bytes or a list of numbers (booleans count as 1.0/0.0, as in telemetry)."""
    if isinstance(column, bytes):
        return np.frombuffer(column, dtype=_WIRE_F8)
    array = _list_array(column, "fiub")
    if array is None:
        raise FrameError("invalid_value", f"{field}: must be numbers")
    return array.astype(np.float64, copy=False)


def _check_document(value: Any, field: str, binary: bool, limits: FrameLimits) -> None:
    """``data`` / ``result`` must survive JSON (dashboards and REST may use it), within the size limit.

    orjson refuses non-string keys, bytes, ints beyond 64 bits and nesting over 254, but writes NaN/inf as
    null: a MessagePack document is read back and compared to catch those (JSON input cannot hold them).
    """
    try:
        encoded = orjson.dumps(value)
    except TypeError:
        message = f"{field}: must be JSON-compatible (string keys, no binary, 64-bit integers)"
        raise FrameError("invalid_frame", message) from None
    if len(encoded) > limits.max_event_data_bytes:
        raise _too_large(f"{field} bytes", len(encoded), limits.max_event_data_bytes)
    if binary and orjson.loads(encoded) != value:
        raise FrameError("invalid_value", f"{field}: numbers must be finite")


def _too_large(what: str, size: int, limit: int) -> FrameError:
    return FrameError("too_large", f"{what}: {size} is over the limit of {limit}")


def _short(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
