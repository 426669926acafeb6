"""Samples folded as runs before they reach the window tables: a run is consecutive samples of one series in
one window (or one unit of time), kept as its count, sum, min and max. A columns frame gives a few runs per
metric instead of a thousand samples; rows frames, whose consecutive samples are of different metrics, form
none worth having and stay sample by sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_RUN_SHARE", "MIN_SAMPLES_TO_COLLAPSE", "BatchRuns", "SampleRuns", "run_starts"]

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntpArray = npt.NDArray[np.intp]

# Below this many samples a batch is folded sample by sample (finding its runs would cost more than it saves).
MIN_SAMPLES_TO_COLLAPSE = 64
# ...and when runs are more than this share of the samples (rows frames: each sample is a run of its own).
MAX_RUN_SHARE = 0.5


@dataclass(slots=True)
class SampleRuns:
    """Samples folded into windows as runs: per run its series, window index and partial aggregates.

    A run is consecutive samples of one series in one window: a columns frame gives a few per metric and
    window instead of a thousand samples. ``count`` None: one sample per run (then sum, min and max are its
    value), as rows frames give, whose consecutive samples are of different metrics.
    """

    series: Int64Array
    index: Int64Array
    count: Int64Array | None
    sum: Float64Array
    min: Float64Array
    max: Float64Array

    @classmethod
    def of(cls, series: Int64Array, index: Int64Array, values: Float64Array, *, collapse: bool = True) -> SampleRuns:
        """The samples as runs, collapsed where that pays (``run_starts``) unless ``collapse`` is off."""
        starts = run_starts(series, index) if collapse else None
        if starts is None:
            return cls(series, index, None, values, values, values)
        return cls.starting_at(starts, series, index, values)

    @classmethod
    def starting_at(cls, starts: IntpArray, series: Int64Array, index: Int64Array, values: Float64Array) -> SampleRuns:
        """The runs of samples that start at ``starts``."""
        return cls(
            series[starts],
            index[starts],
            _lengths(starts, series.size),
            np.add.reduceat(values, starts),
            np.minimum.reduceat(values, starts),
            np.maximum.reduceat(values, starts),
        )

    def coarsened(self, factor: int) -> tuple[SampleRuns, IntpArray]:
        """These runs in windows ``factor`` times wider (consecutive runs of one series that now share a
        window merged), and the run of ``self`` each new run starts at."""
        index = self.index // factor if factor > 1 else self.index
        starts = _changes(self.series, index)
        if starts.size == self.series.size:
            return SampleRuns(self.series, index, self.count, self.sum, self.min, self.max), starts
        return (
            SampleRuns(
                self.series[starts],
                index[starts],
                np.add.reduceat(self.counts(), starts),
                np.add.reduceat(self.sum, starts),
                np.minimum.reduceat(self.min, starts),
                np.maximum.reduceat(self.max, starts),
            ),
            starts,
        )

    def __len__(self) -> int:
        return int(self.series.size)

    def counts(self) -> Int64Array:
        return np.ones(self.series.size, np.int64) if self.count is None else self.count

    def take(self, selection: BoolArray) -> SampleRuns:
        count = None if self.count is None else self.count[selection]
        total = self.sum[selection]
        if count is None:
            return SampleRuns(self.series[selection], self.index[selection], None, total, total, total)
        return SampleRuns(
            self.series[selection], self.index[selection], count, total, self.min[selection], self.max[selection]
        )


def run_starts(series: Int64Array, index: Int64Array) -> IntpArray | None:
    """Where each run (consecutive samples of one series in one window) starts, or None where collapsing
    would not pay: fewer than ``MIN_SAMPLES_TO_COLLAPSE`` samples, or runs over ``MAX_RUN_SHARE`` of them."""
    n = series.size
    if n < MIN_SAMPLES_TO_COLLAPSE:
        return None
    starts = _changes(series, index)
    return None if starts.size > n * MAX_RUN_SHARE else starts


def _changes(series: Int64Array, index: Int64Array) -> IntpArray:
    """Positions where (series, index) differs from the previous position's (0 included, if any)."""
    n = series.size
    if n == 0:
        return np.empty(0, np.intp)
    change = np.empty(n, np.bool_)
    change[0] = True
    np.not_equal(series[1:], series[:-1], out=change[1:])
    change[1:] |= index[1:] != index[:-1]
    return np.flatnonzero(change)


def _lengths(starts: IntpArray, n: int) -> Int64Array:
    lengths: Int64Array = np.diff(np.append(starts, n)).astype(np.int64)
    return lengths


@dataclass(slots=True)
class BatchRuns:
    """A micro-batch already folded into runs of one series in one unit of time (``WindowState.unit_ms``):
    ``runs.index`` counts units, and each run has its device and its first and last timestamps (the
    watermark and lateness rules need those). A unit lies inside one window of every resolution."""

    device: Int64Array
    runs: SampleRuns
    first_ts: Int64Array
    last_ts: Int64Array

    @classmethod
    def of(
        cls,
        starts: IntpArray,
        unit_index: Int64Array,
        device: Int64Array,
        series: Int64Array,
        ts: Int64Array,
        values: Float64Array,
    ) -> BatchRuns:
        """The runs of samples that start at ``starts`` (``run_starts`` over series and unit index)."""
        return cls(
            device[starts],
            SampleRuns.starting_at(starts, series, unit_index, values),
            np.minimum.reduceat(ts, starts),
            np.maximum.reduceat(ts, starts),
        )

    @classmethod
    def concat(cls, parts: list[BatchRuns]) -> BatchRuns:
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.device for p in parts]),
            SampleRuns(
                np.concatenate([p.runs.series for p in parts]),
                np.concatenate([p.runs.index for p in parts]),
                np.concatenate([p.runs.counts() for p in parts]),
                np.concatenate([p.runs.sum for p in parts]),
                np.concatenate([p.runs.min for p in parts]),
                np.concatenate([p.runs.max for p in parts]),
            ),
            np.concatenate([p.first_ts for p in parts]),
            np.concatenate([p.last_ts for p in parts]),
        )

    def __len__(self) -> int:
        return int(self.device.size)
