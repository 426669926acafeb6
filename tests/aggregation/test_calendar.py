"""Calendar buckets against a per-timestamp zoneinfo reference, around DST changes in four zones."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import TimeZoneError, calendar_bucket_edges, calendar_bucket_starts
from aggregation.errors import IntervalError
from tests.aggregation.reference import EPOCH, ONE_MS, local_bucket_start

DAY = 86_400_000
HOUR = 3_600_000
ZONES = ("Europe/Rome", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe")
UNITS = ("1d", "1w", "1mo")


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, tz: str = "UTC") -> int:
    return (datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)) - EPOCH) // ONE_MS


def offset_changes(tz: str, first_year: int = 2024, last_year: int = 2027) -> list[int]:
    """UTC ms of a moment next to each change of the zone's UTC offset (found day by day)."""
    zone = ZoneInfo(tz)
    start, end = ms(first_year, 1, 1), ms(last_year + 1, 1, 1)
    changes, previous = [], None
    for t in range(start, end, DAY):
        offset = (EPOCH + t * ONE_MS).astimezone(zone).utcoffset()
        if previous is not None and offset != previous:
            changes.append(t)
        previous = offset
    return changes


# Anchors: each DST change of 2024-2027, plus month and year ends (Kolkata has no DST: only those).
ANCHORS = {tz: [*offset_changes(tz), ms(2026, 1, 1), ms(2026, 3, 1), ms(2026, 12, 31, 23)] for tz in ZONES}


@st.composite
def timestamps_near_changes(draw: st.DrawFn) -> tuple[str, list[int]]:
    tz = draw(st.sampled_from(ZONES))
    anchor = draw(st.sampled_from(ANCHORS[tz]))
    near = st.integers(-4 * DAY, 4 * DAY).map(lambda d: anchor + d)
    # Exact local midnights and the millisecond before them, where an off-by-one would show.
    midnight = st.integers(-4, 4).map(lambda d: local_bucket_start(anchor + d * DAY, "1d", tz) - (d % 2))
    return tz, draw(st.lists(st.one_of(near, midnight), min_size=1, max_size=40))


@settings(max_examples=150, deadline=None)
@given(timestamps_near_changes(), st.sampled_from(UNITS))
def test_bucket_starts_match_zoneinfo(case: tuple[str, list[int]], unit: str) -> None:
    tz, stamps = case
    found = calendar_bucket_starts(np.array(stamps, dtype=np.int64), unit, tz)
    assert found.tolist() == [local_bucket_start(t, unit, tz) for t in stamps]


@settings(max_examples=40, deadline=None)
@given(timestamps_near_changes(), st.sampled_from(UNITS), st.integers(1, 70 * DAY))
def test_edges_partition_the_range(case: tuple[str, list[int]], unit: str, length: int) -> None:
    tz, stamps = case
    begin = stamps[0]
    edges = calendar_bucket_edges(begin, begin + length, unit, tz)
    assert edges[0] <= begin < edges[1] and edges[-2] < begin + length <= edges[-1]
    assert np.all(np.diff(edges) > 0)
    assert calendar_bucket_starts(edges, unit, tz).tolist() == edges.tolist()
    assert calendar_bucket_starts(edges[1:] - 1, unit, tz).tolist() == edges[:-1].tolist()


def day_hours(year: int, month: int, day: int, tz: str) -> float:
    start = ms(year, month, day, tz=tz)
    edges = calendar_bucket_edges(start, start + 1, "1d", tz)
    assert edges[0] == start
    return float(edges[1] - edges[0]) / HOUR


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        ("Europe/Rome", (2026, 3, 29), 23),
        ("Europe/Rome", (2026, 10, 25), 25),
        ("Europe/Rome", (2026, 6, 1), 24),
        ("America/New_York", (2026, 3, 8), 23),
        ("America/New_York", (2026, 11, 1), 25),
        ("Asia/Kolkata", (2026, 3, 29), 24),
        ("Australia/Lord_Howe", (2026, 10, 4), 23.5),
        ("Australia/Lord_Howe", (2026, 4, 5), 24.5),
    ],
)
def test_length_of_local_days(tz: str, day: tuple[int, int, int], hours: float) -> None:
    assert day_hours(*day, tz) == hours


