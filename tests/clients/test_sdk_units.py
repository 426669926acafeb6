"""The SDK's sans-I/O parts without a server: the seq state file, the frame window, frame encoding, resume
positions, URLs and backoff; and that ``clients`` imports no server package."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
import zlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgpack
import numpy as np
import orjson
import pytest

from clients.backoff import Backoff
from clients.errors import FrameRejected
from clients.frames import columns_frame, command_result_frame, event_frame, telemetry_frame, timestamp_ms
from clients.positions import Position, channel_label, matches, message_label
from clients.seqstate import SeqState
from clients.urls import api_url, websocket_url
from clients.window import FrameWindow

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
SERVER_PACKAGES = ("hub", "ingest", "aggregation", "benchmarks", "tests")


# The package boundary.


def test_clients_import_no_server_package() -> None:
    for module in CLIENTS.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in SERVER_PACKAGES, f"{module.name} imports {name}"
    # And at run time, nothing pulls one in indirectly.
    probe = (
        "import sys, clients; print(sorted({m.split('.')[0] for m in sys.modules} & {'hub','ingest','aggregation'}))"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]"


# The seq state file.


def test_seqs_are_reserved_in_blocks_and_a_crash_never_reuses_one(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    state = SeqState(path, block=10)
    assert [state.take() for _ in range(3)] == [1, 2, 3]
    assert orjson.loads(path.read_bytes())["reserved"] == 10  # written once for the block, not per seq
    # A crash now (no save): the next run starts after the whole reserved block.
    assert SeqState(path, block=10).take() == 11
    assert [state.take() for _ in range(8)][-1] == 11
    assert orjson.loads(path.read_bytes())["reserved"] == 20


def test_a_clean_save_continues_without_a_gap_and_hello_moves_a_lost_state_on(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    state = SeqState(path, block=100)
    state.continue_after(0, "dev-1")
    for _ in range(5):
        state.take()
    state.save()
    again = SeqState(path, block=100)
    assert again.device_id == "dev-1"
    again.continue_after(5, "dev-1")
    assert again.take() == 6
    # The hub knows more than the file (a lost or older state): continue after the hub's last seq.
    again.continue_after(40, "dev-1")
    assert again.take() == 41
    # The hub knows less (frames still on their way): the file's seqs are not reused.
    again.continue_after(2, "dev-1")
    assert again.take() == 42


def test_a_state_file_of_another_device_or_unreadable_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    path.write_bytes(orjson.dumps({"device_id": "other", "reserved": 500}))
    state = SeqState(path)
    state.continue_after(7, "mine")
    assert state.take() == 8
    path.write_bytes(b"{not json")
    broken = SeqState(path)
    broken.continue_after(3, "mine")
    assert broken.take() == 4


# The frame window.


async def test_window_numbers_frames_as_sent_and_resends_unacked_in_order_after_hello() -> None:
    loop = asyncio.get_running_loop()
    window = FrameWindow(SeqState(None), window=2, capacity=4)
    futures = [loop.create_future() for _ in range(4)]
    for n, future in enumerate(futures):
        window.add(telemetry_frame({"n": n}, ts=1), future)
    assert not window.has_room()
    window.reconnected(0, "dev")
    first, second = window.next_to_send(), window.next_to_send()
    assert window.next_to_send() is None  # the window holds 2
    assert first is not None and second is not None
    assert [msgpack.unpackb(f)["seq"] for f in (first, second)] == [1, 2]
    window.acked(1)
    assert futures[0].result() == 1 and window.in_flight == 1
    third = window.next_to_send()
    assert third is not None and msgpack.unpackb(third)["seq"] == 3
    # The connection drops; hello says 2 was stored (its ack was lost): 2 resolves, 3 goes out again, same bytes.
    window.reconnected(2, "dev")
    assert futures[1].result() == 2
    assert window.next_to_send() == third
    assert msgpack.unpackb(window.next_to_send() or b"")["seq"] == 4


async def test_window_rejection_fails_only_that_frame() -> None:
    loop = asyncio.get_running_loop()
    window = FrameWindow(SeqState(None), window=8, capacity=8)
    futures = [loop.create_future() for _ in range(3)]
    for future in futures:
        window.add(telemetry_frame({"n": 1}, ts=1), future)
    window.reconnected(0, "dev")
    while window.next_to_send() is not None:
        pass
    assert window.rejected(FrameRejected("invalid_timestamp", "too old", 2))
    window.acked(3)
    assert futures[0].result() == 1 and futures[2].result() == 3
    with pytest.raises(FrameRejected) as rejected:
        futures[1].result()
    assert rejected.value.code == "invalid_timestamp" and len(window) == 0


# Frames.


def test_columns_are_little_endian_bin_and_the_seq_goes_last() -> None:
    ts = np.array([1_000, 2_000, 3_000], dtype=np.int64)
    temp = np.array([20.5, 21.0, 21.5])
    frame = columns_frame(ts, {"temp": temp, "on": np.array([True, False, True])})
    decoded = msgpack.unpackb(frame.numbered(9))
    assert list(decoded) == ["type", "ts", "metrics", "seq"] and decoded["seq"] == 9
    assert decoded["ts"] == ts.astype("<i8").tobytes()
    assert np.array_equal(np.frombuffer(decoded["metrics"]["temp"], dtype="<f8"), temp)
    assert np.array_equal(np.frombuffer(decoded["metrics"]["on"], dtype="<f8"), [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="as long as ts"):
        columns_frame(ts, {"temp": temp[:2]})
    with pytest.raises(TypeError, match="integer milliseconds"):
        columns_frame(ts.astype(float), {"temp": temp})
    with pytest.raises(ValueError, match="finite"):
        columns_frame(ts, {"temp": np.array([1.0, np.nan, 2.0])})


def test_an_aware_datetime_is_sent_as_its_exact_millisecond() -> None:
    """``timestamp() * 1000`` is a float: for some instants it came out one millisecond short."""
    moment = datetime(2039, 3, 3, 1, 19, 32, 319_000, tzinfo=UTC)
    assert timestamp_ms(moment) == 2182727972319
    assert timestamp_ms(moment.astimezone(timezone(timedelta(hours=-5)))) == 2182727972319
    assert timestamp_ms(datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC)) == -1
    with pytest.raises(ValueError, match="timezone-aware"):
        timestamp_ms(datetime(2039, 3, 3))


def test_frames_the_hub_would_refuse_are_refused_at_once() -> None:
    assert msgpack.unpackb(telemetry_frame({"temp": 1}, ts=5).numbered(1)) == {
        "type": "telemetry",
        "ts": 5,
        "metrics": {"temp": 1},
        "seq": 1,
    }
    with pytest.raises(ValueError, match="must match"):
        telemetry_frame({"bad name": 1.0}, ts=None)
    with pytest.raises(ValueError, match="finite"):
        telemetry_frame({"temp": float("inf")}, ts=None)
    with pytest.raises(ValueError, match="must match"):
        event_frame("door opened", None, ts=None)
    with pytest.raises(TypeError, match="JSON-compatible"):
        event_frame("door", {"raw": b"\x00"}, ts=None)
    failed = msgpack.unpackb(command_result_frame("cmd_1", error="x" * 5000))
    assert failed["status"] == "failed" and len(failed["error"]) == 1024


# Dashboard positions.


def test_channel_matching_and_labels() -> None:
    assert matches("devices/+/telemetry", "devices/a/telemetry")
    assert not matches("devices/+/telemetry", "devices/a/events")
    assert matches("devices/a/#", "devices/a/aggregates/1m") and matches("#", "alerts")
    assert not matches("devices/a/+", "devices/a/aggregates/1m")
    assert channel_label("devices/a/aggregates/1m") == "aggregates/1m" and channel_label("alerts") == "alerts"


def test_composite_positions_resume_after_the_last_message_of_each_stream() -> None:
    position = Position()
    position.replied("events=5-0,telemetry=7-0", "events=E1,telemetry=E2", recovered=False)
    assert position.advance("devices/a/telemetry", "8-0", "E2")
    assert position.since() == {"offset": "events=5-0,telemetry=8-0", "epoch": "events=E1,telemetry=E2"}
    assert not position.advance("devices/a/telemetry", "6-0", "E2")  # older than what was read: a duplicate
    # A resubscribe that recovered keeps what was read; one that did not starts after what the reply covered.
    position.replied("events=9-0,telemetry=12-0", "events=E1,telemetry=E2", recovered=True)
    assert position.since()["offset"] == "events=9-0,telemetry=8-0"
    position.replied("events=9-0,telemetry=12-0", "events=E1,telemetry=E3", recovered=False)
    assert position.since() == {"offset": "events=9-0,telemetry=12-0", "epoch": "events=E1,telemetry=E3"}


def test_messages_of_one_entry_are_each_taken_once_and_a_second_copy_is_dropped() -> None:
    position = Position()
    position.replied("5-0", "E", recovered=False)
    # A points frame: three messages with one offset, numbered within their copy of the entry.
    assert [position.advance("devices/a/telemetry", "6-0", "E", index) for index in range(3)] == [True] * 3
    # Another subscription's replay hands the same entry again, numbered from 0: all of it is dropped...
    assert [position.advance("devices/a/telemetry", "6-0", "E", index) for index in range(3)] == [False] * 3
    # ...also after a resubscribe that recovered, which keeps what was read.
    position.replied("6-0", "E", recovered=True)
    assert not position.advance("devices/a/telemetry", "6-0", "E", 2)
    assert position.advance("devices/a/telemetry", "7-0", "E", 0)
    # A position a caller kept: the entry at it was read whole.
    kept = Position.from_since("7-0", "E")
    assert not kept.advance("devices/a/telemetry", "7-0", "E", 0)
    assert kept.advance("devices/a/telemetry", "7-1", "E", 0)


def test_partitioned_positions_move_the_part_of_the_messages_device_partition() -> None:
    labels = {f"telemetry.{p}": f"{p + 1}-0" for p in range(3)} | {"commands": "4-0"}
    offset = ",".join(f"{label}={value}" for label, value in sorted(labels.items()))
    epoch = ",".join(f"{label}=E" for label in sorted(labels))
    position = Position()
    position.replied(offset, epoch, recovered=False)
    part = zlib.crc32(b"boiler-7") % 3
    assert message_label("devices/boiler-7/telemetry", {"telemetry": 3}) == f"telemetry.{part}"
    assert position.advance("devices/boiler-7/telemetry", "9-0", "E")
    assert position.advance("devices/boiler-7/commands", "10-0", "E")
    moved = dict(item.split("=") for item in position.since()["offset"].split(","))
    assert moved == {**labels, f"telemetry.{part}": "9-0", "commands": "10-0"}
    # A kept since knows the partitions too: the entry read is not taken again, a later one is.
    kept = Position.from_since(position.since()["offset"], position.since()["epoch"])
    assert not kept.advance("devices/boiler-7/telemetry", "9-0", "E")
    assert kept.advance("devices/boiler-7/telemetry", "9-1", "E")


def test_plain_positions() -> None:
    position = Position.from_since("3-0", "E")
    assert position.since() == {"offset": "3-0", "epoch": "E"}
    position.replied("10-0", "E", recovered=True)
    assert position.advance("devices/a/telemetry", "4-0", "E")
    assert position.since() == {"offset": "4-0", "epoch": "E"}


# URLs and backoff.


def test_urls() -> None:
    assert websocket_url("http://h:8080", "/ws/device") == "ws://h:8080/api/v1/ws/device"
    assert websocket_url("https://h/api/v1/", "/ws") == "wss://h/api/v1/ws"
    assert websocket_url("ws://h:1/api/v1/ws/device", "/ws/device") == "ws://h:1/api/v1/ws/device"
    assert api_url("http://h:8080/") == "http://h:8080/api/v1" == api_url("http://h:8080/api/v1")


def test_backoff_grows_with_full_jitter_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(initial_s=1.0, maximum_s=4.0)
    delays = [backoff.next_delay() for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays) and max(delays[5:]) > 1.0
    backoff.reset()
    assert backoff.next_delay() <= 1.0
