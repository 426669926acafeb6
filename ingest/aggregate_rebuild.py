"""Rebuilding a device's windows when a process first sees it: after a crash, a restart, or a move.

Window state lives in one process's memory, so windows that were open when a process died (or that another
process was filling) are rebuilt from the truth in Redis before the device's new samples are folded in:

1. the device's newest stored frame says where its data ends: its arrival time (stream id), or its newest
   sample time when that is older;
2. every window that could still change is at or after ``floor(newest - lateness - late horizon, width)`` of
   its resolution: older samples would be dropped as too late. The device's raw frames from there on at the
   next-to-coarsest resolution (a minute with the defaults) are replayed through the lane's ``WindowState``
   in arrival order, with their arrival times as ``now_ms`` (chunks of about a second, closing after each,
   as the live loop does). The coarsest window (the hour) also holds the samples before that: they are
   seeded into it from the stored windows of the next-to-coarsest resolution (``WindowState.seed``), which
   are final there (closed at least a late horizon ago) and, with their corrections, hold exactly the
   samples the live state kept;
3. a window the replay closes is written only where it differs from what the aggregate streams already
   hold for it (per metric; a crash can come between closing a window and writing it), as ``corrected``
   when an entry for it exists.

Cost: one read of the device's frames over two and a half minutes at most (the late reach, up to a
minute of alignment and a minute for device clocks ahead), the stored entries of each resolution over the
same span, and the next-to-coarsest's since the coarsest window's start (60 per metric at most with the
defaults), once per device per process. Before the seeding, a device that moved to another process had up
to an hour of its frames read and replayed (a fleet reconnecting after a restart re-read its last hour).
Frames without ``ts`` are replayed at their arrival time, which can differ by the few milliseconds between
receipt and storage from the time used live.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np
import orjson

from aggregation import ClosedWindows
from aggregation.runs import BatchRuns, SampleRuns
from ingest import at_rest, codec, stream_keys
from ingest.aggregates import MetricAggregate, SampleColumns, WindowAggregator, WindowEntry, resolution_label
from ingest.frames import Samples, TelemetryFrame
from ingest.limits import FrameLimits
from ingest.ports import DeviceIdentity

__all__ = ["rebuild_device"]

SCAN_CHUNK = 1000
# Frames that arrived this long before the replay start are read too: device clocks may run ahead.
CLOCK_SKEW_MS = 60_000
# Replay closes windows after each chunk of this much arrival time.
REPLAY_STEP_MS = 1_000
# Stored frames were checked when received; reading them back accepts any ts.
_REREAD = FrameLimits(past_ms=2**62, future_ms=2**62)
_TELEMETRY = (b"telemetry", b"columns", b"readings")

# Window start -> metric -> aggregates, as the aggregate stream of one resolution holds them (latest wins).
Emitted = dict[int, dict[str, MetricAggregate]]


async def rebuild_device(aggregator: WindowAggregator, redis: Any, device: DeviceIdentity) -> None:
    """Register ``device`` with ``aggregator``, replaying its stored frames into the windows that may be open.

    Reads everything first and changes the state only after, so a Redis error leaves nothing half done."""
    frames_key = stream_keys.device_frames(device.org_id, device.device_id)
    newest = await redis.xrevrange(frames_key, count=1)
    if not newest:
        aggregator.device_id(device)
        return
    policy = aggregator.policy
    widths = sorted(policy.resolutions_ms)
    coarsest = widths[-1]
    reach = _newest_time(newest[0]) - policy.allowed_lateness_ms - policy.late_horizon_ms
    window_from = reach - reach % coarsest
    # The coarsest window's part before the next finer resolution's first window that can still change is
    # seeded from that resolution's stored windows, which hold it all: raw frames are replayed from there.
    seed_width = widths[-2] if len(widths) > 1 and coarsest % widths[-2] == 0 else None
    replay_from = window_from if seed_width is None else reach - reach % seed_width
    emitted = {
        width: await _emitted(
            redis,
            stream_keys.device_aggregates(device.org_id, device.device_id, resolution_label(width)),
            (window_from if width in (coarsest, seed_width) else replay_from) - CLOCK_SKEW_MS,
        )
        for width in policy.resolutions_ms
    }
    frames = await _telemetry(redis, frames_key, replay_from - CLOCK_SKEW_MS)
    number = aggregator.device_id(device)
    if seed_width is not None:
        seeds = _seeds(aggregator, number, emitted[seed_width], window_from, replay_from)
        first_arrival = frames[0][0] if frames else _arrival_ms(newest[0][0])
        aggregator.state.seed(seeds, width_ms=seed_width, now_ms=first_arrival)
    columns, step_end, now_ms = SampleColumns(), None, 0
    for arrival, samples in frames:
        if step_end is not None and arrival >= step_end:
            _replay_step(aggregator, columns, number, now_ms, emitted)
            columns, step_end = SampleColumns(), None
        if step_end is None:
            step_end = arrival + REPLAY_STEP_MS
        columns.add(number, aggregator.series_ids(number, samples.names), samples, keep_from=replay_from)
        now_ms = arrival
    if step_end is not None:
        _replay_step(aggregator, columns, number, now_ms, emitted)


def _seeds(aggregator: WindowAggregator, number: int, stored: Emitted, start: int, end: int) -> BatchRuns:
    """The stored windows starting in [start, end) as runs of the device ``number``."""
    rows = [
        (window, series, aggregates)
        for window, metrics in stored.items()
        if start <= window < end
        for (name, aggregates), series in zip(metrics.items(), aggregator.series_ids(number, metrics), strict=True)
    ]
    window = np.array([w for w, _, _ in rows], np.int64)
    return BatchRuns(
        np.full(len(rows), number, np.int64),
        SampleRuns(
            np.array([s for _, s, _ in rows], np.int64),
            window // aggregator.state.unit_ms,
            np.array([a[0] for _, _, a in rows], np.int64),
            np.array([a[1] for _, _, a in rows], np.float64),
            np.array([a[2] for _, _, a in rows], np.float64),
            np.array([a[3] for _, _, a in rows], np.float64),
        ),
        window,
        window,
    )


def _replay_step(
    aggregator: WindowAggregator, columns: SampleColumns, number: int, now_ms: int, emitted: dict[int, Emitted]
) -> None:
    """Fold one chunk of replayed samples, close, and queue what the streams do not hold yet."""
    aggregator.add(columns, now_ms=now_ms)
    for width, closed in aggregator.state.close(now_ms).items():
        if not len(closed):
            continue
        mine = closed.device == number
        aggregator.pending += aggregator.entries(width, _take(closed, ~mine))
        aggregator.pending += _unwritten(aggregator, width, _take(closed, mine), number, emitted[width])


def _unwritten(
    aggregator: WindowAggregator, width: int, closed: ClosedWindows, number: int, emitted: Emitted
) -> list[WindowEntry]:
    """Entries for the replayed windows (per metric) that differ from the stored ones."""
    changed: dict[int, dict[str, MetricAggregate]] = {}
    for _, start, series, count, total, low, high, _ in closed.rows():
        name = aggregator.metric_name(series)
        replayed = (count, total, low, high)
        if not _same(emitted.get(start, {}).get(name), replayed):
            changed.setdefault(start, {})[name] = replayed
    return [
        aggregator.entry(number, start, width, metrics, corrected=start in emitted)
        for start, metrics in changed.items()
    ]


def _same(stored: MetricAggregate | None, replayed: MetricAggregate) -> bool:
    """Equal aggregates; sums within rounding (the replay may add in another order)."""
    if stored is None:
        return False
    return (
        stored[0] == replayed[0]
        and stored[2] == replayed[2]
        and stored[3] == replayed[3]
        and math.isclose(stored[1], replayed[1], rel_tol=1e-9, abs_tol=1e-9)
    )


def _take(closed: ClosedWindows, mask: Any) -> ClosedWindows:
    return ClosedWindows(*(getattr(closed, f.name)[mask] for f in fields(ClosedWindows)))


def _newest_time(entry: tuple[bytes, dict[bytes, bytes]]) -> int:
    """Where the device's data ends: the newest frame's arrival, or its newest sample when older (a device
    sending old data: its windows still open are that old)."""
    arrival = _arrival_ms(entry[0])
    samples = _samples(arrival, entry[1])
    return arrival if samples is None else min(arrival, int(samples.ts.max()))


def _arrival_ms(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.split("-", 1)[0])


async def _scan(redis: Any, key: str, from_ms: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = []
    low = str(max(from_ms, 0))
    while True:
        chunk = await redis.xrange(key, min=low, max="+", count=SCAN_CHUNK)
        entries += chunk
        if len(chunk) < SCAN_CHUNK:
            return entries
        last = chunk[-1][0]
        low = "(" + (last.decode() if isinstance(last, bytes) else last)


async def _emitted(redis: Any, key: str, from_ms: int) -> Emitted:
    emitted: Emitted = {}
    for _, entry in await _scan(redis, key, from_ms):
        metrics = orjson.loads(entry[b"p"])["metrics"]
        window = emitted.setdefault(int(entry[b"s"]), {})
        for name, value in metrics.items():
            window[name] = (value["count"], value["sum"], value["min"], value["max"])
    return emitted


async def _telemetry(redis: Any, key: str, from_ms: int) -> list[tuple[int, Samples]]:
    """(arrival ms, samples) of the device's stored telemetry frames from ``from_ms`` on, in arrival order."""
    frames = []
    for stream_id, entry in await _scan(redis, key, from_ms):
        arrival = _arrival_ms(stream_id)
        samples = _samples(arrival, entry)
        if samples is not None:
            frames.append((arrival, samples))
    return frames


def _samples(arrival: int, entry: dict[bytes, bytes]) -> Samples | None:
    """The samples of a stored telemetry frame (a missing ts reads as its arrival); None for other kinds."""
    kind = entry[b"k"]
    if kind not in _TELEMETRY:
        return None
    binary, raw = at_rest.as_sent(entry[b"b"], entry[b"f"])
    try:
        if kind == b"readings":
            frame: Any = codec.decode_readings(raw, binary=binary, now_ms=arrival, limits=_REREAD)
        else:
            frame = codec.decode_frame(raw if binary else raw.decode(), now_ms=arrival, limits=_REREAD)
    except codec.FrameError:
        return None
    if isinstance(frame, TelemetryFrame) and len(frame.samples):
        return frame.samples
    return None
