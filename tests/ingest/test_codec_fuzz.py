"""Fuzzing the device wire codec: any input yields a frame that keeps every invariant, or a FrameError."""

from __future__ import annotations

import re
from typing import Any

import msgpack
import numpy as np
import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ingest.codec import FrameError, decode_frame
from ingest.frames import CommandResultFrame, DeviceFrame, EventFrame, TelemetryFrame
from ingest.limits import MAX_ERROR_CHARS, FrameLimits

NOW = 1_763_800_000_000
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Default limits, and small ones so that every limit is reached often.
LIMITS = [
    FrameLimits(),
    FrameLimits(max_frame_bytes=2048, max_metrics=3, max_points=3, max_samples=8, max_event_data_bytes=40),
]


def check(data: bytes | str, limits: FrameLimits) -> None:
    """Decode; a frame must satisfy every invariant, and the only exception allowed is FrameError."""
    try:
        frame = decode_frame(data, now_ms=NOW, limits=limits)
    except FrameError as exc:
        event(exc.code)
        assert exc.code in {
            "invalid_encoding",
            "invalid_frame",
            "unknown_type",
            "invalid_seq",
            "invalid_timestamp",
            "invalid_metric_name",
            "invalid_value",
            "too_large",
        }
        assert exc.message
        assert exc.seq is None or (type(exc.seq) is int and 0 < exc.seq < 2**53)
        return
    event(type(frame).__name__)
    assert_invariants(frame, data, limits)


def assert_invariants(frame: DeviceFrame, data: bytes | str, limits: FrameLimits) -> None:
    assert frame.raw == (data.encode() if isinstance(data, str) else data)
    assert frame.binary is isinstance(data, bytes)
    low, high = NOW - limits.past_ms, NOW + limits.future_ms
    if isinstance(frame, TelemetryFrame):
        assert type(frame.seq) is int and 0 < frame.seq < 2**53
        assert frame.kind in ("telemetry", "columns")
        samples = frame.samples
        n = len(samples)
        assert 0 < n <= limits.max_samples
        for array, dtype in ((samples.ts, np.int64), (samples.metric, np.int32), (samples.value, np.float64)):
            assert array.dtype == dtype and array.shape == (n,)
        assert np.isfinite(samples.value).all()
        assert low <= samples.ts.min() and samples.ts.max() <= high
        assert samples.metric.min() >= 0 and samples.metric.max() < len(samples.names)
        assert len(set(samples.names)) == len(samples.names) <= limits.max_metrics
        assert all(type(name) is str and NAME.fullmatch(name) for name in samples.names)
    elif isinstance(frame, EventFrame):
        assert type(frame.seq) is int and 0 < frame.seq < 2**53
        assert type(frame.ts) is int and low <= frame.ts <= high
        assert NAME.fullmatch(frame.name)
        assert frame.data is None or len(orjson.dumps(frame.data)) <= limits.max_event_data_bytes
    else:
        assert isinstance(frame, CommandResultFrame)
        assert re.fullmatch(r"cmd_[A-Za-z0-9_-]{1,60}", frame.command_id)
        assert frame.status in ("completed", "failed")
        assert frame.error is None or (type(frame.error) is str and len(frame.error) <= MAX_ERROR_CHARS)
        assert frame.result is None or len(orjson.dumps(frame.result)) <= limits.max_event_data_bytes


def pack(value: Any, binary: bool) -> bytes | str | None:
    """Encode a generated value; None when the encoding cannot express it."""
    try:
        return msgpack.packb(value, use_bin_type=True) if binary else orjson.dumps(value).decode()
    except (TypeError, ValueError, OverflowError):
        return None


# Strategies.

