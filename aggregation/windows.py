"""Window assignment and the vectorized group-by: count, sum, min and max per (series, window start).

Timestamps are int64 milliseconds since the epoch and windows are half-open ``[start, start + width)``,
aligned to the epoch. ``Partials`` are mergeable: stored 1 s or 1 min windows combine into coarser buckets,
and stored windows plus freshly aggregated raw samples combine in queries, by reducing on the key again.

Two kernels group the rows, and each call takes the cheaper one for its data. Dense indexing
(``np.bincount`` and ``np.minimum.at`` over a table of every (window, series) pair in the batch's range)
wins when that table is small next to the batch; sort and reduce (``np.argsort`` then ``ufunc.reduceat``)
wins when the key range is sparse. Measured with ``python -m benchmarks.aggregate_kernel --kernels``
(2 shared cores, AMD EPYC, numpy 2.4, one run, ms per call):

    2,000 samples over 10,000 series, 1 window:       dense 0.068, sort 0.107
    200,000 samples over 10,000 series, 2 s at 1 s:   dense 2.8,   sort 16.7
    2,000 samples over 1,000,000 series, 1 window:    dense 15.1,  sort 0.093

so dense is used while the table has at most ``DENSE_CELLS_PER_ROW`` cells per row (plus a small floor).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Partials", "aggregate", "reduce_partials", "window_starts"]

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]

# Dense indexing while the (window x series) table has at most this many cells per input row, or
# DENSE_CELLS_FLOOR cells in all; sort and reduce beyond that (see the figures in the module docstring).
DENSE_CELLS_PER_ROW = 16
DENSE_CELLS_FLOOR = 65_536


def window_starts(ts: Int64Array, width_ms: int) -> Int64Array:
    """Start of the epoch-aligned window of ``width_ms`` containing each timestamp (floor, also below 0)."""
    if width_ms <= 0:
        raise ValueError(f"window width must be positive, got {width_ms} ms")
    starts: Int64Array = ts - ts % width_ms
    return starts


@dataclass(slots=True)
class Partials:
    """Columnar partial aggregates, one row per (series, bucket start); ``avg`` is derived.

    Rows with the same key may appear more than once (after ``concat``); ``merge`` reduces them to one.
    """

    series: Int64Array
    start: Int64Array
    count: Int64Array
    sum: Float64Array
    min: Float64Array
    max: Float64Array

    def __post_init__(self) -> None:
        self.series = np.asarray(self.series, dtype=np.int64)
        self.start = np.asarray(self.start, dtype=np.int64)
        self.count = np.asarray(self.count, dtype=np.int64)
        self.sum = np.asarray(self.sum, dtype=np.float64)
        self.min = np.asarray(self.min, dtype=np.float64)
        self.max = np.asarray(self.max, dtype=np.float64)
        n = self.series.shape
        if any(a.shape != n for a in (self.start, self.count, self.sum, self.min, self.max)) or len(n) != 1:
            raise ValueError("Partials columns must be one-dimensional and of equal length")

    @classmethod
    def empty(cls) -> Partials:
        """No rows."""
        i, f = np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(i, i, i, f, f, f)

    @classmethod
    def concat(cls, parts: Iterable[Partials]) -> Partials:
        """All rows of ``parts`` one after the other, keys not reduced (``merge`` does that)."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.series for p in parts]),
            np.concatenate([p.start for p in parts]),
            np.concatenate([p.count for p in parts]),
            np.concatenate([p.sum for p in parts]),
            np.concatenate([p.min for p in parts]),
            np.concatenate([p.max for p in parts]),
        )

    def __len__(self) -> int:
        return int(self.series.shape[0])

    @property
    def avg(self) -> Float64Array:
        """Mean of each row's samples (``sum / count``)."""
        avg: Float64Array = self.sum / self.count
        return avg

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Partials:
        """The rows selected by an index or boolean mask, in that order."""
        return Partials(
            self.series[index], self.start[index], self.count[index], self.sum[index], self.min[index], self.max[index]
        )

    def merge(self) -> Partials:
        """One row per (series, start), combining duplicates; rows sorted by (start, series)."""
        return reduce_partials(self, self.start)


