"""The two tables behind ``WindowState``, one pair per resolution: open windows and recently closed ones.

Open windows are a table sorted by one int64 key per window, ``(window index - base) * 2**32 + series``:
window-major, so a micro-batch's new windows land near the end and the windows due to close form a prefix
found with one ``np.searchsorted``. Each open window costs 41 bytes (key, count, sum, min, max and a flag).

Closed windows are kept in a ring per series for late corrections: slot ``window index % slots``. With
``slots = ceil((allowed lateness + late horizon) / width) + 1`` a slot is only reused once every sample
that could still reach its old window would be dropped as too late, so the ring needs no pruning. It costs
40 bytes per slot per series id (``slots * 40`` bytes per series at each resolution).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from aggregation.runs import BoolArray, Float64Array, Int64Array, IntpArray, SampleRuns

__all__ = ["NO_WINDOW", "SERIES_BITS", "SERIES_MASK", "ClosedRing", "OpenWindows"]

# Low bits of an open window's key hold the series id, high bits the window index relative to a base.
SERIES_BITS = 32
SERIES_MASK = (1 << SERIES_BITS) - 1
# Window index of an empty ring slot.
NO_WINDOW = np.iinfo(np.int64).min

Aggregates = tuple[Int64Array, Float64Array, Float64Array, Float64Array]


_Column = TypeVar("_Column", Int64Array, Float64Array, BoolArray)


class OpenWindows:
    """Open windows of one resolution, sorted by key; ``emitted`` marks windows reopened after an idle close.

    A cache of each series' newest row lets most samples find their window with two gathers instead of a
    binary search; it is rebuilt after rows move (new windows or closes, a few micro-batches per window).
    """

    __slots__ = ("_newest", "_stale", "count", "emitted", "key", "max", "min", "sum")

    def __init__(self) -> None:
        self.key: Int64Array = np.empty(0, np.int64)
        self.count: Int64Array = np.empty(0, np.int64)
        self.sum: Float64Array = np.empty(0, np.float64)
        self.min: Float64Array = np.empty(0, np.float64)
        self.max: Float64Array = np.empty(0, np.float64)
        self.emitted: BoolArray = np.empty(0, np.bool_)
        # Per series id: row of its newest open window (-1: none), valid while not _stale.
        self._newest: IntpArray = np.empty(0, np.intp)
        self._stale = False

    def __len__(self) -> int:
        return int(self.key.shape[0])

    def grow(self, capacity: int) -> None:
        """Make room for series ids below ``capacity``."""
        if capacity > self._newest.size:
            self._newest = np.full(capacity, -1, np.intp)
            self._stale = True

    def find(self, key: Int64Array, series: Int64Array) -> tuple[IntpArray, BoolArray]:
        """Row of each sample's window (``key`` for ``series``), and whether that window is open."""
        if len(self) == 0:
            return np.zeros(key.shape, np.intp), np.zeros(key.shape, np.bool_)
        if self._stale:
            self._newest.fill(-1)
            # Rows are sorted by window, so each series keeps its last (newest) row; if a duplicate index
            # kept another row, the check below just sends its samples to the binary search.
            self._newest[self.key & SERIES_MASK] = np.arange(len(self), dtype=np.intp)
            self._stale = False
        row = self._newest[series]
        found = (self.key[row] == key) & (row >= 0)
        missed = np.flatnonzero(~found)
        if missed.size:
            position = np.minimum(np.searchsorted(self.key, key[missed]), len(self) - 1)
            hit = self.key[position] == key[missed]
            row[missed[hit]] = position[hit]
            found[missed[hit]] = True
        return row, found

    def position(self, key: Int64Array) -> IntpArray:
        """Where each key would be inserted to keep the table sorted."""
        position: IntpArray = np.searchsorted(self.key, key)
        return position

    def accumulate(self, row: IntpArray, rows: SampleRuns) -> None:
        """Fold runs of samples into existing rows (a row may repeat)."""
        np.add.at(self.count, row, 1 if rows.count is None else rows.count)
        np.add.at(self.sum, row, rows.sum)
        np.minimum.at(self.min, row, rows.min)
        np.maximum.at(self.max, row, rows.max)

    def insert(self, position: IntpArray, key: Int64Array, values: Aggregates, emitted: BoolArray) -> None:
        """Insert new rows (sorted, absent keys) at the positions ``position`` gave, keeping the table sorted.

        Rows before the first insertion point are copied as a block; only the tail is interleaved, and new
        windows are nearly always the newest, near the end.
        """
        first = int(position[0])
        new_rows = position + np.arange(key.size)
        tail = np.arange(first, len(self))
        tail_rows = tail + np.searchsorted(position, tail, side="right")
        count, total, low, high = values
        self.key = _spliced(self.key, first, tail_rows, new_rows, key)
        self.count = _spliced(self.count, first, tail_rows, new_rows, count)
        self.sum = _spliced(self.sum, first, tail_rows, new_rows, total)
        self.min = _spliced(self.min, first, tail_rows, new_rows, low)
        self.max = _spliced(self.max, first, tail_rows, new_rows, high)
        self.emitted = _spliced(self.emitted, first, tail_rows, new_rows, emitted)
        self._stale = True

    def due_prefix(self, last_key: int) -> int:
        """Number of leading rows whose key is at most ``last_key``."""
        return int(np.searchsorted(self.key, last_key, side="right"))

    def pop(self, mask: BoolArray) -> tuple[Int64Array, Aggregates, BoolArray]:
        """Remove and return the leading rows selected by ``mask`` (which may be shorter than the table):
        keys, aggregates and emitted flags. Rows past the mask are moved as one block."""
        keep = ~mask
        taken = (self.key[: mask.size][mask], self.emitted[: mask.size][mask])
        aggregates = (
            self.count[: mask.size][mask],
            self.sum[: mask.size][mask],
            self.min[: mask.size][mask],
            self.max[: mask.size][mask],
        )
        self.key = _kept(self.key, keep)
        self.count = _kept(self.count, keep)
        self.sum = _kept(self.sum, keep)
        self.min = _kept(self.min, keep)
        self.max = _kept(self.max, keep)
        self.emitted = _kept(self.emitted, keep)
        self._stale = True
        return taken[0], aggregates, taken[1]


