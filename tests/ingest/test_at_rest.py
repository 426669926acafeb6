"""Frames at rest: binary columns frames are stored packed and read back exactly as the device sent them;
every other frame is stored as received."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ingest import at_rest, codec
from ingest.frames import TelemetryFrame
from ingest.limits import FrameLimits

NOW = 1_763_800_000_000
# Stored frames are read back with any ts; these tests do the same when decoding.
ANY_TIME = FrameLimits(past_ms=2**62, future_ms=2**62)


def columns(ts: np.ndarray[Any, Any], metrics: dict[str, np.ndarray[Any, Any]], seq: int = 7) -> bytes:
    frame = {
        "type": "columns",
        "seq": seq,
        "ts": ts.astype("<i8").tobytes(),
        "metrics": {name: values.astype("<f8").tobytes() for name, values in metrics.items()},
    }
    return msgpack.packb(frame, use_bin_type=True)


def decoded(raw: bytes | str) -> TelemetryFrame:
    frame = codec.decode_frame(raw, now_ms=NOW, limits=ANY_TIME)
    assert isinstance(frame, TelemetryFrame)
    return frame


def wave_frame(samples: int = 1000) -> bytes:
    ts = np.arange(NOW, NOW + samples, dtype="<i8")
    phase = np.linspace(0.0, 2 * np.pi, samples)
    return columns(ts, {"temp": np.sin(phase) * 5 + 21, "hum": np.cos(phase) * 10 + 45, "volt": phase * 0 + 3.3})


def test_a_binary_columns_frame_is_stored_packed_smaller_and_restored_field_for_field() -> None:
    raw = wave_frame()
    encoding, stored = at_rest.stored(decoded(raw))
    assert encoding == at_rest.PACKED
    assert len(stored) < 0.7 * len(raw)
    binary, restored = at_rest.as_sent(encoding, stored)
    assert binary is True
    assert msgpack.unpackb(restored, raw=False) == msgpack.unpackb(raw, raw=False)  # the columns byte for byte
    again = decoded(restored)
    original = decoded(raw)
    assert again.seq == original.seq == 7 and again.samples.names == original.samples.names
    assert np.array_equal(again.samples.ts, original.samples.ts)
    assert np.array_equal(again.samples.value, original.samples.value)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=1, max_value=5),
    st.data(),
)
def test_any_finite_values_and_any_timestamps_come_back_bit_for_bit(samples: int, metrics: int, data: Any) -> None:
    finite = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True)
    ts = data.draw(hnp.arrays("<i8", samples, elements=st.integers(min_value=0, max_value=2**62)))
    values = data.draw(hnp.arrays("<f8", (metrics, samples), elements=finite))
    names = [f"m{i}" for i in range(metrics)]
    seq = data.draw(st.integers(min_value=1, max_value=2**53))
    packed = at_rest.pack(seq, ts, values.reshape(-1), tuple(names))
    got_seq, got_names, got_ts, got_values = at_rest.unpacked(packed)
    assert (got_seq, got_names) == (seq, names)
    assert got_ts.tobytes() == ts.tobytes()
    assert got_values.tobytes() == values.tobytes()  # -0.0, subnormals and extremes included


def test_frames_packing_does_not_shrink_are_stored_as_received() -> None:
    noise = np.random.default_rng(3).integers(0, 2**64, size=(2, 1000), dtype=np.uint64).view("<f8")
    noise[~np.isfinite(noise)] = 1.0
    raw = columns(np.random.default_rng(4).integers(0, 2**62, 1000), {"a": noise[0], "b": noise[1]})
    assert at_rest.stored(decoded(raw)) == (at_rest.MSGPACK, raw)


def test_other_frames_are_stored_as_received() -> None:
    ts = list(range(NOW, NOW + 500))
    as_lists = {"type": "columns", "seq": 1, "ts": ts, "metrics": {"a": [1.5] * 500, "b": [2] * 500}}
    list_columns = msgpack.packb(as_lists)
    assert len(list_columns) > at_rest.PACK_OVER_BYTES
    assert at_rest.stored(decoded(list_columns)) == (at_rest.MSGPACK, list_columns)  # lists stay lists
    json_text = orjson.dumps(as_lists)
    assert at_rest.stored(decoded(json_text.decode())) == (at_rest.JSON, json_text)
    small = columns(np.arange(NOW, NOW + 10), {"a": np.arange(10.0)})
    assert len(small) <= at_rest.PACK_OVER_BYTES
    assert at_rest.stored(decoded(small)) == (at_rest.MSGPACK, small)
    points = msgpack.packb(
        {"type": "telemetry", "seq": 2, "points": [{"ts": NOW + i, "metrics": {"a": i}} for i in range(200)]}
    )
    assert at_rest.stored(decoded(points)) == (at_rest.MSGPACK, points)


def test_frames_stored_as_received_read_back_unchanged() -> None:
    assert at_rest.as_sent(at_rest.MSGPACK, b"\x81") == (True, b"\x81")
    assert at_rest.as_sent(at_rest.JSON, b"{}") == (False, b"{}")


@pytest.mark.parametrize(
    "packed",
    [
        b"",
        b"\xc1",
        msgpack.packb({"type": "columns"}),
        msgpack.packb([2, 1, ["a"], b"", b""]),  # a format this version does not know
        msgpack.packb([1, 1, ["a", "b"], at_rest._compress(np.arange(3)), at_rest._compress(np.arange(3.0))]),
        msgpack.packb([1, 1, ["a"], b"\x05\x00\x00\x00abc", b""]),  # a block that is not LZ4
    ],
)
def test_what_is_not_a_packed_frame_is_refused(packed: bytes) -> None:
    with pytest.raises((ValueError, msgpack.UnpackException)):
        at_rest.unpacked(packed)
