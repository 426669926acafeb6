"""``ClosedWindows``: what one ``WindowState.close`` emits at one resolution, as columns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

__all__ = ["ClosedWindows"]

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(slots=True)
class ClosedWindows:
    """Windows emitted by one ``close`` at one resolution, sorted by (device, start, series).

    ``corrected`` rows replace an earlier emission of the same (series, start), or are the first emission of
    a window that only received late samples.
    """

    series: Int64Array
    device: Int64Array
    start: Int64Array
    end: Int64Array
    count: Int64Array
    sum: Float64Array
    min: Float64Array
    max: Float64Array
    corrected: BoolArray

    def __len__(self) -> int:
        return int(self.series.shape[0])

    def rows(self) -> Iterator[tuple[int, int, int, int, float, float, float, bool]]:
        """Each window as Python values: (device, start, series, count, sum, min, max, corrected)."""
        return zip(
            self.device.tolist(),
            self.start.tolist(),
            self.series.tolist(),
            self.count.tolist(),
            self.sum.tolist(),
            self.min.tolist(),
            self.max.tolist(),
            self.corrected.tolist(),
            strict=True,
        )

    @property
    def avg(self) -> Float64Array:
        """Mean of each window's samples (``sum / count``)."""
        avg: Float64Array = self.sum / self.count
        return avg

    @classmethod
    def empty(cls) -> ClosedWindows:
        """No windows."""
        i, f = np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(i, i, i, i, i, f, f, f, np.empty(0, np.bool_))

    @classmethod
    def concat(cls, parts: list[ClosedWindows]) -> ClosedWindows:
        """All rows of ``parts``, sorted by (device, start, series)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        names = [f.name for f in fields(cls)]
        if len(parts) == 1:
            columns = [getattr(parts[0], name) for name in names]
        else:
            columns = [np.concatenate([getattr(p, name) for p in parts]) for name in names]
        if columns[0].size > 1:
            order = np.lexsort((columns[0], columns[2], columns[1]))
            columns = [column[order] for column in columns]
        return cls(*columns)