integers = st.integers(-(2**63), 2**64 - 1) | st.integers(NOW - 2 * 366 * 86_400_000, NOW + 600_000)
scalars = st.none() | st.booleans() | integers | st.floats() | st.text(max_size=70) | st.binary(max_size=24)
keys = st.text(max_size=70) | st.sampled_from(["type", "seq", "ts", "metrics", "points", "name", "data", "x"])
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=12,
)
msgpack_keys = keys | st.integers(-5, 5) | st.binary(max_size=4) | st.none() | st.booleans()
msgpack_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(msgpack_keys, children, max_size=5),
    max_leaves=12,
)
# Mostly valid pieces, so that many generated frames are accepted, with invalid ones mixed in.
valid_names = st.from_regex(NAME, fullmatch=True) | st.sampled_from(["temp", "hum", "a.b-c_d"])
names = valid_names | valid_names | st.text(max_size=66)
finite = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**64 - 1) | st.booleans()
numbers = finite | finite | finite | st.floats() | st.sampled_from(["1", None, [1], b"1"])
in_range = st.integers(NOW - 366 * 86_400_000, NOW + 300_000)
timestamps = in_range | in_range | st.integers(NOW - 366 * 86_400_000 - 2, NOW + 300_002) | integers | st.floats()
seqs = st.integers(1, 2**53 - 1) | st.integers(1, 1000) | st.sampled_from([0, -1, 2**53, 2**63, True, 1.5, "1", None])


@st.composite
def columns(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 6) | st.integers(0, 6))
    ts = draw(st.lists(timestamps, min_size=count, max_size=count))
    metrics: dict[str, Any] = {}
    for name in draw(st.lists(names, max_size=4, unique=True)):
        column = draw(st.lists(numbers, min_size=count, max_size=count + draw(st.integers(0, 1))))
        binary = draw(st.booleans()) and all(type(v) in (int, float, bool) for v in column)
        metrics[name] = np.array(column, dtype="<f8").tobytes() if binary else column
    ts_binary = draw(st.booleans()) and all(type(v) is int and -(2**63) <= v < 2**63 for v in ts)
    ts_column = np.array(ts, dtype="<i8").tobytes() if ts_binary else ts
    return {"type": "columns", "seq": draw(seqs), "ts": ts_column, "metrics": metrics}


