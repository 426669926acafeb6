"""Stream entries -> channel and data, from frames encoded as a device encodes them (API.md §4, §5)."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import orjson
import pytest

from hub.api.history_routes import _event as rest_event
from hub.fanout.messages import (
    ChannelData,
    FrameRef,
    aggregate_message,
    alert_message,
    arrival_ms,
    command_message,
    event_message,
    org_telemetry_messages,
    referenced_telemetry_messages,
    telemetry_messages,
)
from ingest import at_rest, codec
from ingest.frames import TelemetryFrame
from ingest.history import Position
from ingest.limits import FrameLimits

NOW = 1_763_800_000_000
ENTRY = f"{NOW + 7}-0".encode()  # as redis-py returns ids with decode_responses=False
ARRIVAL = NOW + 7


@pytest.fixture(params=[True, False], ids=["msgpack", "json"])
def binary(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def wire(frame: Any, binary: bool) -> bytes:
    return msgpack.packb(frame, use_bin_type=True) if binary else orjson.dumps(frame)


def frames_entry(frame: Any, binary: bool, kind: str | None = None, seq: int | None = None) -> dict[bytes, bytes]:
    """An entry of th:{org}:frames:<device> as the store script writes it (k, s, b, f)."""
    kind = kind or frame["type"]
    seq = frame.get("seq", 0) if seq is None else seq
    return {b"k": kind.encode(), b"s": str(seq).encode(), b"b": b"1" if binary else b"0", b"f": wire(frame, binary)}


def org_entry(frame: Any, binary: bool, device: str = "b7", seq: int | None = None) -> dict[bytes, bytes]:
    """An entry of th:{org}:telemetry (d, s, b, f)."""
    seq = frame.get("seq", 0) if seq is None else seq
    return {b"d": device.encode(), b"s": str(seq).encode(), b"b": b"1" if binary else b"0", b"f": wire(frame, binary)}


def test_arrival_ms() -> None:
    assert arrival_ms(b"1763800000123-4") == 1763800000123
    assert arrival_ms("1763800000123-0") == 1763800000123


def test_one_point_frame(binary: bool) -> None:
    frame = {"type": "telemetry", "seq": 1, "ts": NOW, "metrics": {"temp": 21.5, "count": 3, "open": True}}
    messages = telemetry_messages("b7", ENTRY, frames_entry(frame, binary))
    assert messages == [
        ChannelData(
            "devices/b7/telemetry",
            {"device_id": "b7", "ts": NOW, "metrics": {"temp": 21.5, "count": 3.0, "open": 1.0}},
        )
    ]
    assert all(type(v) is float for v in messages[0].data["metrics"].values())


def test_a_frame_without_ts_gets_its_arrival_time(binary: bool) -> None:
    frame = {"type": "telemetry", "seq": 1, "metrics": {"temp": 20}}
    [message] = telemetry_messages("b7", ENTRY, frames_entry(frame, binary))
    assert message.data == {"device_id": "b7", "ts": ARRIVAL, "metrics": {"temp": 20.0}}


def test_points_frame_gives_one_message_per_point(binary: bool) -> None:
    frame = {
        "type": "telemetry",
        "seq": 2,
        "points": [
            {"ts": NOW, "metrics": {"temp": 21.5, "hum": 40}},
            {"ts": NOW + 1000, "metrics": {"temp": 21.7}},
            {"ts": NOW + 1000, "metrics": {"temp": 21.8, "hum": 41}},  # same ts, repeated metric: own point
            {"metrics": {"hum": 42}},  # no ts: arrival time
        ],
    }
    messages = telemetry_messages("b7", ENTRY, frames_entry(frame, binary))
    assert [m.channel for m in messages] == ["devices/b7/telemetry"] * 4
    assert [m.data for m in messages] == [
        {"device_id": "b7", "ts": NOW, "metrics": {"temp": 21.5, "hum": 40.0}},
        {"device_id": "b7", "ts": NOW + 1000, "metrics": {"temp": 21.7}},
        {"device_id": "b7", "ts": NOW + 1000, "metrics": {"temp": 21.8, "hum": 41.0}},
        {"device_id": "b7", "ts": ARRIVAL, "metrics": {"hum": 42.0}},
    ]


def test_points_with_one_ts_and_distinct_metrics_merge() -> None:
    """Documented limit: samples keep no point boundaries, so these two points arrive as one (same data)."""
    frame = {
        "type": "telemetry",
        "seq": 2,
        "points": [{"ts": NOW, "metrics": {"a": 1}}, {"ts": NOW, "metrics": {"b": 2}}],
    }
    [message] = telemetry_messages("b7", ENTRY, frames_entry(frame, True))
    assert message.data == {"device_id": "b7", "ts": NOW, "metrics": {"a": 1.0, "b": 2.0}}


def test_columns_frame_as_lists(binary: bool) -> None:
    ts = [NOW, NOW + 10, NOW + 20]
    frame = {"type": "columns", "seq": 3, "ts": ts, "metrics": {"temp": [1.5, 2.5, 3.5], "rpm": [10, 20, 30]}}
    [message] = telemetry_messages("b7", ENTRY, frames_entry(frame, binary))
    assert message == ChannelData(
        "devices/b7/telemetry",
        {"device_id": "b7", "ts": ts, "metrics": {"temp": [1.5, 2.5, 3.5], "rpm": [10.0, 20.0, 30.0]}},
    )
    assert all(type(t) is int for t in message.data["ts"])


def test_columns_frame_as_little_endian_binary() -> None:
    ts = np.arange(NOW, NOW + 1000, dtype="<i8")
    temp = np.linspace(0, 1, 1000, dtype="<f8")
    rpm = np.arange(1000, dtype="<f8") * 2
    frame = {"type": "columns", "seq": 3, "ts": ts.tobytes(), "metrics": {"temp": temp.tobytes(), "rpm": rpm.tobytes()}}
    [message] = telemetry_messages("b7", ENTRY, frames_entry(frame, True))
    assert message.data == {
        "device_id": "b7",
        "ts": ts.tolist(),
        "metrics": {"temp": temp.tolist(), "rpm": rpm.tolist()},
    }
    orjson.dumps(message.data)  # plain Python: both encoders take it
    msgpack.packb(message.data)


def test_readings_are_telemetry(binary: bool) -> None:
    body = {"points": [{"ts": NOW, "metrics": {"temp": 1}}, {"ts": NOW + 5, "metrics": {"temp": 2}}]}
    from_device = telemetry_messages("b7", ENTRY, frames_entry(body, binary, kind="readings", seq=0))
    from_org = org_telemetry_messages(ENTRY, org_entry(body, binary, seq=0))
    assert from_device == from_org
    assert [m.data["metrics"]["temp"] for m in from_device] == [1.0, 2.0]
    single = {"metrics": {"temp": 3}}
    messages = org_telemetry_messages(ENTRY, org_entry(single, binary, seq=0))
    assert isinstance(messages, list) and len(messages) == 1
    assert messages[0].data == {"device_id": "b7", "ts": ARRIVAL, "metrics": {"temp": 3.0}}


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "event", "seq": 4, "ts": NOW, "name": "door_opened", "data": {"by": "x"}},
        {"type": "command_result", "command_id": "cmd_1", "status": "completed", "result": 1},
    ],
)
def test_other_frames_in_the_device_stream_are_not_telemetry(frame: Any, binary: bool) -> None:
    assert telemetry_messages("b7", ENTRY, frames_entry(frame, binary)) == []


def test_org_stream_entry_equals_the_device_stream_entry(binary: bool) -> None:
    frame = {"type": "telemetry", "seq": 9, "ts": NOW, "metrics": {"temp": 1.25}}
    from_org = org_telemetry_messages(ENTRY, org_entry(frame, binary, device="pump.2"))
    assert from_org == telemetry_messages("pump.2", ENTRY, frames_entry(frame, binary))
    assert from_org == [
        ChannelData("devices/pump.2/telemetry", {"device_id": "pump.2", "ts": NOW, "metrics": {"temp": 1.25}})
    ]


def test_org_stream_large_frame_is_a_reference() -> None:
    columns = np.arange(1000, dtype="<f8")
    frame = {
        "type": "columns",
        "seq": 5,
        "ts": np.full(1000, NOW, "<i8").tobytes(),
        "metrics": {"v": columns.tobytes()},
    }
    frame_id = f"{NOW + 6}-3"
    ref = org_telemetry_messages(ENTRY, {b"d": b"b7", b"s": b"5", b"b": b"1", b"r": frame_id.encode()})
    assert ref == FrameRef("b7", frame_id)
    [message] = referenced_telemetry_messages(ref, frames_entry(frame, True))
    assert message.channel == "devices/b7/telemetry"
    assert message.data["metrics"]["v"] == columns.tolist() and message.data["ts"] == [NOW] * 1000
    assert referenced_telemetry_messages(ref, None) == []  # trimmed meanwhile: nothing to send


def test_referenced_frame_without_ts_uses_the_device_entry_time() -> None:
    ref = FrameRef("b7", f"{NOW + 3}-0")
    frame = {"type": "telemetry", "seq": 1, "metrics": {"v": 1}}
    [message] = referenced_telemetry_messages(ref, frames_entry(frame, False))
    assert message.data["ts"] == NOW + 3


def presence_entry(kind: str, device: str, ts: int) -> dict[bytes, bytes]:
    """As hub/presence.py writes device.online / device.offline."""
    payload = orjson.dumps({"type": kind, "device_id": device, "ts": ts})
    return {b"e": kind.encode(), b"d": device.encode(), b"b": b"0", b"f": payload}


def without_id(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "id"}


@pytest.mark.parametrize("kind", ["device.online", "device.offline"])
def test_presence_events_match_the_rest_shape(kind: str) -> None:
    fields = presence_entry(kind, "b7", NOW)
    message = event_message(ENTRY, fields)
    assert message == ChannelData(
        "devices/b7/events",
        {"type": kind, "device_id": "b7", "created_at": "2025-11-22T08:26:40.007Z", "data": {"ts": NOW}},
    )
    assert message.data == without_id(rest_event(Position(ENTRY.decode()), fields, merged=False))


def test_device_event_frames_match_the_rest_shape(binary: bool) -> None:
    frame = {"type": "event", "seq": 4, "ts": NOW, "name": "door_opened", "data": {"by": "x", "n": [1, 2]}}
    fields = {b"e": b"device.event", b"d": b"b7", b"b": b"1" if binary else b"0", b"f": wire(frame, binary)}
    message = event_message(ENTRY, fields)
    assert message is not None and message.channel == "devices/b7/events"
    assert message.data == {
        "type": "device.event",
        "device_id": "b7",
        "created_at": "2025-11-22T08:26:40.007Z",
        "data": {"name": "door_opened", "data": {"by": "x", "n": [1, 2]}, "ts": NOW, "seq": 4},
    }
    assert message.data == without_id(rest_event(Position(ENTRY.decode()), fields, merged=False))


def test_non_device_events_have_no_device_events_channel() -> None:
    fields = {b"e": b"alert.triggered", b"d": b"b7", b"b": b"0", b"f": b'{"type":"alert.triggered"}'}
    assert event_message(ENTRY, fields) is None


def test_aggregate_entry_payload_is_the_data() -> None:
    payload = {
        "device_id": "b7",
        "start": "2025-11-22T08:26:00.000Z",
        "end": "2025-11-22T08:27:00.000Z",
        "metrics": {"temp": {"count": 2, "sum": 3.0, "min": 1.0, "max": 2.0, "avg": 1.5}},
    }
    fields = {b"d": b"b7", b"s": str(NOW).encode(), b"c": b"0", b"p": orjson.dumps(payload)}
    assert aggregate_message("1m", fields) == ChannelData("devices/b7/aggregates/1m", payload)
    corrected = {**payload, "corrected": True}
    fields = {**fields, b"c": b"1", b"p": orjson.dumps(corrected)}
    assert aggregate_message("1h", fields) == ChannelData("devices/b7/aggregates/1h", corrected)


def test_command_and_alert_entries_carry_their_data_as_json() -> None:
    command = {"id": "cmd_1", "device_id": "b7", "status": "delivered"}
    assert command_message({b"d": b"b7", b"p": orjson.dumps(command)}) == ChannelData("devices/b7/commands", command)
    alert = {"type": "alert.triggered", "id": "alr_1", "device_id": "b7"}
    assert alert_message({b"p": orjson.dumps(alert)}) == ChannelData("alerts", alert)


def test_packed_columns_frames_read_as_the_frame_sent() -> None:
    """A binary columns frame stored packed (ingest.at_rest), in the device's stream or copied into the
    organization's (small enough to be copied): the same message as from the frame sent."""
    ts = np.arange(NOW, NOW + 150, dtype="<i8")
    frame = {
        "type": "columns",
        "seq": 4,
        "ts": ts.tobytes(),
        "metrics": {"temp": np.linspace(20, 21, 150).tobytes(), "rpm": (np.arange(150) * 3.0).tobytes()},
    }
    sent = msgpack.packb(frame)
    decoded = codec.decode_frame(sent, now_ms=NOW, limits=FrameLimits(past_ms=2**62, future_ms=2**62))
    assert isinstance(decoded, TelemetryFrame)
    encoding, stored = at_rest.stored(decoded)
    assert encoding == at_rest.PACKED and len(stored) < 4096
    expected = telemetry_messages("b7", ENTRY, frames_entry(frame, True))
    packed_entry = {b"k": b"columns", b"s": b"4", b"b": encoding, b"f": stored}
    assert telemetry_messages("b7", ENTRY, packed_entry) == expected
    assert org_telemetry_messages(ENTRY, {b"d": b"b7", b"s": b"4", b"b": encoding, b"f": stored}) == expected
    assert expected[0].data["ts"] == ts.tolist()
