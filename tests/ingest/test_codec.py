"""The device wire codec (API.md §4): every frame type in both encodings, each refusal's code, limits."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import msgpack
import numpy as np
import orjson
import pytest

from ingest.codec import FrameError, ack, decode_frame, encode_message, error, hello
from ingest.frames import CommandResultFrame, EventFrame, Samples, TelemetryFrame
from ingest.limits import FrameLimits

NOW = 1_763_800_000_000
LIMITS = FrameLimits()


@pytest.fixture(params=[True, False], ids=["msgpack", "json"])
def binary(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def encode(frame: Any, binary: bool) -> bytes | str:
    return msgpack.packb(frame, use_bin_type=True) if binary else orjson.dumps(frame).decode()


def decode(frame: Any, binary: bool = True, *, now_ms: int = NOW, limits: FrameLimits = LIMITS) -> Any:
    return decode_frame(encode(frame, binary), now_ms=now_ms, limits=limits)


def refused(
    frame: Any, binary: bool = True, *, now_ms: int = NOW, limits: FrameLimits = LIMITS, raw: bool = False
) -> FrameError:
    data = frame if raw else encode(frame, binary)
    with pytest.raises(FrameError) as caught:
        decode_frame(data, now_ms=now_ms, limits=limits)
    return caught.value


def assert_samples(
    samples: Samples, ts: Sequence[int], metric: Sequence[int], value: Sequence[float], names: Sequence[str]
) -> None:
    assert samples.ts.dtype == np.int64 and samples.metric.dtype == np.int32 and samples.value.dtype == np.float64
    np.testing.assert_array_equal(samples.ts, np.array(ts, dtype=np.int64))
    np.testing.assert_array_equal(samples.metric, np.array(metric, dtype=np.int32))
    np.testing.assert_array_equal(samples.value, np.array(value, dtype=np.float64))
    assert samples.names == tuple(names)
    assert len(samples) == len(value)


def assert_same_samples(a: Samples, b: Samples) -> None:
    assert_samples(a, b.ts.tolist(), b.metric.tolist(), b.value.tolist(), b.names)


# Telemetry.


def test_telemetry_metrics(binary: bool) -> None:
    message = {"type": "telemetry", "seq": 1, "ts": NOW - 5, "metrics": {"temp": 21.5, "hum": 40, "door": True}}
    frame = decode(message, binary)
    assert isinstance(frame, TelemetryFrame)
    assert (frame.seq, frame.kind, frame.binary) == (1, "telemetry", binary)
    assert_samples(frame.samples, [NOW - 5] * 3, [0, 1, 2], [21.5, 40.0, 1.0], ["temp", "hum", "door"])
    assert frame.raw == (msgpack.packb(message) if binary else orjson.dumps(message))


def test_missing_ts_is_server_time_and_false_is_zero(binary: bool) -> None:
    frame = decode({"type": "telemetry", "seq": 7, "metrics": {"on": False}}, binary)
    assert_samples(frame.samples, [NOW], [0], [0.0], ["on"])


def test_integers_beyond_float64_precision_are_accepted_as_floats(binary: bool) -> None:
    frame = decode({"type": "telemetry", "seq": 1, "metrics": {"big": 2**64 - 1, "neg": -(2**63)}}, binary)
    assert frame.samples.value.tolist() == [float(2**64 - 1), float(-(2**63))]


def test_points_keep_order_and_first_seen_names(binary: bool) -> None:
    message = {
        "type": "telemetry",
        "seq": 2,
        "points": [
            {"ts": NOW - 2000, "metrics": {"a": 1.0, "b": 2}},
            {"metrics": {"b": 3.5}},
            {"ts": NOW - 1000, "metrics": {"c": True, "a": -1.0}},
        ],
    }
    frame = decode(message, binary)
    assert frame.kind == "telemetry"
    assert_samples(
        frame.samples,
        [NOW - 2000, NOW - 2000, NOW, NOW - 1000, NOW - 1000],
        [0, 1, 1, 2, 0],
        [1.0, 2.0, 3.5, 1.0, -1.0],
        ["a", "b", "c"],
    )


def test_accepted_timestamps_include_both_bounds(binary: bool) -> None:
    for ts in (NOW - LIMITS.past_ms, NOW + LIMITS.future_ms):
        assert decode({"type": "telemetry", "seq": 1, "ts": ts, "metrics": {"x": 1}}, binary).samples.ts[0] == ts


# Columns.

TS = [NOW - 3000, NOW - 2000, NOW - 1000]
COLUMNS = {"temp": [20.5, 21.0, 21.5], "hum": [40, 41, 42], "door": [True, False, True]}
EXPECTED = (TS * 3, [0, 0, 0, 1, 1, 1, 2, 2, 2], [20.5, 21.0, 21.5, 40, 41, 42, 1, 0, 1], ["temp", "hum", "door"])


def test_columns_from_lists_are_metric_major(binary: bool) -> None:
    frame = decode({"type": "columns", "seq": 3, "ts": TS, "metrics": COLUMNS}, binary)
    assert (frame.seq, frame.kind) == (3, "columns")
    assert_samples(frame.samples, *EXPECTED)
    # Aggregation folds a columns frame as its M x T table over one timestamp column.
    assert frame.samples.timestamps == len(TS)
    assert decode({"type": "telemetry", "seq": 4, "ts": NOW, "metrics": {"x": 1}}, binary).samples.timestamps is None


def test_columns_from_binary_equal_columns_from_lists(binary: bool) -> None:
    from_lists = decode({"type": "columns", "seq": 3, "ts": TS, "metrics": COLUMNS}, binary).samples
    bins = {name: np.array(values, dtype="<f8").tobytes() for name, values in COLUMNS.items()}
    from_bins = decode({"type": "columns", "seq": 3, "ts": np.array(TS, dtype="<i8").tobytes(), "metrics": bins})
    mixed = decode({"type": "columns", "seq": 3, "ts": TS, "metrics": {**bins, "hum": COLUMNS["hum"]}})
    assert_same_samples(from_bins.samples, from_lists)
    assert_same_samples(mixed.samples, from_lists)
    assert_samples(from_bins.samples, *EXPECTED)


def test_columns_of_one_metric_and_one_timestamp() -> None:
    ts = np.array([NOW], dtype="<i8").tobytes()
    frame = decode({"type": "columns", "seq": 1, "ts": ts, "metrics": {"x": np.array([2.5]).tobytes()}})
    assert_samples(frame.samples, [NOW], [0], [2.5], ["x"])


# Events and command results.


def test_event(binary: bool) -> None:
    message = {"type": "event", "seq": 4, "ts": NOW - 1, "name": "door_opened", "data": {"by": "alice", "n": [1, 2.5]}}
    frame = decode(message, binary)
    assert frame == EventFrame(4, NOW - 1, "door_opened", {"by": "alice", "n": [1, 2.5]}, frame.raw, binary)


def test_event_defaults(binary: bool) -> None:
    frame = decode({"type": "event", "seq": 5, "name": "boot"}, binary)
    assert (frame.ts, frame.data) == (NOW, None)


def test_command_results(binary: bool) -> None:
    done = decode({"type": "command_result", "command_id": "cmd_a1-B_2", "status": "completed", "result": [1]}, binary)
    assert done == CommandResultFrame("cmd_a1-B_2", "completed", [1], None, done.raw, binary)
    failed = decode({"type": "command_result", "command_id": "cmd_x", "status": "failed", "error": "no disk"}, binary)
    assert (failed.status, failed.result, failed.error) == ("failed", None, "no disk")


# Refusals, in both encodings: (frame, code).

BOTH_ENCODINGS: list[tuple[Any, str]] = [
    ([1, 2], "invalid_frame"),
    ("telemetry", "invalid_frame"),
    ({"seq": 1, "metrics": {"x": 1}}, "invalid_frame"),
    ({"type": 1, "seq": 1}, "invalid_frame"),
    ({"type": "hello", "seq": 1}, "unknown_type"),
    ({"type": "Telemetry", "seq": 1}, "unknown_type"),
    ({"type": "telemetry", "seq": 1, "metrics": {"x": 1}, "extra": 1}, "invalid_frame"),
    ({"type": "telemetry", "seq": 1, "metrics": {}}, "invalid_frame"),
    ({"type": "telemetry", "seq": 1, "metrics": [1]}, "invalid_frame"),
    ({"type": "telemetry", "seq": 1, "metrics": None}, "invalid_frame"),
    ({"type": "telemetry", "seq": 1, "ts": "x", "metrics": None}, "invalid_timestamp"),
    ({"type": "telemetry", "seq": 1, "metrics": {str(i): 1 for i in range(257)}}, "too_large"),
    ({"type": "telemetry", "seq": 1}, "invalid_frame"),
    ({"type": "telemetry", "seq": 1, "metrics": {"x": 1}, "points": [{"metrics": {"x": 1}}]}, "invalid_frame"),
    ({"type": "telemetry", "seq": 1, "points": []}, "invalid_frame"),
    ({"type": "telemetry", "seq": 1, "points": [1]}, "invalid_frame"),
    ({"type": "telemetry", "seq": 1, "points": [{"metrics": {"x": 1}, "seq": 2}]}, "invalid_frame"),
    ({"type": "telemetry", "seq": 1, "ts": NOW, "points": [{"metrics": {"x": 1}}]}, "invalid_frame"),
    ({"type": "columns", "seq": 1, "metrics": {"x": [1]}}, "invalid_frame"),
    ({"type": "columns", "seq": 1, "ts": [], "metrics": {"x": []}}, "invalid_frame"),
    ({"type": "columns", "seq": 1, "ts": [NOW], "metrics": {"x": [1, 2]}}, "invalid_frame"),
    ({"type": "columns", "seq": 1, "ts": [NOW], "metrics": {"x": "1"}}, "invalid_frame"),
    ({"type": "columns", "seq": 1, "ts": NOW, "metrics": {"x": [1]}}, "invalid_frame"),
    ({"type": "event", "seq": 1, "name": "bad name"}, "invalid_frame"),
    ({"type": "event", "seq": 1}, "invalid_frame"),
    ({"type": "command_result", "command_id": "abc", "status": "completed"}, "invalid_frame"),
    ({"type": "command_result", "command_id": "cmd_" + "x" * 61, "status": "completed"}, "invalid_frame"),
    ({"type": "command_result", "command_id": "cmd_1", "status": "done"}, "invalid_frame"),
    ({"type": "command_result", "command_id": "cmd_1", "status": "failed", "error": 1}, "invalid_frame"),
    ({"type": "telemetry", "metrics": {"x": 1}}, "invalid_seq"),
    ({"type": "telemetry", "seq": 0, "metrics": {"x": 1}}, "invalid_seq"),
    ({"type": "telemetry", "seq": -1, "metrics": {"x": 1}}, "invalid_seq"),
    ({"type": "telemetry", "seq": True, "metrics": {"x": 1}}, "invalid_seq"),
    ({"type": "telemetry", "seq": 1.0, "metrics": {"x": 1}}, "invalid_seq"),
    ({"type": "telemetry", "seq": "1", "metrics": {"x": 1}}, "invalid_seq"),
    ({"type": "event", "seq": 2**63, "name": "x"}, "invalid_seq"),
    ({"type": "event", "seq": 2**53, "name": "x"}, "invalid_seq"),
    ({"type": "telemetry", "seq": 1, "ts": float(NOW), "metrics": {"x": 1}}, "invalid_timestamp"),
    ({"type": "telemetry", "seq": 1, "ts": True, "metrics": {"x": 1}}, "invalid_timestamp"),
    ({"type": "telemetry", "seq": 1, "ts": str(NOW), "metrics": {"x": 1}}, "invalid_timestamp"),
    ({"type": "telemetry", "seq": 1, "ts": None, "metrics": {"x": 1}}, "invalid_timestamp"),
    ({"type": "telemetry", "seq": 1, "ts": NOW - LIMITS.past_ms - 1, "metrics": {"x": 1}}, "invalid_timestamp"),
    ({"type": "telemetry", "seq": 1, "ts": NOW + LIMITS.future_ms + 1, "metrics": {"x": 1}}, "invalid_timestamp"),
    ({"type": "telemetry", "seq": 1, "points": [{"ts": 0, "metrics": {"x": 1}}]}, "invalid_timestamp"),
    ({"type": "columns", "seq": 1, "ts": [NOW, float(NOW)], "metrics": {"x": [1, 2]}}, "invalid_timestamp"),
    ({"type": "columns", "seq": 1, "ts": [NOW, "1"], "metrics": {"x": [1, 2]}}, "invalid_timestamp"),
    ({"type": "columns", "seq": 1, "ts": [NOW, 2**64 - 1], "metrics": {"x": [1, 2]}}, "invalid_timestamp"),
    ({"type": "columns", "seq": 1, "ts": [NOW, 5], "metrics": {"x": [1, 2]}}, "invalid_timestamp"),
    ({"type": "columns", "seq": 1, "ts": [[NOW]], "metrics": {"x": [1]}}, "invalid_timestamp"),
    ({"type": "event", "seq": 1, "ts": 1, "name": "x"}, "invalid_timestamp"),
    ({"type": "telemetry", "seq": 1, "metrics": {"bad name": 1}}, "invalid_metric_name"),
    ({"type": "telemetry", "seq": 1, "metrics": {"": 1}}, "invalid_metric_name"),
    ({"type": "telemetry", "seq": 1, "metrics": {"x" * 65: 1}}, "invalid_metric_name"),
    ({"type": "telemetry", "seq": 1, "metrics": {"température": 1}}, "invalid_metric_name"),
    ({"type": "telemetry", "seq": 1, "metrics": {"x\n": 1}}, "invalid_metric_name"),
    (
        {"type": "telemetry", "seq": 1, "points": [{"metrics": {"x": 1}}, {"metrics": {"a/b": 1}}]},
        "invalid_metric_name",
    ),
    ({"type": "columns", "seq": 1, "ts": [NOW], "metrics": {"a b": [1]}}, "invalid_metric_name"),
    ({"type": "telemetry", "seq": 1, "metrics": {"x": "21.5"}}, "invalid_value"),
    ({"type": "telemetry", "seq": 1, "metrics": {"x": None}}, "invalid_value"),
    ({"type": "telemetry", "seq": 1, "metrics": {"x": [1]}}, "invalid_value"),
    ({"type": "telemetry", "seq": 1, "metrics": {"x": {"y": 1}}}, "invalid_value"),
    ({"type": "telemetry", "seq": 1, "points": [{"metrics": {"x": 1}}, {"metrics": {"x": "1"}}]}, "invalid_value"),
    ({"type": "columns", "seq": 1, "ts": [NOW, NOW], "metrics": {"x": [1, "2"]}}, "invalid_value"),
    ({"type": "columns", "seq": 1, "ts": [NOW, NOW], "metrics": {"x": [1, None]}}, "invalid_value"),
    ({"type": "columns", "seq": 1, "ts": [NOW, NOW], "metrics": {"x": [[1], [2]]}}, "invalid_value"),
    ({"type": "columns", "seq": 1, "ts": [NOW, NOW], "metrics": {"x": [1, [2]]}}, "invalid_value"),
    ({"type": "columns", "seq": 1, "ts": [NOW, NOW], "metrics": {"x": [{}, {}]}}, "invalid_value"),
    ({"type": "command_result", "command_id": "cmd_1", "status": "failed", "error": "e" * 1025}, "too_large"),
]


@pytest.mark.parametrize(("frame", "code"), BOTH_ENCODINGS)
def test_refused(frame: Any, code: str, binary: bool) -> None:
    exc = refused(frame, binary)
    assert exc.code == code, exc.message
    seq = frame.get("seq") if isinstance(frame, dict) else None
    expected = seq if type(seq) is int and 0 < seq < 2**53 else None
    assert exc.seq == expected
    assert exc.message and str(exc) == f"{code}: {exc.message}"


def test_messages_name_the_field() -> None:
    assert refused({"type": "telemetry", "seq": 1, "metrics": {"temp": "hot"}}).message == (
        "metrics.temp: must be a finite number"
    )
    points = {"type": "telemetry", "seq": 1, "points": [{"metrics": {"x": 1}}, {"ts": 5, "metrics": {"x": 1}}]}
    assert refused(points).message.startswith("points[1].ts:")
    columns = {"type": "columns", "seq": 9, "ts": [NOW, NOW], "metrics": {"a": [1, 2], "b": [3.0, math.nan]}}
    exc = refused(columns)
    assert (exc.code, exc.seq, exc.message) == ("invalid_value", 9, "metrics.b[1]: must be a finite number")
    exc = refused({"type": "columns", "seq": 9, "ts": [NOW, NOW - LIMITS.past_ms - 1], "metrics": {"a": [1, 2]}})
    assert exc.message.startswith("ts[1]:")


# Refusals that only MessagePack can express.

MSGPACK_ONLY: list[tuple[bytes, str]] = [
    (b"", "invalid_encoding"),
    (b"\xc1", "invalid_encoding"),
    (b"\x92\x01", "invalid_encoding"),
    (b"\x01\x02", "invalid_encoding"),
    (b"\xa2\xff\xfe", "invalid_encoding"),
    (msgpack.packb(msgpack.Timestamp(1, 2)), "invalid_encoding"),
    (msgpack.packb({"type": "event", "seq": 1, "name": "x", "data": msgpack.ExtType(5, b"x")}), "invalid_encoding"),
    (b"\x81\xa4type\xc7\x00\x05", "invalid_encoding"),
    (b"\xdd\x7f\xff\xff\xff", "invalid_encoding"),
    (b"\x91" * 5000 + b"\x01", "invalid_encoding"),
    (msgpack.packb({"type": "telemetry", "seq": 1, "metrics": {1: 2.0}}), "invalid_frame"),
    (msgpack.packb({"type": "telemetry", "seq": 1, "metrics": {b"x": 2.0}}), "invalid_frame"),
    (msgpack.packb({"type": "telemetry", "seq": 1, 5: 1}), "invalid_frame"),
    (b"\x81\x91\x01\x02", "invalid_frame"),
    (msgpack.packb({"type": "columns", "seq": 1, "ts": b"1234567", "metrics": {"x": [1]}}), "invalid_frame"),
    (msgpack.packb({"type": "columns", "seq": 1, "ts": b"", "metrics": {"x": b""}}), "invalid_frame"),
    (msgpack.packb({"type": "columns", "seq": 1, "ts": [NOW], "metrics": {"x": b"\0" * 16}}), "invalid_frame"),
    (msgpack.packb({"type": "event", "seq": 1, "name": "x", "data": b"bin"}), "invalid_frame"),
    (msgpack.packb({"type": "event", "seq": 1, "name": "x", "data": {1: "int key"}}), "invalid_frame"),
    (msgpack.packb({"type": "event", "seq": 1, "name": "x", "data": [{"nested": math.inf}]}), "invalid_value"),
    (msgpack.packb({"type": "telemetry", "seq": 1, "metrics": {"x": math.nan}}), "invalid_value"),
    (msgpack.packb({"type": "telemetry", "seq": 1, "metrics": {"x": math.inf, "y": -math.inf}}), "invalid_value"),
    (msgpack.packb({"type": "telemetry", "seq": 1, "metrics": {"x": b"1"}}), "invalid_value"),
    (msgpack.packb({"type": "columns", "seq": 1, "ts": [NOW], "metrics": {"x": [b"1"]}}), "invalid_value"),
    (msgpack.packb({"type": "telemetry", "seq": 2**64 - 1, "metrics": {"x": 1}}), "invalid_seq"),
    (msgpack.packb({"type": "telemetry", "seq": 1, "ts": 2**64 - 1, "metrics": {"x": 1}}), "invalid_timestamp"),
]


@pytest.mark.parametrize(("data", "code"), MSGPACK_ONLY)
def test_refused_msgpack(data: bytes, code: str) -> None:
    assert refused(data, raw=True).code == code


def test_non_finite_binary_columns_are_refused() -> None:
    ts = np.array([NOW, NOW], dtype="<i8").tobytes()
    for bad in (math.nan, math.inf, -math.inf):
        frame = {"type": "columns", "seq": 4, "ts": ts, "metrics": {"x": np.array([1.0, bad]).tobytes()}}
        exc = refused(frame)
        assert (exc.code, exc.seq, exc.message) == ("invalid_value", 4, "metrics.x[1]: must be a finite number")


def test_out_of_range_binary_timestamps_are_refused() -> None:
    ts = np.array([NOW, NOW + LIMITS.future_ms + 1], dtype="<i8").tobytes()
    exc = refused({"type": "columns", "seq": 4, "ts": ts, "metrics": {"x": np.zeros(2).tobytes()}})
    assert (exc.code, exc.seq) == ("invalid_timestamp", 4)
    assert exc.message.startswith("ts[1]:")


def test_bool_timestamps_in_a_list_are_refused_even_where_0_and_1_are_in_range(binary: bool) -> None:
    limits = FrameLimits(past_ms=100)
    frame = {"type": "columns", "seq": 1, "ts": [5, True], "metrics": {"x": [1, 2]}}
    assert refused(frame, binary, now_ms=50, limits=limits).code == "invalid_timestamp"
    accepted = decode({**frame, "ts": [5, 1]}, binary, now_ms=50, limits=limits)
    assert accepted.samples.ts.tolist() == [5, 1]


# Refusals that only text can express.

TEXT_ONLY = ["", "{", "NaN", '{"type": "telemetry", "seq": 1, "metrics": {"x": NaN}}', "[1] x", "1e400", "\ud800"]


@pytest.mark.parametrize("text", TEXT_ONLY)
def test_refused_text(text: str) -> None:
    exc = refused(text, raw=True)
    assert (exc.code, exc.seq) == ("invalid_encoding", None)


def test_json_big_number_metric_is_refused() -> None:
    text = '{"type": "telemetry", "seq": 3, "metrics": {"x": 1e400}}'
    assert (refused(text, raw=True).code, refused(text, raw=True).seq) == ("invalid_encoding", None)


# Limits.

SMALL = FrameLimits(max_frame_bytes=4096, max_metrics=2, max_points=2, max_samples=4, max_event_data_bytes=32)


def test_limits_are_inclusive(binary: bool) -> None:
    decode({"type": "telemetry", "seq": 1, "metrics": {"a": 1, "b": 2}}, binary, limits=SMALL)
    decode({"type": "columns", "seq": 1, "ts": [NOW, NOW], "metrics": {"a": [1, 2], "b": [3, 4]}}, binary, limits=SMALL)
    points = [{"metrics": {"a": 1, "b": 2}}, {"metrics": {"b": 3, "a": 4}}]
    decode({"type": "telemetry", "seq": 1, "points": points}, binary, limits=SMALL)
    decode({"type": "event", "seq": 1, "name": "e", "data": "x" * 30}, binary, limits=SMALL)


LIMIT_CASES: list[Any] = [
    {"type": "telemetry", "seq": 1, "metrics": {"a": 1, "b": 2, "c": 3}},
    {"type": "telemetry", "seq": 1, "points": [{"metrics": {"a": 1}}] * 3},
    {"type": "telemetry", "seq": 1, "points": [{"metrics": {"a": 1, "b": 2}}, {"metrics": {"c": 1}}]},
    {"type": "telemetry", "seq": 1, "points": [{"metrics": {"a": 1, "b": 2}}, {"metrics": {"a": 1, "b": 2, "c": 3}}]},
    {"type": "columns", "seq": 1, "ts": [NOW] * 3, "metrics": {"a": [1] * 3, "b": [2] * 3}},
    {"type": "columns", "seq": 1, "ts": [NOW] * 5, "metrics": {"a": [1] * 5}},
    {"type": "event", "seq": 1, "name": "e", "data": "x" * 31},
    {"type": "command_result", "command_id": "cmd_1", "status": "completed", "result": list(range(20))},
]


@pytest.mark.parametrize("frame", LIMIT_CASES)
def test_over_a_limit_is_too_large(frame: Any, binary: bool) -> None:
    exc = refused(frame, binary, limits=SMALL)
    assert (exc.code, exc.seq) == ("too_large", frame.get("seq"))


def test_over_a_decoding_cap_is_too_large_without_seq() -> None:
    frame = {"type": "event", "seq": 1, "name": "e", "data": "x" * 2000}  # a string over the cap of 1024
    assert (refused(frame, limits=SMALL).code, refused(frame, limits=SMALL).seq) == ("too_large", None)
    assert (refused(frame, False, limits=SMALL).code, refused(frame, False, limits=SMALL).seq) == ("too_large", 1)


def test_long_msgpack_string_is_too_large_and_a_lying_header_is_invalid() -> None:
    limits = FrameLimits(max_event_data_bytes=100)
    well_formed = msgpack.packb({"type": "event", "seq": 1, "name": "e", "data": "x" * 2000})
    assert refused(well_formed, limits=limits, raw=True).code == "too_large"
    lying = b"\x83\xa4type\xa5event\xa3seq\x01\xa4data\xdd\x00\x0f\x00\x00\x01"
    assert refused(lying, limits=limits, raw=True).code == "invalid_encoding"


def test_frame_size_is_checked_first(binary: bool) -> None:
    limits = FrameLimits(max_frame_bytes=64)
    exc = refused({"type": "event", "seq": 1, "name": "e", "data": "x" * 64}, binary, limits=limits)
    assert (exc.code, exc.seq) == ("too_large", None)
    assert refused(b"\xc1" * 65, limits=limits, raw=True).code == "too_large"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_metrics"):
        FrameLimits(max_metrics=0)
    with pytest.raises(ValueError, match="past_ms"):
        FrameLimits(past_ms=-1)
    assert FrameLimits(future_ms=0).future_ms == 0


def test_invalid_names_are_never_remembered() -> None:
    for _ in range(2):
        assert refused({"type": "telemetry", "seq": 1, "metrics": {"ok": 1, "not ok": 2}}).code == "invalid_metric_name"


# Server -> device.


@pytest.mark.parametrize(
    "message",
    [
        hello("dev_1", 16, NOW),
        ack(17),
        error(18, "invalid_frame", "metrics: must not be empty"),
        error(None, "invalid_encoding", "not valid JSON"),
    ],
)
def test_server_messages_round_trip(message: dict[str, Any], binary: bool) -> None:
    encoded = encode_message(message, binary=binary)
    assert isinstance(encoded, bytes if binary else str)
    assert (msgpack.unpackb(encoded) if binary else orjson.loads(encoded)) == message


def test_server_message_shapes() -> None:
    assert hello("dev_1", 16, NOW) == {"type": "hello", "device_id": "dev_1", "last_seq": 16, "server_time": NOW}
    assert ack(17) == {"type": "ack", "seq": 17}
    assert error(18, "c", "m") == {"type": "error", "seq": 18, "code": "c", "message": "m"}
    assert "seq" not in error(None, "c", "m")
    assert encode_message(MappingProxyType({"type": "ack", "seq": 1}), binary=False) == '{"type":"ack","seq":1}'


def test_frame_errors_copy_and_print() -> None:
    exc = copy.deepcopy(FrameError("invalid_seq", "seq: required", 3))  # rebuilt from args, like pickle
    assert (exc.code, exc.message, exc.seq) == ("invalid_seq", "seq: required", 3)
    assert str(exc) == "invalid_seq: seq: required"
