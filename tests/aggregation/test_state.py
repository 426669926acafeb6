"""WindowState across micro-batches against a reference that applies its rules one sample at a time."""

from __future__ import annotations

from dataclasses import dataclass
from unittest import mock

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from aggregation import ClosedWindows, WindowState
from aggregation import runs as window_runs
from tests.aggregation.reference import Aggregate, WindowReference, close_enough

T0 = 1_800_000_000_000
METRICS_PER_DEVICE = 2


def device_of(series: int) -> int:
    return series // METRICS_PER_DEVICE


@dataclass
class Emission:
    close_number: int
    now: int
    width: int
    row: dict[str, int | float | bool]


def emissions(closed: dict[int, ClosedWindows], close_number: int, now: int) -> list[Emission]:
    found = []
    for width, windows in closed.items():
        names = ("series", "device", "start", "end", "count", "sum", "min", "max", "corrected")
        columns = {name: getattr(windows, name).tolist() for name in names}
        for i in range(len(windows)):
            found.append(Emission(close_number, now, width, {name: columns[name][i] for name in names}))
    return found


def add(state: WindowState, reference: WindowReference, rows: list[tuple[int, int, float]], now: int) -> None:
    """rows: (series, ts, value); each series belongs to device series // 2."""
    samples = [(device_of(s), s, t, v) for s, t, v in rows]
    reference.add(samples, now)
    state.add(
        np.array([d for d, _, _, _ in samples], dtype=np.int64),
        np.array([s for _, s, _, _ in samples], dtype=np.int64),
        np.array([t for _, _, t, _ in samples], dtype=np.int64),
        np.array([v for _, _, _, v in samples], dtype=np.float64),
        now_ms=now,
    )


def same(row: dict[str, int | float | bool], want: Aggregate) -> bool:
    return (
        row["count"] == want.count
        and row["min"] == want.min
        and row["max"] == want.max
        and close_enough(float(row["sum"]), want)
    )


# A step: how far processing time moves, the samples added then (None: only a close), whether to close.
offsets = st.one_of(
    st.integers(0, 16_000),
    st.integers(0, 16).map(lambda k: k * 1000),
    st.integers(1, 16).map(lambda k: k * 1000 - 1),
)
# A sample's time: T0 + an offset, or a delay behind T0 + processing time, as live devices send.
sample_time = st.one_of(st.tuples(st.just("at"), offsets), st.tuples(st.just("behind"), st.integers(-500, 7000)))
sample = st.tuples(st.integers(0, 3), sample_time, st.integers(-50, 50).map(float))
step = st.tuples(st.integers(0, 2500), st.none() | st.lists(sample, max_size=20), st.booleans())


def sample_ts(when: tuple[str, int], now: int) -> int:
    kind, amount = when
    return T0 + amount if kind == "at" else T0 + now - amount


configs = st.tuples(
    st.sampled_from([(1000,), (1000, 5000), (2000, 6000)]),
    st.sampled_from([0, 1000, 2500]),  # allowed lateness
    st.sampled_from([0, 1500, 4000]),  # late horizon
    st.sampled_from([700, 2000]),  # idle timeout
)


@settings(max_examples=250, deadline=None)
@given(configs, st.lists(step, min_size=1, max_size=12))
def test_emissions_match_reference(config: tuple, steps: list) -> None:
    check_against_reference(config, steps)


@settings(max_examples=250, deadline=None)
@given(configs, st.lists(step, min_size=1, max_size=12))
def test_emissions_match_reference_when_samples_are_folded_as_runs(config: tuple, steps: list) -> None:
    """Every batch collapsed into runs (one series, one window), as columns frames are: samples sorted by series
    so that runs form, and the thresholds that keep small or run-less batches sample by sample set aside."""
    in_runs = [(delta, rows and sorted(rows, key=lambda r: r[0]), close) for delta, rows, close in steps]
    with (
        mock.patch.object(window_runs, "MIN_SAMPLES_TO_COLLAPSE", 1),
        mock.patch.object(window_runs, "MAX_RUN_SHARE", 1.0),
    ):
        check_against_reference(config, in_runs)


