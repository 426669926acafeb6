"""Window state across micro-batches: open windows, per-device watermarks, idle timeouts, late corrections.

Each device has an event-time watermark, the largest timestamp it has sent minus the allowed lateness.
``close`` emits, once, every window whose end is at or below its device's watermark, and every open window
of a device that has sent nothing for the idle timeout (processing time), so quiet devices still get their
windows. A sample for a window already closed by the watermark is late: if it is no older than the
watermark minus the late horizon, it updates that window and ``close`` re-emits the corrected aggregate
(``corrected=True``); older samples are dropped from aggregation and counted in ``late_dropped`` (the raw
frames are stored anyway). A window closed only because its device went idle reopens if the device sends
more for it, and is emitted again, as corrected, when it closes again.

A micro-batch is judged against the state before it (watermarks move after it is folded in), so the
order of samples inside a batch never matters. No clock is read: processing time arrives as ``now_ms``, so
replaying the raw samples with their arrival times, batch by batch, rebuilds the same state.

Memory: 41 bytes per open window (about lateness / width + 1 per active series and resolution); per series
id 8 bytes, 8 more per resolution, and a ring of recently closed windows, 40 bytes x
``ceil((lateness + horizon) / width) + 1`` slots per resolution: with the defaults (5 s lateness, 30 s
horizon; 1 s, 1 min, 1 h) 36 + 2 + 2 slots, 1.6 KB per series; per device id 33 bytes. Nothing grows with
time: closed windows leave the ring as newer ones take their slots. Device and series ids are dense small
integers chosen by the caller (tables are sized by the largest id), and a series belongs to one device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import reduce

import numpy as np
import numpy.typing as npt

from aggregation.closed_windows import ClosedWindows
from aggregation.runs import BatchRuns, SampleRuns, run_starts
from aggregation.window_tables import SERIES_BITS, SERIES_MASK, Aggregates, ClosedRing, OpenWindows
from aggregation.windows import Partials, reduce_partials

__all__ = ["DEFAULT_RESOLUTIONS_MS", "WindowState"]

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntpArray = npt.NDArray[np.intp]

DEFAULT_RESOLUTIONS_MS = (1_000, 60_000, 3_600_000)
# Timestamp of "never": far below any real one, far enough above int64's minimum that subtracting
# lateness and horizon cannot overflow.
NEVER = -(1 << 62)
# Window indexes are stored relative to the first one seen, in the high 32 bits of an open window's key.
_INDEX_LIMIT = 1 << 31


class _Resolution:
    """Open windows and the ring of recently closed ones for one window width."""

    __slots__ = ("base", "late_rows", "open", "ring", "width")

    def __init__(self, width: int, slots: int) -> None:
        self.width = width
        self.base: int | None = None
        self.open = OpenWindows()
        self.ring = ClosedRing(slots)
        # (window index, series) of ring windows that received late samples since the last close.
        self.late_rows: list[tuple[Int64Array, Int64Array]] = []

    def index_range_ok(self, first_ts: int, last_ts: int) -> bool:
        base = first_ts // self.width if self.base is None else self.base
        return first_ts // self.width - base >= -_INDEX_LIMIT and last_ts // self.width - base < _INDEX_LIMIT


class WindowState:
    """Windows of every resolution across micro-batches, closed by per-device watermarks and idle timeouts.

    ``allowed_lateness_ms``: how far behind its device's newest timestamp a sample may be and still land in
    an open window. ``late_horizon_ms``: how much further behind it may be and still correct a closed window.
    ``idle_timeout_ms``: processing time without samples after which a device's open windows close.
    """

    def __init__(
        self,
        resolutions_ms: Sequence[int] = DEFAULT_RESOLUTIONS_MS,
        *,
        allowed_lateness_ms: int = 5_000,
        late_horizon_ms: int = 30_000,
        idle_timeout_ms: int = 10_000,
    ) -> None:
        if not resolutions_ms or any(r <= 0 for r in resolutions_ms) or len(set(resolutions_ms)) != len(resolutions_ms):
            raise ValueError(f"resolutions must be distinct positive widths in ms, got {tuple(resolutions_ms)}")
        if allowed_lateness_ms < 0 or late_horizon_ms < 0 or idle_timeout_ms <= 0:
            raise ValueError("lateness and horizon must be >= 0 ms and the idle timeout > 0 ms")
        self.resolutions_ms = tuple(int(r) for r in resolutions_ms)
        self.allowed_lateness_ms = allowed_lateness_ms
        self.late_horizon_ms = late_horizon_ms
        self.idle_timeout_ms = idle_timeout_ms
        # Samples dropped from aggregation because they were older than watermark - late horizon.
        self.late_dropped = 0
        reach = allowed_lateness_ms + late_horizon_ms
        self._levels = [_Resolution(r, math.ceil(reach / r) + 1) for r in self.resolutions_ms]
        # The widest width every resolution is a multiple of: a run of samples within one such unit lies in
        # one window of every resolution, so a batch collapsed into these runs once serves every level.
        self.unit_ms = reduce(math.gcd, self.resolutions_ms)
        # Per device id: largest timestamp seen, watermark at the last close, largest timestamp at the last
        # idle close, processing time last seen, and whether its idle close is done.
        self._seen_max: Int64Array = np.empty(0, np.int64)
        self._closed_through: Int64Array = np.empty(0, np.int64)
        self._idle_seen: Int64Array = np.empty(0, np.int64)
        self._last_seen: Int64Array = np.empty(0, np.int64)
        self._idle_done: BoolArray = np.empty(0, np.bool_)
        # Per series id: its device.
        self._device_of_series: Int64Array = np.empty(0, np.int64)

    def add(
        self,
        device: Int64Array,
        series: Int64Array,
        ts: Int64Array,
        values: Float64Array,
        *,
        now_ms: int,
    ) -> None:
        """Fold a micro-batch into the open windows (or, when late, the closed ones); ``device[i]`` is the
        device of sample i and ``now_ms`` the processing time the batch arrived at."""
        device = np.asarray(device, dtype=np.int64)
        series = np.asarray(series, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        if not device.shape == series.shape == ts.shape == values.shape or ts.ndim != 1:
            raise ValueError("device, series, ts and values must be one-dimensional and of equal length")
        if ts.size == 0:
            return
        unit_index = ts // self.unit_ms
        starts = run_starts(series, unit_index)
        if starts is not None and self._add_runs(BatchRuns.of(starts, unit_index, device, series, ts, values), now_ms):
            return
        self._check_and_grow(device, series, int(ts.min()), int(ts.max()))
        self._device_of_series[series] = device
        self._last_seen[device] = now_ms
        self._idle_done[device] = False
        keep = ts >= self._seen_max[device] - (self.allowed_lateness_ms + self.late_horizon_ms)
        kept = int(np.count_nonzero(keep))
        if kept < ts.size:
            self.late_dropped += ts.size - kept
            device, series, ts, values = device[keep], series[keep], ts[keep], values[keep]
            if kept == 0:
                return
        np.maximum.at(self._seen_max, device, ts)
        # A sample can only be late where it is older than its device's watermark at the last close.
        closed_through = self._closed_through[device]
        any_late = bool((ts < closed_through).any())
        for level in self._levels:
            index = ts // level.width
            # Sample by sample where the batch did not form runs at the unit width (it will not at wider ones).
            runs = SampleRuns.of(series, index, values, collapse=starts is not None)
            level_closed_through = closed_through if any_late else None
            if level_closed_through is not None and runs.count is not None:
                level_closed_through = level_closed_through[np.cumsum(runs.count) - runs.count]
            self._add_to(level, runs, level_closed_through)

    def add_runs(
        self,
        batch: BatchRuns,
        *,
        now_ms: int,
        samples: Callable[[], tuple[Int64Array, Int64Array, Int64Array, Float64Array]],
    ) -> None:
        """``add`` for a micro-batch its caller folded into runs (``BatchRuns``, in units of ``unit_ms``):
        the same result, without handing over every sample. ``samples`` gives the batch's samples as ``add``
        takes them, for the rare batch with a sample too late to keep (it is dropped sample by sample)."""
        if len(batch) and not self._add_runs(batch, now_ms):
            self.add(*samples(), now_ms=now_ms)

    def seed(self, batch: BatchRuns, *, width_ms: int, now_ms: int) -> None:
        """Fold aggregates of whole windows ``width_ms`` wide (one run each, ``runs.index`` in units of
        ``unit_ms``, ``first_ts`` its start) into the resolutions that are wider multiples of ``width_ms``, and
        no other: how a rebuilt state takes in the stored windows of a finer resolution instead of the samples
        behind them. Each run moves its device's watermark as a sample at ``last_ts`` would."""
        levels = [level for level in self._levels if level.width > width_ms and level.width % width_ms == 0]
        if len(batch) and levels and not self._add_runs(batch, now_ms, levels):
            raise ValueError("seeded windows must not be too late for their device")

    def close(self, now_ms: int) -> dict[int, ClosedWindows]:
        """Emit the windows due by watermark or idle timeout and the corrections since the last close."""
        watermark = self._seen_max - self.allowed_lateness_ms
        idle = (self._last_seen <= now_ms - self.idle_timeout_ms) & ~self._idle_done
        any_idle = bool(idle.any())
        if any_idle:
            self._idle_seen = np.where(idle, self._seen_max, self._idle_seen)
            self._idle_done |= idle
        highest = int(watermark.max()) if watermark.size else NEVER
        closed = {
            level.width: self._close(level, watermark, highest, idle if any_idle else None) for level in self._levels
        }
        self._closed_through = watermark
        return closed

    def open_windows(self, resolution_ms: int) -> Partials:
        """The windows of one resolution that are open now (not yet emitted, or reopened)."""
        level = self._levels[self.resolutions_ms.index(resolution_ms)]
        open_ = level.open
        series, index = self._decode(level, open_.key)
        return Partials(series, index * level.width, open_.count, open_.sum, open_.min, open_.max).take(
            np.arange(len(open_))
        )

    # Adding.

    def _check_and_grow(self, device: Int64Array, series: Int64Array, first: int, last: int) -> None:
        """Refuse ids and timestamps (``first`` to ``last``) the tables cannot hold, then make room for new ids."""
        device_low, device_high = int(device.min()), int(device.max())
        series_low, series_high = int(series.min()), int(series.max())
        if device_low < 0 or series_low < 0 or series_high > SERIES_MASK:
            raise ValueError(f"device ids must be >= 0 and series ids in [0, {SERIES_MASK}]")
        if not all(level.index_range_ok(first, last) for level in self._levels):
            raise ValueError(f"timestamps {first}..{last} are too far from the first one this state saw")
        if device_high >= self._seen_max.size:
            extra = _capacity(device_high + 1, self._seen_max.size) - self._seen_max.size
            self._seen_max = np.concatenate((self._seen_max, np.full(extra, NEVER, np.int64)))
            self._closed_through = np.concatenate((self._closed_through, np.full(extra, NEVER, np.int64)))
            self._idle_seen = np.concatenate((self._idle_seen, np.full(extra, NEVER, np.int64)))
            self._last_seen = np.concatenate((self._last_seen, np.full(extra, NEVER, np.int64)))
            self._idle_done = np.concatenate((self._idle_done, np.ones(extra, np.bool_)))
        if series_high >= self._device_of_series.size:
            capacity = _capacity(series_high + 1, self._device_of_series.size)
            extra = capacity - self._device_of_series.size
            self._device_of_series = np.concatenate((self._device_of_series, np.zeros(extra, np.int64)))
            for level in self._levels:
                level.ring.grow(capacity)
                level.open.grow(capacity)

    def _add_runs(self, batch: BatchRuns, now_ms: int, levels: list[_Resolution] | None = None) -> bool:
        """Fold a batch as runs of one series in one unit of time (a columns frame gives a few per metric):
        the device bookkeeping, lateness and every level (or ``levels``) then see runs, not samples. False,
        with nothing changed but table sizes, when some sample is too late to keep (the sample path drops it)."""
        device, runs, low = batch.device, batch.runs, batch.first_ts
        self._check_and_grow(device, runs.series, int(low.min()), int(batch.last_ts.max()))
        if (low < self._seen_max[device] - (self.allowed_lateness_ms + self.late_horizon_ms)).any():
            return False
        self._device_of_series[runs.series] = device
        self._last_seen[device] = now_ms
        self._idle_done[device] = False
        np.maximum.at(self._seen_max, device, batch.last_ts)
        closed_through = self._closed_through[device]
        any_late = bool((low < closed_through).any())
        for level in self._levels if levels is None else levels:
            level_runs, first = runs.coarsened(level.width // self.unit_ms)
            self._add_to(level, level_runs, closed_through[first] if any_late else None)
        return True

    def _add_to(self, level: _Resolution, runs: SampleRuns, closed_through: Int64Array | None) -> None:
        """Fold runs (``index`` in this level's windows) into one resolution: straight into open windows
        where they exist (no group-by on that path), grouped first where they open new windows or are late
        (``closed_through``, per run its device's watermark at the last close; None: none is late)."""
        if level.base is None:
            level.base = int(runs.index.min())
        # A run (one series, one window) is late or not as a whole: its device's watermark is one.
        late = None if closed_through is None else (runs.index + 1) * level.width <= closed_through
        if late is not None and late.any():
            batch = self._grouped(level, runs.take(late))
            late_index = batch.start // level.width
            level.ring.accumulate(late_index, batch.series, (batch.count, batch.sum, batch.min, batch.max))
            level.late_rows.append((late_index, batch.series))
            on_time = ~late
            if not on_time.any():
                return
            runs = runs.take(on_time)
        row, found = level.open.find((runs.index - level.base) * (1 << SERIES_BITS) + runs.series, runs.series)
        if found.all():
            level.open.accumulate(row, runs)
            return
        if found.any():
            level.open.accumulate(row[found], runs.take(found))
        self._open(level, self._grouped(level, runs.take(~found)))

    @staticmethod
    def _grouped(level: _Resolution, runs: SampleRuns) -> Partials:
        """One row per (series, window) of ``runs``, sorted by (start, series)."""
        start = runs.index * level.width
        return reduce_partials(Partials(runs.series, start, runs.counts(), runs.sum, runs.min, runs.max), start)

    def _open(self, level: _Resolution, batch: Partials) -> None:
        """Insert new open windows, reopening those closed only because their device went idle."""
        assert level.base is not None
        index = batch.start // level.width
        key = (index - level.base) * (1 << SERIES_BITS) + batch.series
        position = level.open.position(key)
        emitted = np.zeros(len(batch), np.bool_)
        maybe = np.flatnonzero(batch.start <= self._idle_seen[self._device_of_series[batch.series]])
        if maybe.size:
            reopened = maybe[level.ring.find(index[maybe], batch.series[maybe])]
            if reopened.size:
                count, total, low, high = level.ring.get(index[reopened], batch.series[reopened])
                batch.count[reopened] += count
                batch.sum[reopened] += total
                batch.min[reopened] = np.minimum(batch.min[reopened], low)
                batch.max[reopened] = np.maximum(batch.max[reopened], high)
                emitted[reopened] = True
                level.ring.clear(index[reopened], batch.series[reopened])
        level.open.insert(position, key, (batch.count, batch.sum, batch.min, batch.max), emitted)

    # Closing.

    def _close(self, level: _Resolution, watermark: Int64Array, highest: int, idle: BoolArray | None) -> ClosedWindows:
        parts = [self._corrections(level)]
        open_ = level.open
        if len(open_):
            assert level.base is not None
            # Only windows ending at or below the highest watermark can be due by watermark: a prefix.
            last_index = highest // level.width - 1 - level.base
            last_key = min(max(last_index, -_INDEX_LIMIT - 1), _INDEX_LIMIT - 1) * (1 << SERIES_BITS) + SERIES_MASK
            prefix = open_.due_prefix(last_key)
            due_in_prefix = None
            if prefix:
                series, index = self._decode(level, open_.key[:prefix])
                due_in_prefix = (index + 1) * level.width <= watermark[self._device_of_series[series]]
            if idle is not None:
                due = idle[self._device_of_series[open_.key & SERIES_MASK]]
                if due_in_prefix is not None:
                    due[:prefix] |= due_in_prefix
            elif due_in_prefix is not None and due_in_prefix.any():
                due = due_in_prefix
            else:
                due = None
            if due is not None and due.any():
                parts.append(self._close_rows(level, due, watermark))
        return ClosedWindows.concat(parts)

    def _corrections(self, level: _Resolution) -> ClosedWindows:
        if not level.late_rows:
            return ClosedWindows.empty()
        index = np.concatenate([i for i, _ in level.late_rows])
        series = np.concatenate([s for _, s in level.late_rows])
        level.late_rows.clear()
        assert level.base is not None
        key = np.unique((index - level.base) * (1 << SERIES_BITS) + series)
        series, index = self._decode(level, key)
        count, total, low, high = level.ring.get(index, series)
        corrected = np.ones(key.size, np.bool_)
        return self._windows(level, series, index, (count, total, low, high), corrected)

    def _close_rows(self, level: _Resolution, due: BoolArray, watermark: Int64Array) -> ClosedWindows:
        key, aggregates, emitted = level.open.pop(due)
        series, index = self._decode(level, key)
        closed = self._windows(level, series, index, aggregates, emitted)
        # Keep for late samples only the windows a sample not yet too late can still reach.
        keep = closed.end > watermark[closed.device] - self.late_horizon_ms
        level.ring.put(index[keep], series[keep], _take(aggregates, keep))
        return closed

    def _windows(
        self, level: _Resolution, series: Int64Array, index: Int64Array, aggregates: Aggregates, corrected: BoolArray
    ) -> ClosedWindows:
        start = index * level.width
        count, total, low, high = aggregates
        device = self._device_of_series[series]
        return ClosedWindows(series, device, start, start + level.width, count, total, low, high, corrected)

    @staticmethod
    def _decode(level: _Resolution, key: Int64Array) -> tuple[Int64Array, Int64Array]:
        """Series and absolute window index of open-window keys."""
        assert level.base is not None or key.size == 0
        base = level.base or 0
        series: Int64Array = key & SERIES_MASK
        index: Int64Array = (key >> SERIES_BITS) + base
        return series, index


def _capacity(needed: int, current: int) -> int:
    """Room for ``needed`` ids, growing by at least a quarter, in steps of 1024."""
    return -(-max(needed, current + current // 4) // 1024) * 1024


def _take(aggregates: Aggregates, selection: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Aggregates:
    count, total, low, high = aggregates
    return count[selection], total[selection], low[selection], high[selection]