def test_samples_of_the_23_hour_day_in_rome() -> None:
    start, end = ms(2026, 3, 29, tz="Europe/Rome"), ms(2026, 3, 30, tz="Europe/Rome")
    assert (start, end) == (ms(2026, 3, 28, 23), ms(2026, 3, 29, 22))
    ts = np.array([start - 1, start, ms(2026, 3, 29, 1), ms(2026, 3, 29, 1) + 1, end - 1, end], dtype=np.int64)
    assert calendar_bucket_starts(ts, "1d", "Europe/Rome").tolist() == [
        ms(2026, 3, 28, tz="Europe/Rome"),
        start,
        start,
        start,
        start,
        end,
    ]


def test_weeks_start_on_monday_and_months_on_the_first() -> None:
    ts = np.array([ms(2026, 3, 29, 12, tz="Europe/Rome")], dtype=np.int64)  # a Sunday, the 23-hour day
    assert calendar_bucket_starts(ts, "1w", "Europe/Rome").tolist() == [ms(2026, 3, 23, tz="Europe/Rome")]
    assert calendar_bucket_starts(ts, "1mo", "Europe/Rome").tolist() == [ms(2026, 3, 1, tz="Europe/Rome")]
    week = calendar_bucket_edges(int(ts[0]), int(ts[0]) + 1, "1w", "Europe/Rome")
    assert (week[1] - week[0]) / HOUR == 7 * 24 - 1
    march = calendar_bucket_edges(int(ts[0]), int(ts[0]) + 1, "1mo", "Europe/Rome")
    assert (march[1] - march[0]) / HOUR == 31 * 24 - 1


def test_a_year_of_days_and_widely_spread_samples() -> None:
    edges = calendar_bucket_edges(ms(2026, 1, 1), ms(2027, 1, 1), "1d", "America/New_York")
    assert len(edges) == 366 + 1  # the UTC year starts on Dec 31 in New York
    sparse = np.array([ms(1999, 5, 5, 5), ms(2026, 7, 7, 7), ms(2049, 9, 9, 9)], dtype=np.int64)
    expected = [local_bucket_start(int(t), "1mo", "Asia/Kolkata") for t in sparse]
    assert calendar_bucket_starts(sparse, "1mo", "Asia/Kolkata").tolist() == expected


def test_midnight_skipped_by_dst_starts_the_day_at_the_transition() -> None:
    # America/Havana moves its clocks from 00:00 to 01:00: 2026-03-08 begins at 01:00 local (05:00 UTC).
    start = ms(2026, 3, 8, 5)
    assert (EPOCH + start * ONE_MS).astimezone(ZoneInfo("America/Havana")).hour == 1
    ts = np.array([start - 1, start, start + HOUR], dtype=np.int64)
    found = calendar_bucket_starts(ts, "1d", "America/Havana").tolist()
    assert found[1:] == [start, start] and found[0] < start


def test_unknown_zone_and_unit_are_clear_errors() -> None:
    one = np.array([0], dtype=np.int64)
    for tz in ("Mars/Olympus_Mons", "", "../../etc/passwd"):
        with pytest.raises(TimeZoneError, match="unknown time zone"):
            calendar_bucket_starts(one, "1d", tz)
    with pytest.raises(IntervalError, match="calendar unit"):
        calendar_bucket_starts(one, "2d", "UTC")
    with pytest.raises(ValueError, match="empty range"):
        calendar_bucket_edges(5, 5, "1d", "UTC")
    assert calendar_bucket_starts(np.empty(0, np.int64), "1d", "UTC").size == 0


def test_utc_is_plain_day_arithmetic() -> None:
    ts = np.arange(0, 10 * DAY, 7 * HOUR, dtype=np.int64) + ms(2026, 1, 1)
    assert calendar_bucket_starts(ts, "1d", "UTC").tolist() == (ts // DAY * DAY).tolist()
    assert datetime.fromtimestamp(0, UTC) == EPOCH