def check_against_reference(config: tuple, steps: list) -> None:
    resolutions, lateness, horizon, idle = config
    state = WindowState(resolutions, allowed_lateness_ms=lateness, late_horizon_ms=horizon, idle_timeout_ms=idle)
    reference = WindowReference(resolutions, lateness, horizon, idle)
    log: list[Emission] = []
    latest: dict[tuple[int, int, int], Emission] = {}
    now = 0
    for number, (delta, rows, close) in enumerate(steps):
        now += delta
        if rows is not None:
            add(state, reference, [(series, sample_ts(when, now), value) for series, when, value in rows], now)
        if rows is not None and not close:
            continue
        emitted = emissions(state.close(now), number, now)
        log += emitted
        for e in emitted:
            row = e.row
            assert row["end"] == row["start"] + e.width and row["device"] == device_of(int(row["series"]))
            key = (e.width, int(row["series"]), int(row["start"]))
            # Nothing is emitted before it is due (by watermark, or because its device went idle).
            assert reference.due(e.width, int(row["device"]), int(row["start"]), now), row
            latest[key] = e
        # Everything due by now has been emitted, with every sample not dropped so far.
        for (width, series, start), want in reference.windows().items():
            if reference.due(width, device_of(series), start, now):
                assert (width, series, start) in latest, (width, series, start)
                assert same(latest[(width, series, start)].row, want), (latest[(width, series, start)].row, want)
    # In the end every device goes idle: the latest emission of each window is the reference.
    final = emissions(state.close(now + idle + 10**9), len(steps), now)
    for e in final:
        latest[(e.width, int(e.row["series"]), int(e.row["start"]))] = e
    log += final
    expected = reference.windows()
    assert set(latest) == set(expected)
    for key, want in expected.items():
        assert same(latest[key].row, want), (key, latest[key].row, want)
    assert state.late_dropped == reference.dropped
    event(f"late samples dropped: {min(state.late_dropped, 1)}")
    event(f"corrected emissions: {min(sum(bool(e.row['corrected']) for e in log), 1)}")
    assert all(len(state.open_windows(width)) == 0 for width in resolutions)
    # Each window is emitted once uncorrected at most, and only as its first emission.
    seen: set[tuple[int, int, int]] = set()
    for e in log:
        key = (e.width, int(e.row["series"]), int(e.row["start"]))
        assert e.row["corrected"] or key not in seen, key
        seen.add(key)


def make_state(**kwargs: int) -> WindowState:
    return WindowState(
        (1000,), **{"allowed_lateness_ms": 1000, "late_horizon_ms": 3000, "idle_timeout_ms": 5000, **kwargs}
    )


def put(state: WindowState, device: int, series: int, ts: list[int], now: int, value: float = 1.0) -> None:
    n = len(ts)
    state.add(
        np.full(n, device, np.int64),
        np.full(n, series, np.int64),
        np.array(ts, np.int64),
        np.full(n, value),
        now_ms=now,
    )


def rows(closed: dict[int, ClosedWindows]) -> list[tuple[int, int, int, bool]]:
    w = closed[1000]
    return list(zip(w.series.tolist(), (w.start - T0).tolist(), w.count.tolist(), w.corrected.tolist(), strict=True))


def test_window_closes_when_the_watermark_reaches_its_end() -> None:
    state = make_state()
    put(state, 0, 0, [T0, T0 + 500], now=0)
    put(state, 0, 0, [T0 + 1999], now=10)  # watermark T0 + 999: window [T0, T0 + 1000) not yet due
    assert rows(state.close(10)) == []
    put(state, 0, 0, [T0 + 2000], now=20)  # watermark T0 + 1000 = the window's end
    assert rows(state.close(20)) == [(0, 0, 2, False)]
    assert rows(state.close(30)) == []


def test_idle_timeout_closes_the_windows_of_a_quiet_device() -> None:
    state = make_state()
    put(state, 0, 0, [T0 + 100], now=1_000)
    put(state, 1, 2, [T0 + 100, T0 + 9_000], now=1_000)
    assert rows(state.close(5_999)) == [(2, 0, 1, False)]  # device 1's watermark closed its first window
    closed = rows(state.close(6_000))
    assert closed == [(0, 0, 1, False), (2, 9_000, 1, False)]
    assert rows(state.close(60_000)) == []


def test_late_sample_within_horizon_corrects_the_window() -> None:
    state = make_state()
    put(state, 0, 0, [T0 + 100], now=0, value=2.0)
    put(state, 0, 0, [T0 + 2_500], now=10)
    assert rows(state.close(10)) == [(0, 0, 1, False)]
    put(state, 0, 0, [T0 + 900], now=20, value=4.0)  # late: its window closed; within the 3 s horizon
    closed = state.close(20)[1000]
    assert (closed.start.tolist(), closed.count.tolist(), closed.corrected.tolist()) == ([T0], [2], [True])
    assert closed.sum.tolist() == [6.0] and closed.avg.tolist() == [3.0]
    assert state.late_dropped == 0


