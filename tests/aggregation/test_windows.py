"""The group-by kernel and mergeable partials against a dict reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import Partials, aggregate, calendar_bucket_starts, reduce_partials, window_starts
from tests.aggregation.reference import assert_rows_match, floor_start, group

T0 = 1_800_000_000_000
PROPERTY = settings(max_examples=60, deadline=None)

values = st.one_of(st.integers(-1000, 1000).map(float), st.floats(-1e6, 1e6, allow_nan=False))
# Offsets from T0 that land on window boundaries (and just before them) as often as anywhere else.
offsets = st.one_of(
    st.integers(0, 20_000),
    st.integers(0, 20).map(lambda k: k * 1000),
    st.integers(1, 20).map(lambda k: k * 1000 - 1),
)
# Small dense ids, and sparse huge ones that push the kernel from dense indexing to sort-and-reduce.
series_ids = st.one_of(st.integers(0, 7), st.integers(0, 2**32 - 1))
samples = st.lists(st.tuples(series_ids, offsets, values), max_size=60)
widths = st.sampled_from([1, 1000, 1500, 5000, 60_000])


def columns(rows: list[tuple[int, int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    series = np.array([r[0] for r in rows], dtype=np.int64)
    ts = np.array([T0 + r[1] for r in rows], dtype=np.int64)
    value = np.array([r[2] for r in rows], dtype=np.float64)
    return series, ts, value


def check(partials: Partials, expected: dict) -> None:
    p = partials
    assert_rows_match(p.series, p.start, p.count, p.sum, p.min, p.max, expected)
    order = np.lexsort((p.series, p.start))
    assert np.array_equal(order, np.arange(len(p))), "rows are sorted by (start, series)"


@PROPERTY
@given(samples, widths)
def test_aggregate_matches_reference(rows: list[tuple[int, int, float]], width: int) -> None:
    series, ts, value = columns(rows)
    expected = group(
        (s, floor_start(t, width), v) for s, t, v in zip(series.tolist(), ts.tolist(), value.tolist(), strict=True)
    )
    check(aggregate(series, ts, value, width), expected)


@PROPERTY
@given(st.lists(samples, max_size=4), st.sampled_from([(1000, 60_000), (1000, 5000), (5000, 15_000)]))
def test_partials_merge_like_raw_samples(batches: list[list[tuple[int, int, float]]], widths: tuple[int, int]) -> None:
    """Partials of micro-batches, concatenated and merged, or reduced to a coarser width, equal aggregating
    all the samples at once."""
    fine, coarse = widths
    parts = [aggregate(*columns(rows), fine) for rows in batches]
    every = [row for rows in batches for row in rows]
    series, ts, value = columns(every)
    check(
        Partials.concat(parts).merge(),
        group(zip(series.tolist(), (ts // fine * fine).tolist(), value.tolist(), strict=True)),
    )
    merged = Partials.concat(parts)
    coarser = reduce_partials(merged, window_starts(merged.start, coarse))
    check(coarser, group(zip(series.tolist(), (ts // coarse * coarse).tolist(), value.tolist(), strict=True)))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40 * 86_400_000), values), min_size=1, max_size=80),
    st.sampled_from(["1d", "1w", "1mo"]),
    st.sampled_from(["Europe/Rome", "Asia/Kolkata", "Australia/Lord_Howe"]),
)
def test_minute_partials_reduce_into_calendar_buckets(rows: list[tuple[int, int, float]], unit: str, tz: str) -> None:
    """1 min windows nest in local days in every zone, so reducing them gives the raw samples' buckets."""
    series, ts, value = columns([(s, t - 20 * 86_400_000, v) for s, t, v in rows])
    minutes = aggregate(series, ts, value, 60_000)
    buckets = reduce_partials(minutes, calendar_bucket_starts(minutes.start, unit, tz))
    expected = group(zip(series.tolist(), calendar_bucket_starts(ts, unit, tz).tolist(), value.tolist(), strict=True))
    assert_rows_match(buckets.series, buckets.start, buckets.count, buckets.sum, buckets.min, buckets.max, expected)


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(-(2**50), 2**50), st.integers(1, 5), values, values),
        max_size=40,
    )
)
def test_reduce_partials_with_any_keys(rows: list[tuple[int, int, int, float, float]]) -> None:
    """Keys spread too far for a combined offset key (series up to 2**32, starts over 2**51 ms) are ranked."""
    series = np.array([r[0] for r in rows], dtype=np.int64)
    start = np.array([r[1] for r in rows], dtype=np.int64)
    count = np.array([r[2] for r in rows], dtype=np.int64)
    low = np.array([min(r[3], r[4]) for r in rows])
    high = np.array([max(r[3], r[4]) for r in rows])
    total = (low + high) / 2 * count
    merged = Partials(series, start, count, total, low, high).merge()
    keys = {(int(s), int(t)) for s, t in zip(series, start, strict=True)}
    assert sorted(zip(merged.start.tolist(), merged.series.tolist(), strict=True)) == sorted((t, s) for s, t in keys)
    for i in range(len(merged)):
        mine = (series == merged.series[i]) & (start == merged.start[i])
        assert merged.count[i] == count[mine].sum()
        assert merged.min[i] == low[mine].min() and merged.max[i] == high[mine].max()
        assert np.isclose(merged.sum[i], total[mine].sum(), rtol=1e-9, atol=1e-9 * np.abs(total[mine]).sum())


def test_window_boundaries_are_half_open() -> None:
    ts = np.array([T0 - 1, T0, T0 + 999, T0 + 1000], dtype=np.int64)
    assert window_starts(ts, 1000).tolist() == [T0 - 1000, T0, T0, T0 + 1000]
    p = aggregate(np.zeros(4, np.int64), ts, np.array([1.0, 2.0, 3.0, 4.0]), 1000)
    assert p.start.tolist() == [T0 - 1000, T0, T0 + 1000]
    assert p.count.tolist() == [1, 2, 1]
    assert p.avg.tolist() == [1.0, 2.5, 4.0]


def test_windows_before_the_epoch_floor_downwards() -> None:
    assert window_starts(np.array([-1, -1000, -1001], dtype=np.int64), 1000).tolist() == [-1000, -1000, -2000]


def test_empty_inputs() -> None:
    empty = np.empty(0, np.int64)
    assert len(aggregate(empty, empty, np.empty(0), 1000)) == 0
    assert len(Partials.concat([])) == 0
    assert len(reduce_partials(Partials.empty(), empty)) == 0


def test_bad_inputs_are_refused() -> None:
    one = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="same length"):
        aggregate(one, np.zeros(2, np.int64), np.zeros(1), 1000)
    with pytest.raises(ValueError, match="positive"):
        aggregate(one, one, np.zeros(1), 0)
    with pytest.raises(ValueError, match="equal length"):
        Partials(one, one, one, np.zeros(2), np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="one entry per"):
        reduce_partials(aggregate(one, one, np.zeros(1), 1000), np.zeros(2, np.int64))
