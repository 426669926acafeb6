"""Aggregation intervals as the API writes them: fixed ``<n>s``, ``<n>m``, ``<n>h``; calendar ``1d``, ``1w``, ``1mo``.

Fixed intervals are any multiple of 1 s up to 366 days, aligned to the epoch (UTC). Calendar intervals are
exactly one local day, ISO week or month in the query's time zone; ``2d`` is refused rather than read as
48 h, so that ``d`` always means a local (DST-aware) day: a fixed 48 hours is written ``48h``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from aggregation.calendar import (
    CALENDAR_UNITS,
    DAY_MS,
    CalendarUnit,
    calendar_bucket_edges,
    calendar_bucket_starts,
    time_zone,
)
from aggregation.errors import IntervalError
from aggregation.windows import window_starts

__all__ = ["CalendarInterval", "FixedInterval", "Interval", "parse_interval"]

Int64Array = npt.NDArray[np.int64]

MAX_FIXED_MS = 366 * DAY_MS
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000}
_FIXED = re.compile(r"([1-9][0-9]{0,9})([smh])")
_CALENDAR_LIKE = re.compile(r"[0-9]+(d|w|mo)")


@dataclass(frozen=True, slots=True)
class FixedInterval:
    """Buckets of ``width_ms``, a multiple of 1 s, aligned to the epoch whatever the time zone."""

    width_ms: int

    def __str__(self) -> str:
        for suffix, unit_ms in (("h", 3_600_000), ("m", 60_000)):
            if self.width_ms % unit_ms == 0:
                return f"{self.width_ms // unit_ms}{suffix}"
        return f"{self.width_ms // 1000}s"

    def bucket_starts(self, ts_ms: Int64Array, tz: str = "UTC") -> Int64Array:
        """Start of the bucket containing each timestamp; ``tz`` is only checked (fixed buckets ignore it)."""
        time_zone(tz)
        return window_starts(np.asarray(ts_ms, dtype=np.int64), self.width_ms)

    def bucket_edges(self, from_ms: int, to_ms: int, tz: str = "UTC") -> Int64Array:
        """Starts of the buckets meeting ``[from_ms, to_ms)`` and the end of the last one."""
        if to_ms <= from_ms:
            raise ValueError(f"empty range: to ({to_ms}) must be after from ({from_ms})")
        time_zone(tz)
        first = from_ms - from_ms % self.width_ms
        last = (to_ms - 1) - (to_ms - 1) % self.width_ms
        return np.arange(first, last + 2 * self.width_ms, self.width_ms, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class CalendarInterval:
    """One local day, ISO week (from Monday 00:00) or month in a time zone, DST-correct."""

    unit: CalendarUnit

    def __str__(self) -> str:
        return self.unit

    def bucket_starts(self, ts_ms: Int64Array, tz: str = "UTC") -> Int64Array:
        """Start (UTC ms) of the local bucket containing each timestamp."""
        return calendar_bucket_starts(ts_ms, self.unit, tz)

    def bucket_edges(self, from_ms: int, to_ms: int, tz: str = "UTC") -> Int64Array:
        """Starts of the local buckets meeting ``[from_ms, to_ms)`` and the end of the last one."""
        return calendar_bucket_edges(from_ms, to_ms, self.unit, tz)


Interval = FixedInterval | CalendarInterval


def parse_interval(text: str) -> Interval:
    """``"10s"``, ``"5m"``, ``"1h"`` (any multiple of 1 s) or ``"1d"``, ``"1w"``, ``"1mo"``; else ``IntervalError``."""
    if text in CALENDAR_UNITS:
        return CalendarInterval(cast(CalendarUnit, text))
    match = _FIXED.fullmatch(text)
    if match is None:
        if _CALENDAR_LIKE.fullmatch(text):
            raise IntervalError(
                f"unsupported interval {text!r}: calendar intervals are exactly 1d, 1w and 1mo "
                "(for a fixed length, write hours, e.g. 48h)"
            )
        raise IntervalError(
            f"unsupported interval {text!r}: expected <n>s, <n>m or <n>h with n a positive integer "
            "(e.g. 10s, 5m, 1h), or 1d, 1w, 1mo"
        )
    width_ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if width_ms > MAX_FIXED_MS:
        raise IntervalError(f"unsupported interval {text!r}: fixed intervals are at most 366 days (8784h)")
    return FixedInterval(width_ms)