def test_in_a_batch_of_runs_each_run_is_late_or_not_by_its_own_device() -> None:
    state = make_state()
    put(state, 0, 0, [T0 + 100], now=0, value=2.0)
    put(state, 0, 0, [T0 + 2_500], now=10)
    put(state, 1, 1, [T0 + 100], now=10)
    assert rows(state.close(10)) == [(0, 0, 1, False)]  # device 0's first window closed; device 1's open
    # One batch of two runs of 100 samples (folded as runs): device 1's on time, then device 0's late.
    n = 100
    state.add(
        np.repeat(np.array([1, 0], np.int64), n),
        np.repeat(np.array([1, 0], np.int64), n),
        np.repeat(np.array([T0 + 200, T0 + 900], np.int64), n),
        np.full(2 * n, 1.0),
        now_ms=20,
    )
    assert rows(state.close(20)) == [(0, 0, 1 + n, True)]  # the correction of device 0's closed window
    assert rows(state.close(60_000)) == [(0, 2_000, 1, False), (1, 0, 1 + n, False)]


def test_samples_older_than_the_horizon_are_counted_not_aggregated() -> None:
    state = make_state()
    put(state, 0, 0, [T0 + 10_000], now=0)
    put(state, 0, 0, [T0 + 5_999, T0 + 6_000, T0 + 100], now=10)  # bound: 10,000 - 1,000 - 3,000
    assert state.late_dropped == 2
    closed = state.close(10)[1000]
    assert (closed.start - T0).tolist() == [6_000] and closed.corrected.tolist() == [False]


def test_a_window_closed_by_idleness_reopens_and_is_emitted_again_as_corrected() -> None:
    state = make_state()
    put(state, 0, 0, [T0 + 100], now=0)
    assert rows(state.close(5_000)) == [(0, 0, 1, False)]
    put(state, 0, 0, [T0 + 200], now=6_000)  # same window: the watermark has not passed it
    assert rows(state.close(6_000)) == []
    assert state.open_windows(1000).count.tolist() == [2]
    put(state, 0, 0, [T0 + 3_000], now=6_100)
    assert rows(state.close(6_100)) == [(0, 0, 2, True)]


def test_state_stays_bounded_over_a_long_stream() -> None:
    state = WindowState((1000, 60_000), allowed_lateness_ms=2000, late_horizon_ms=5000)
    rng = np.random.default_rng(1)
    series = np.arange(50, dtype=np.int64)
    emitted, windows = 0, set()
    for tick in range(600):  # 10 minutes at 1 Hz, out of order within the lateness
        ts = T0 + tick * 1000 + rng.integers(-1500, 0, series.size)
        windows.update(zip(series.tolist(), (ts // 1000).tolist(), strict=True))
        state.add(series // 5, series, ts, rng.normal(size=series.size), now_ms=tick * 1000)
        emitted += len(state.close(tick * 1000)[1000])
        assert len(state.open_windows(1000)) <= 50 * 5
        assert len(state.open_windows(60_000)) <= 50 * 2
    emitted += len(state.close(10**9)[1000])
    assert emitted == len(windows) and state.late_dropped == 0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="resolutions"):
        WindowState((1000, 1000))
    with pytest.raises(ValueError, match="resolutions"):
        WindowState((0,))
    with pytest.raises(ValueError, match="idle timeout"):
        WindowState(idle_timeout_ms=0)
    state = WindowState()
    one = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="equal length"):
        state.add(one, one, np.zeros(2, np.int64), np.zeros(1), now_ms=0)
    with pytest.raises(ValueError, match="device ids"):
        state.add(one - 1, one, one, np.zeros(1), now_ms=0)
    with pytest.raises(ValueError, match="series ids"):
        state.add(one, one + 2**32, one, np.zeros(1), now_ms=0)
    state.add(one, one, one + T0, np.zeros(1), now_ms=0)
    with pytest.raises(ValueError, match="too far"):
        state.add(one, one, one + 2**31 * 1000 + T0, np.zeros(1), now_ms=0)
    state.add(one[:0], one[:0], one[:0], np.zeros(0), now_ms=0)
    assert len(state.close(0)[1000]) == 0
