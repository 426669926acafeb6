"""A lane's batches folded as runs (a columns frame's table at once) give exactly what the same batches
folded sample by sample give: every window, every correction, every late drop, batch after batch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.aggregates import AggregationPolicy, SampleColumns, WindowAggregator
from ingest.batch import IngestBatch
from ingest.frames import Samples
from ingest.ports import DeviceIdentity

START = 1_763_800_000_000 - 1_763_800_000_000 % 3_600_000
DEVICES = [DeviceIdentity("org_1", f"pump-{n}") for n in range(3)]
METRICS = ("temp", "hum", "door")


def columns_frame(ts: list[int], values: list[list[float]]) -> Samples:
    """As the codec makes it: metric-major, the timestamp column repeated per metric."""
    m, count = len(values), len(ts)
    samples = Samples(
        np.tile(np.array(ts, np.int64), m),
        np.arange(m, dtype=np.int32).repeat(count),
        np.array(values, np.float64).ravel(),
        METRICS[:m],
    )
    samples.timestamps = count
    return samples


# A frame: its device, and either one point or a columns table; timestamps are offsets from the batch's time.
offsets = st.integers(-45_000, 3_000)
# Timestamps within 100 ms: mostly inside one second (one unit), a frame folded as one run per metric.
one_unit = st.integers(-45_000, 2_900).flatmap(lambda t: st.lists(st.integers(t, t + 99), min_size=1, max_size=40))
value = st.integers(-50, 50).map(float)
point = st.tuples(st.just("point"), offsets, st.lists(value, min_size=1, max_size=3))
table = st.integers(1, 3).flatmap(
    lambda m: st.tuples(
        st.just("columns"),
        st.lists(offsets, min_size=1, max_size=40).map(sorted) | st.lists(offsets, min_size=1, max_size=40) | one_unit,
        st.lists(st.lists(value, min_size=m, max_size=m), min_size=1, max_size=1).map(lambda rows: rows[0]),
    )
)
frame = st.tuples(st.integers(0, len(DEVICES) - 1), st.one_of(point, table))
# A batch: how far time moves (ms), its frames.
batches = st.lists(st.tuples(st.integers(0, 4_000), st.lists(frame, max_size=6)), min_size=1, max_size=10)


def samples_of(kind: str, ts: object, values: list[float]) -> Samples:
    if kind == "point":
        return Samples.point(int(ts), METRICS[: len(values)], values)  # type: ignore[call-overload]
    stamps = list(ts)  # type: ignore[call-overload]
    return columns_frame(stamps, [[v + i for i in range(len(stamps))] for v in values])


@contextmanager
def sample_by_sample() -> Iterator[None]:
    with mock.patch.object(SampleColumns, "runs", lambda self, unit_ms: None):
        yield


def entries(aggregator: WindowAggregator) -> list[tuple[str, str, int, bool, dict[str, object]]]:
    out = [(e.device_id, e.resolution, e.start_ms, e.corrected, orjson.loads(e.payload)) for e in aggregator.pending]
    aggregator.pending = []
    return out


def run(steps: list, *, as_runs: bool) -> tuple[list[object], int]:
    policy = AggregationPolicy(resolutions_ms=(1_000, 10_000), retention_ms=(1, 1), idle_timeout_ms=5_000)
    aggregator = WindowAggregator(policy)
    log: list[object] = []
    now = START
    seqs = [0] * len(DEVICES)
    for delta, frames in steps:
        now += delta
        batch = IngestBatch()
        for device, (kind, ts, values) in frames:
            seqs[device] += 1
            stamps = now + ts if kind == "point" else [now + t for t in ts]
            batch.add(DEVICES[device], seqs[device], b"x", b"1", b"x", None, samples_of(kind, stamps, values))
        last_before = {"org_1": {d.device_id: 0 for d in DEVICES}}
        if as_runs:
            aggregator.fold(batch, last_before, now_ms=now)
        else:
            with sample_by_sample():
                aggregator.fold(batch, last_before, now_ms=now)
        log.append(entries(aggregator))
    aggregator.close(now + 60_000)
    log.append(entries(aggregator))
    return log, aggregator.state.late_dropped


@settings(max_examples=200, deadline=None)
@given(batches)
def test_folding_as_runs_equals_folding_sample_by_sample(steps: list) -> None:
    assert run(steps, as_runs=True) == run(steps, as_runs=False)


def test_a_columns_frame_reaches_the_state_as_a_few_runs() -> None:
    columns = SampleColumns()
    ts = [START + 999 + i for i in range(1_000)]  # 1 ms apart across a second's boundary: 2 runs per metric
    columns.add(7, [0, 1], columns_frame(ts, [[float(i) for i in range(1_000)], [1.0] * 1_000]))
    runs = columns.runs(1_000)
    assert runs is not None and len(runs) == 4
    assert runs.runs.counts().tolist() == [1, 999, 1, 999]
    assert runs.runs.sum.tolist() == [0.0, float(sum(range(1, 1_000))), 1.0, 999.0]
    assert runs.first_ts.tolist() == [START + 999, START + 1_000] * 2
    assert runs.device.tolist() == [7] * 4
    # Point frames alone stay on the sample path.
    points = SampleColumns()
    points.add(7, [0], Samples.point(START, ("temp",), [1.0]))
    assert points.runs(1_000) is None