def _kept(column: _Column, keep: BoolArray) -> _Column:
    """The rows of ``column`` where the leading mask ``keep`` is true, and every row after it."""
    kept: _Column = np.concatenate((column[: keep.size][keep], column[keep.size :]))
    return kept


def _spliced(old: _Column, first: int, tail_rows: IntpArray, new_rows: IntpArray, new: _Column) -> _Column:
    """``old`` with ``new`` placed at ``new_rows``, its rows from ``first`` on moved to ``tail_rows``."""
    out = np.empty(old.size + new.size, old.dtype)
    out[:first] = old[:first]
    out[tail_rows] = old[first:]
    out[new_rows] = new
    return out


class ClosedRing:
    """Closed windows of one resolution still within the late horizon, a ring of ``slots`` per series."""

    __slots__ = ("count", "index", "max", "min", "slots", "sum")

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.index: Int64Array = np.full((slots, 0), NO_WINDOW, np.int64)
        self.count: Int64Array = np.zeros((slots, 0), np.int64)
        self.sum: Float64Array = np.zeros((slots, 0), np.float64)
        self.min: Float64Array = np.zeros((slots, 0), np.float64)
        self.max: Float64Array = np.zeros((slots, 0), np.float64)

    @property
    def capacity(self) -> int:
        """Series ids the ring has room for."""
        return int(self.index.shape[1])

    def grow(self, capacity: int) -> None:
        """Make room for series ids below ``capacity``."""
        if capacity <= self.capacity:
            return
        self.index = _widened(self.index, capacity, NO_WINDOW)
        self.count = _widened(self.count, capacity, 0)
        self.sum = _widened(self.sum, capacity, 0.0)
        self.min = _widened(self.min, capacity, 0.0)
        self.max = _widened(self.max, capacity, 0.0)

    def find(self, index: Int64Array, series: Int64Array) -> BoolArray:
        """Whether each window (index, series) is in the ring."""
        found: BoolArray = self.index[index % self.slots, series] == index
        return found

    def get(self, index: Int64Array, series: Int64Array) -> Aggregates:
        """Aggregates of windows known to be in the ring."""
        slot = index % self.slots
        return self.count[slot, series], self.sum[slot, series], self.min[slot, series], self.max[slot, series]

    def put(self, index: Int64Array, series: Int64Array, values: Aggregates) -> None:
        """Store windows (distinct slots), replacing whatever older window held each slot."""
        slot = index % self.slots
        count, total, low, high = values
        self.index[slot, series] = index
        self.count[slot, series] = count
        self.sum[slot, series] = total
        self.min[slot, series] = low
        self.max[slot, series] = high

    def accumulate(self, index: Int64Array, series: Int64Array, values: Aggregates) -> None:
        """Fold late aggregates into their windows, starting a window where its slot holds another."""
        slot = index % self.slots
        fresh = self.index[slot, series] != index
        if fresh.any():
            self.index[slot[fresh], series[fresh]] = index[fresh]
            self.count[slot[fresh], series[fresh]] = 0
            self.sum[slot[fresh], series[fresh]] = 0.0
            self.min[slot[fresh], series[fresh]] = np.inf
            self.max[slot[fresh], series[fresh]] = -np.inf
        count, total, low, high = values
        self.count[slot, series] += count
        self.sum[slot, series] += total
        self.min[slot, series] = np.minimum(self.min[slot, series], low)
        self.max[slot, series] = np.maximum(self.max[slot, series], high)

    def clear(self, index: Int64Array, series: Int64Array) -> None:
        """Forget windows (they were reopened)."""
        self.index[index % self.slots, series] = NO_WINDOW


def _widened(old: _Column, columns: int, fill: float) -> _Column:
    """A copy of a 2-d ring array with ``columns`` columns, the new ones set to ``fill`` (zeros lazily)."""
    out = (
        np.zeros((old.shape[0], columns), old.dtype) if fill == 0 else np.full((old.shape[0], columns), fill, old.dtype)
    )
    out[:, : old.shape[1]] = old
    return out
