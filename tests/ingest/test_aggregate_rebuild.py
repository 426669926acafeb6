"""Rebuilding a device's windows in another process's lane, against a real Redis: the rebuilt state's open
windows equal the live lane's at every resolution, the hour's included, while only the last minutes of raw
frames are replayed (the hour's earlier part comes from the stored minute windows, corrections included)."""

from __future__ import annotations

import asyncio
import time

import msgpack
import numpy as np
import pytest
import redis.asyncio as aioredis

from aggregation import WindowState
from ingest import at_rest, codec, stream_keys
from ingest.aggregate_rebuild import rebuild_device
from ingest.aggregates import AggregationPolicy, WindowAggregator
from ingest.flusher import Flusher, FlushPolicy
from ingest.frames import TelemetryFrame
from ingest.limits import FrameLimits
from ingest.ports import DeviceIdentity
from ingest.stream_writer import StreamWriter

HOUR = 3_600_000
LIMITS = FrameLimits(past_ms=2**62, future_ms=2**62)
Windows = dict[tuple[str, int], tuple[int, float, float, float]]


def open_windows(aggregator: WindowAggregator, width: int) -> Windows:
    found = aggregator.state.open_windows(width)
    return {
        (aggregator.metric_name(int(series)), int(start)): (int(count), round(float(total), 6), float(low), float(high))
        for series, start, count, total, low, high in zip(
            found.series, found.start, found.count, found.sum, found.min, found.max, strict=True
        )
    }


async def written(flusher: Flusher) -> None:
    """Until every frame added so far is stored (and folded)."""
    for _ in range(5_000):
        if not flusher.waiting_frames:
            return
        await asyncio.sleep(0.001)  # the flusher has no event for this
    raise AssertionError("the flusher did not write")


class Replayed:
    """Counts the samples a rebuild folds in, through the state's two ways in."""

    def __init__(self, state: WindowState) -> None:
        self.samples = 0
        add, add_runs = state.add, state.add_runs

        def counting_add(*args: object, **kwargs: object) -> None:
            self.samples += len(args[2])  # type: ignore[arg-type]
            add(*args, **kwargs)  # type: ignore[arg-type]

        def counting_add_runs(batch: object, **kwargs: object) -> None:
            self.samples += int(batch.runs.counts().sum())  # type: ignore[attr-defined]
            add_runs(batch, **kwargs)  # type: ignore[arg-type]

        state.add = counting_add  # type: ignore[method-assign]
        state.add_runs = counting_add_runs  # type: ignore[method-assign]


@pytest.mark.parametrize("minutes_into_the_hour", [25, 2])
async def test_a_rebuilt_lane_has_the_live_lanes_open_windows(
    redis: aioredis.Redis, minutes_into_the_hour: int
) -> None:
    device = DeviceIdentity("org_rebuild", f"meter-{minutes_into_the_hour}")
    policy = AggregationPolicy()
    live = Flusher(StreamWriter(redis), policy=FlushPolicy(lanes=1), aggregation=policy)
    # Twenty minutes of samples, one a second, ending some minutes into an hour (the second case crosses
    # into it from the hour before); every 37th sample 25 s late, which corrects its closed second and often its minute.
    now_hour = int(time.time() * 1000) // HOUR * HOUR - 2 * HOUR
    end = now_hour + minutes_into_the_hour * 60_000
    live.start()
    for seq, second in enumerate(range(20 * 60), start=1):
        ts = end - 20 * 60_000 + second * 1000 + 137
        if second % 37 == 36:
            ts -= 25_000
        raw = msgpack.packb({"type": "telemetry", "seq": seq, "ts": ts, "metrics": {"temp": second % 23, "hum": 1.5}})
        frame = codec.decode_frame(raw, now_ms=ts, limits=LIMITS)
        live.add(device, seq, b"telemetry", b"1", raw, None, frame.samples)  # type: ignore[union-attr]
        if second % 10 == 9:  # a write every 10 s of samples, as a live lane folds them: late ones are late
            await written(live)
    await live.stop()
    (lane,) = live.lanes
    assert lane.aggregator is not None
    rebuilt = WindowAggregator(policy)
    replayed = Replayed(rebuilt.state)
    await rebuild_device(rebuilt, redis, device)
    for width in policy.resolutions_ms:
        assert open_windows(rebuilt, width) == open_windows(lane.aggregator, width), width
    hour = open_windows(rebuilt, HOUR)
    assert hour and all(start == now_hour for _, start in hour)
    assert (
        sum(count for (name, _), (count, *_) in hour.items() if name == "temp") == min(minutes_into_the_hour, 20) * 60
    )
    # Only the late reach and its minute were replayed as samples (2 metrics a sample), not the hour.
    assert 0 < replayed.samples <= 2 * 2 * 60 * 2
    # The live lane did correct windows (late samples), and wrote them.
    minutes = await redis.xrange(stream_keys.device_aggregates(device.org_id, device.device_id, "1m"))
    assert any(fields[b"c"] == b"1" for _, fields in minutes)
    # Nothing the live lane wrote was wrong, so the rebuild writes nothing.
    assert rebuilt.pending == []


async def test_a_lane_rebuilt_from_packed_columns_frames_has_the_live_lanes_windows(redis: aioredis.Redis) -> None:
    """Binary columns frames are stored packed (ingest.at_rest); the rebuild reads them back as sent."""
    device = DeviceIdentity("org_rebuild", "packed-columns")
    policy = AggregationPolicy()
    live = Flusher(StreamWriter(redis), policy=FlushPolicy(lanes=1), aggregation=policy)
    start = int(time.time() * 1000) // 60_000 * 60_000 - 3 * 60_000
    live.start()
    for seq in range(1, 31):  # 30 frames of 500 samples, 10 ms apart: 2.5 minutes
        ts = np.arange(500, dtype="<i8") * 10 + start + (seq - 1) * 5_000
        temp = np.sin(ts / 1e4) * 3 + 20
        frame = {
            "type": "columns",
            "seq": seq,
            "ts": ts.tobytes(),
            "metrics": {"temp": temp.tobytes(), "n": (ts % 7).astype("<f8").tobytes()},
        }
        decoded = codec.decode_frame(msgpack.packb(frame), now_ms=int(ts[-1]), limits=LIMITS)
        assert isinstance(decoded, TelemetryFrame)
        encoding, stored = at_rest.stored(decoded)
        assert encoding == at_rest.PACKED
        live.add(device, seq, b"columns", encoding, stored, None, decoded.samples)
        await written(live)
    await live.stop()
    entries = await redis.xrange(stream_keys.device_frames(device.org_id, device.device_id))
    assert len(entries) == 30 and {fields[b"b"] for _, fields in entries} == {at_rest.PACKED}
    (lane,) = live.lanes
    assert lane.aggregator is not None
    rebuilt = WindowAggregator(policy)
    await rebuild_device(rebuilt, redis, device)
    for width in policy.resolutions_ms:
        assert open_windows(rebuilt, width) == open_windows(lane.aggregator, width), width
    assert open_windows(rebuilt, 60_000)  # the minute the frames end in is open, and was rebuilt from them