def aggregate(series: Int64Array, ts: Int64Array, values: Float64Array, width_ms: int) -> Partials:
    """Count, sum, min and max of the samples per (series, window of ``width_ms``), sorted by (start, series).

    ``series`` are non-negative int ids; NaN values propagate into sum, min and max of their window.
    """
    series = np.asarray(series, dtype=np.int64)
    ts = np.asarray(ts, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if not series.shape == ts.shape == values.shape:
        raise ValueError("series, ts and values must have the same length")
    if width_ms <= 0:
        raise ValueError(f"window width must be positive, got {width_ms} ms")
    if ts.size == 0:
        return Partials.empty()
    # Window index per sample; starts are its multiples of the width, so the range stays small.
    index = ts // width_ms
    keys, count, total, low, high = _group(index, series, None, values, values, values)
    index_out, series_out = keys
    return Partials(series_out, index_out * width_ms, count, total, low, high)


def reduce_partials(partials: Partials, bucket_start: Int64Array) -> Partials:
    """Combine partial rows per (series, ``bucket_start[i]``), e.g. 1 min windows into hours or local days.

    Correct when each partial's window lies inside its bucket: 1 min windows nest in the local days of every
    IANA zone, 1 h windows do not in half-hour zones such as Asia/Kolkata.
    """
    bucket_start = np.asarray(bucket_start, dtype=np.int64)
    if bucket_start.shape != partials.start.shape:
        raise ValueError("bucket_start must have one entry per partial row")
    if len(partials) == 0:
        return Partials.empty()
    keys, count, total, low, high = _group(
        bucket_start, partials.series, partials.count, partials.sum, partials.min, partials.max
    )
    start_out, series_out = keys
    return Partials(series_out, start_out, count, total, low, high)


_Grouped = tuple[tuple[Int64Array, Int64Array], Int64Array, Float64Array, Float64Array, Float64Array]

# Keys above this use ranks instead of offsets, so that major * minor still fits in an int64.
_MAX_OFFSET_CELLS = 1 << 62


def _ranks(column: Int64Array) -> tuple[Int64Array, Int64Array]:
    """Rank of each value among the column's distinct values, and the distinct values in order."""
    distinct = np.sort(column)
    distinct = distinct[np.concatenate(([True], distinct[1:] != distinct[:-1]))]
    return np.searchsorted(distinct, column).astype(np.int64), distinct


def _group(
    major: Int64Array,
    minor: Int64Array,
    count: Int64Array | None,
    total: Float64Array,
    low: Float64Array,
    high: Float64Array,
) -> _Grouped:
    """Reduce rows by the key (major, minor); ``count`` None means one sample per row. Sorted by key."""
    major_low, minor_low = int(major.min()), int(minor.min())
    major_span, minor_span = int(major.max()) - major_low + 1, int(minor.max()) - minor_low + 1
    cells = major_span * minor_span
    if cells < _MAX_OFFSET_CELLS:
        key = (major - major_low) * minor_span + (minor - minor_low)
        if cells <= max(DENSE_CELLS_PER_ROW * key.size, DENSE_CELLS_FLOOR):
            cell, n, s, lo, hi = _dense_reduce(key, cells, count, total, low, high)
        else:
            cell, n, s, lo, hi = _sorted_reduce(key, count, total, low, high)
        return (cell // minor_span + major_low, cell % minor_span + minor_low), n, s, lo, hi
    major_rank, major_values = _ranks(major)
    minor_rank, minor_values = _ranks(minor)
    width = minor_values.size
    cell, n, s, lo, hi = _sorted_reduce(major_rank * width + minor_rank, count, total, low, high)
    return (major_values[cell // width], minor_values[cell % width]), n, s, lo, hi


def _dense_reduce(
    key: Int64Array,
    cells: int,
    count: Int64Array | None,
    total: Float64Array,
    low: Float64Array,
    high: Float64Array,
) -> tuple[Int64Array, Int64Array, Float64Array, Float64Array, Float64Array]:
    """Reduce into a table with one cell per possible key, then keep the cells that received rows."""
    n: Int64Array
    if count is None:
        n = np.bincount(key, minlength=cells).astype(np.int64, copy=False)
    else:
        n = np.zeros(cells, np.int64)
        np.add.at(n, key, count)
    s = np.bincount(key, weights=total, minlength=cells).astype(np.float64, copy=False)
    lo = np.full(cells, np.inf)
    np.minimum.at(lo, key, low)
    hi = np.full(cells, -np.inf)
    np.maximum.at(hi, key, high)
    used = np.flatnonzero(n)
    return used.astype(np.int64), n[used], s[used], lo[used], hi[used]


def _sorted_reduce(
    key: Int64Array,
    count: Int64Array | None,
    total: Float64Array,
    low: Float64Array,
    high: Float64Array,
) -> tuple[Int64Array, Int64Array, Float64Array, Float64Array, Float64Array]:
    """Sort rows by key and reduce each run of equal keys with ``ufunc.reduceat``."""
    order = np.argsort(key)
    key = key[order]
    first = np.empty(key.size, np.bool_)
    first[0] = True
    np.not_equal(key[1:], key[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    if count is None:
        n = np.diff(np.append(starts, key.size)).astype(np.int64)
    else:
        n = np.add.reduceat(count[order], starts).astype(np.int64)
    s = np.add.reduceat(total[order], starts)
    lo = np.minimum.reduceat(low[order], starts)
    hi = np.maximum.reduceat(high[order], starts)
    return key[starts], n, s, lo, hi
