"""Plain-Python references for the aggregation tests: dicts and zoneinfo, one sample at a time."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


@dataclass
class Aggregate:
    """count, sum, min, max of some samples, and the sum of their magnitudes (for the sum's tolerance)."""

    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    magnitude: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        self.magnitude += abs(value)


def group(samples: Iterable[tuple[int, int, float]]) -> dict[tuple[int, int], Aggregate]:
    """(series, bucket start, value) -> one Aggregate per (series, bucket start)."""
    found: dict[tuple[int, int], Aggregate] = {}
    for series, start, value in samples:
        found.setdefault((series, start), Aggregate()).add(value)
    return found


def floor_start(ts: int, width: int) -> int:
    return ts // width * width


def close_enough(total: float, expected: Aggregate) -> bool:
    return math.isclose(total, expected.sum, rel_tol=1e-9, abs_tol=1e-9 * max(expected.magnitude, 1.0))


def assert_rows_match(
    series: np.ndarray,
    start: np.ndarray,
    count: np.ndarray,
    total: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    expected: dict[tuple[int, int], Aggregate],
) -> None:
    """The rows are exactly the expected groups, once each: count, min, max exact, sum within tolerance."""
    keys = list(zip(series.tolist(), start.tolist(), strict=True))
    assert len(set(keys)) == len(keys), "a key appears twice"
    assert set(keys) == set(expected)
    for i, key in enumerate(keys):
        want = expected[key]
        assert count[i] == want.count, key
        assert low[i] == want.min and high[i] == want.max, key
        assert close_enough(float(total[i]), want), (key, total[i], want.sum)


def local_bucket_start(ts: int, unit: str, tz: str) -> int:
    """Start (UTC ms) of the local day / ISO week / month containing ``ts``, one zoneinfo call per step.

    For zones whose midnights all exist and are unambiguous (the ones the tests use)."""
    zone = ZoneInfo(tz)
    day = (EPOCH + ts * ONE_MS).astimezone(zone).date()
    if unit == "1w":
        day -= timedelta(days=day.weekday())
    elif unit == "1mo":
        day = day.replace(day=1)
    midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    return (midnight - EPOCH) // ONE_MS


@dataclass
class WindowReference:
    """What ``WindowState`` must produce, from the rules in its docstring applied one sample at a time."""

    resolutions: tuple[int, ...]
    lateness: int
    horizon: int
    idle_timeout: int
    seen_max: dict[int, int] = field(default_factory=dict)
    last_seen: dict[int, int] = field(default_factory=dict)
    kept: list[tuple[int, int, int, float]] = field(default_factory=list)  # (device, series, ts, value)
    dropped: int = 0

    def add(self, samples: list[tuple[int, int, int, float]], now: int) -> None:
        before = dict(self.seen_max)
        for device, series, ts, value in samples:
            self.last_seen[device] = now
            if device in before and ts < before[device] - self.lateness - self.horizon:
                self.dropped += 1
                continue
            self.kept.append((device, series, ts, value))
            self.seen_max[device] = max(self.seen_max.get(device, ts), ts)

    def windows(self) -> dict[tuple[int, int, int], Aggregate]:
        """(resolution, series, start) -> aggregate of every sample not dropped."""
        found: dict[tuple[int, int, int], Aggregate] = {}
        for _, series, ts, value in self.kept:
            for width in self.resolutions:
                found.setdefault((width, series, floor_start(ts, width)), Aggregate()).add(value)
        return found

    def due(self, width: int, device: int, start: int, now: int) -> bool:
        """Whether a window must have been emitted by a close at ``now``."""
        watermark = self.seen_max.get(device, -(1 << 62)) - self.lateness
        idle = device in self.last_seen and self.last_seen[device] + self.idle_timeout <= now
        return start + width <= watermark or idle