metric_maps = st.dictionaries(names, numbers, min_size=1, max_size=5) | st.dictionaries(names, numbers, max_size=5)
frames = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("telemetry"), "seq": seqs, "metrics": metric_maps}, optional={"ts": timestamps}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("telemetry"),
            "seq": seqs,
            "points": st.lists(
                st.fixed_dictionaries({"metrics": metric_maps}, optional={"ts": timestamps}), min_size=1, max_size=4
            ),
        }
    ),
    columns(),
    st.fixed_dictionaries(
        {"type": st.just("event"), "seq": seqs, "name": names}, optional={"ts": timestamps, "data": values}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("command_result"),
            "command_id": st.from_regex(r"cmd_[A-Za-z0-9_-]{1,60}", fullmatch=True) | st.text(max_size=70),
            "status": st.sampled_from(["completed", "failed", "done"]),
        },
        optional={"result": values, "error": st.none() | st.text(max_size=1030)},
    ),
)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A frame with one field replaced, removed or added, possibly inside a nested map or list."""
    frame = draw(frames)
    target = frame
    for _ in range(draw(st.integers(0, 2))):
        children = [v for v in (target.values() if isinstance(target, dict) else target) if isinstance(v, dict | list)]
        if not children:
            break
        target = draw(st.sampled_from(children))
    if isinstance(target, dict):
        key = draw(st.sampled_from(sorted(target)) | keys) if target else draw(keys)
        if key in target and draw(st.booleans()):
            del target[key]
        else:
            target[key] = draw(values)
    elif target:
        target[draw(st.integers(0, len(target) - 1))] = draw(values)
    return frame


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(LIMITS))
def test_random_bytes(data: bytes, limits: FrameLimits) -> None:
    check(data, limits)


@FUZZ
@given(st.text(max_size=300), st.sampled_from(LIMITS))
def test_random_text(data: str, limits: FrameLimits) -> None:
    check(data, limits)


@FUZZ
@given(msgpack_values, st.sampled_from(LIMITS))
def test_random_msgpack_structures(value: Any, limits: FrameLimits) -> None:
    data = pack(value, binary=True)
    if data is not None:
        check(data, limits)


@FUZZ
@given(values, st.sampled_from(LIMITS))
def test_random_json_structures(value: Any, limits: FrameLimits) -> None:
    data = pack(value, binary=False)
    if data is not None:
        check(data, limits)


@FUZZ
@given(frames, st.booleans(), st.sampled_from(LIMITS))
def test_frames(frame: Any, binary: bool, limits: FrameLimits) -> None:
    data = pack(frame, binary)
    if data is not None:
        check(data, limits)


@FUZZ
@given(mutated(), st.booleans(), st.sampled_from(LIMITS))
def test_mutated_frames(frame: Any, binary: bool, limits: FrameLimits) -> None:
    data = pack(frame, binary)
    if data is not None:
        check(data, limits)


@FUZZ
@given(frames, st.sampled_from(LIMITS), st.integers(0, 20), st.binary(min_size=1, max_size=8))
def test_truncated_and_extended_msgpack(frame: Any, limits: FrameLimits, cut: int, tail: bytes) -> None:
    data = pack(frame, binary=True)
    if data is not None:
        check(data[: max(0, len(data) - cut)], limits)
        check(data + tail, limits)


# Valid frames: decoding must succeed and give exactly the samples a per-sample reference gives.

good_numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**64 - 1) | st.booleans()
good_maps = st.dictionaries(valid_names, good_numbers, min_size=1, max_size=5)
good_points = st.lists(st.fixed_dictionaries({"metrics": good_maps}, optional={"ts": in_range}), min_size=1, max_size=4)


@st.composite
def good_columns(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 6))
    ts = draw(st.lists(in_range, min_size=count, max_size=count))
    metrics: dict[str, Any] = {}
    for name in draw(st.lists(valid_names, min_size=1, max_size=4, unique=True)):
        column = draw(st.lists(good_numbers, min_size=count, max_size=count))
        metrics[name] = np.array(column, dtype="<f8").tobytes() if draw(st.booleans()) else column
    ts_column = np.array(ts, dtype="<i8").tobytes() if draw(st.booleans()) else ts
    return {"type": "columns", "seq": draw(st.integers(1, 2**53 - 1)), "ts": ts_column, "metrics": metrics}


good_frames = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("telemetry"), "seq": st.integers(1, 2**53 - 1), "metrics": good_maps},
        optional={"ts": in_range},
    ),
    st.fixed_dictionaries({"type": st.just("telemetry"), "seq": st.integers(1, 2**53 - 1), "points": good_points}),
    good_columns(),
)


def reference(frame: dict[str, Any]) -> tuple[list[int], list[int], list[float], list[str]]:
    """The expected samples, one Python loop per sample."""
    if frame["type"] == "columns":
        ts = frame["ts"] if isinstance(frame["ts"], list) else np.frombuffer(frame["ts"], "<i8").tolist()
        columns = {
            name: column if isinstance(column, list) else np.frombuffer(column, "<f8").tolist()
            for name, column in frame["metrics"].items()
        }
        rows = [(t, name, v) for name, column in columns.items() for t, v in zip(ts, column, strict=True)]
    else:
        points = frame.get("points") or [{"ts": frame.get("ts", NOW), "metrics": frame["metrics"]}]
        rows = [(point.get("ts", NOW), name, v) for point in points for name, v in point["metrics"].items()]
    names = list(dict.fromkeys(name for _, name, _ in rows))
    return [t for t, _, _ in rows], [names.index(n) for _, n, _ in rows], [float(v) for _, _, v in rows], names


@FUZZ
@given(good_frames, st.booleans())
def test_valid_frames_decode_exactly(frame: dict[str, Any], binary: bool) -> None:
    data = pack(frame, binary)
    if data is None:  # bytes columns in JSON
        data = pack(frame, binary=True)
    assert data is not None
    decoded = decode_frame(data, now_ms=NOW, limits=LIMITS[0])
    assert isinstance(decoded, TelemetryFrame)
    assert_invariants(decoded, data, LIMITS[0])
    ts, metric, value, names = reference(frame)
    assert decoded.samples.ts.tolist() == ts
    assert decoded.samples.metric.tolist() == metric
    assert decoded.samples.value.tolist() == value
    assert list(decoded.samples.names) == names
