"""parse_interval: the API's interval strings, and what each kind of interval buckets."""

from __future__ import annotations

import numpy as np
import pytest

from aggregation import CalendarInterval, FixedInterval, IntervalError, TimeZoneError, parse_interval


@pytest.mark.parametrize(
    ("text", "width_ms", "canonical"),
    [
        ("1s", 1_000, "1s"),
        ("10s", 10_000, "10s"),
        ("90s", 90_000, "90s"),
        ("120s", 120_000, "2m"),
        ("5m", 300_000, "5m"),
        ("90m", 5_400_000, "90m"),
        ("60m", 3_600_000, "1h"),
        ("1h", 3_600_000, "1h"),
        ("48h", 172_800_000, "48h"),
        ("8784h", 366 * 86_400_000, "8784h"),
    ],
)
def test_fixed_intervals(text: str, width_ms: int, canonical: str) -> None:
    interval = parse_interval(text)
    assert interval == FixedInterval(width_ms)
    assert str(interval) == canonical


@pytest.mark.parametrize("text", ["1d", "1w", "1mo"])
def test_calendar_intervals(text: str) -> None:
    interval = parse_interval(text)
    assert isinstance(interval, CalendarInterval)
    assert interval.unit == text
    assert str(interval) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2d", "calendar intervals are exactly 1d, 1w and 1mo"),
        ("7d", "e.g. 48h"),
        ("2w", "calendar intervals"),
        ("3mo", "calendar intervals"),
        ("0s", "positive integer"),
        ("01s", "positive integer"),
        ("-1s", "positive integer"),
        ("1.5h", "positive integer"),
        ("1H", "positive integer"),
        ("1M", "positive integer"),
        ("1ms", "positive integer"),
        ("1y", "positive integer"),
        ("10", "positive integer"),
        ("s", "positive integer"),
        ("", "positive integer"),
        (" 1s", "positive integer"),
        ("1s\n", "positive integer"),
        ("8785h", "at most 366 days"),
        ("99999999999s", "positive integer"),
    ],
)
def test_unsupported_intervals(text: str, message: str) -> None:
    with pytest.raises(IntervalError, match=message) as caught:
        parse_interval(text)
    assert isinstance(caught.value, ValueError)
    assert repr(text) in str(caught.value)


def test_fixed_buckets_are_epoch_aligned_whatever_the_zone() -> None:
    interval = parse_interval("1h")
    ts = np.array([5_400_000, 7_199_999, 7_200_000], dtype=np.int64)
    assert interval.bucket_starts(ts, "Asia/Kolkata").tolist() == [3_600_000, 3_600_000, 7_200_000]
    assert interval.bucket_edges(5_400_000, 7_200_001).tolist() == [3_600_000, 7_200_000, 10_800_000]
    assert interval.bucket_edges(3_600_000, 7_200_000).tolist() == [3_600_000, 7_200_000]
    with pytest.raises(TimeZoneError):
        interval.bucket_starts(ts, "Nowhere/Special")


def test_calendar_buckets_use_the_zone() -> None:
    interval = parse_interval("1d")
    # 2026-01-01 00:00 UTC is 05:30 in Kolkata: its day began at 18:30 UTC the day before.
    new_year = 1_767_225_600_000
    assert interval.bucket_starts(np.array([new_year]), "Asia/Kolkata").tolist() == [new_year - 19_800_000]
    assert interval.bucket_edges(new_year, new_year + 1, "UTC").tolist() == [new_year, new_year + 86_400_000]
