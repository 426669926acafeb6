"""The lane's WindowAggregator without Redis: which frames are folded, and the entries it queues."""

from __future__ import annotations

import numpy as np
import orjson

from ingest.aggregates import AggregationPolicy, WindowAggregator, resolution_label
from ingest.batch import IngestBatch
from ingest.frames import Samples
from ingest.ports import DeviceIdentity

DEVICE = DeviceIdentity("org_1", "pump-2")
START = 1_763_800_000_000 - 1_763_800_000_000 % 3_600_000


def point(ts: int, value: float) -> Samples:
    return Samples.point(ts, ("temp",), [value])


def payloads(aggregator: WindowAggregator, resolution: str) -> list[dict[str, object]]:
    return [orjson.loads(e.payload) for e in aggregator.pending if e.resolution == resolution]


def test_only_the_frames_the_script_stored_are_folded() -> None:
    aggregator = WindowAggregator(AggregationPolicy(idle_timeout_ms=1))
    batch = IngestBatch()
    # The store had seq 4: 3 and 4 are duplicates, 5 and 7 are new, the second 5 repeats one in the batch.
    for seq, value in ((3, 100.0), (4, 100.0), (5, 1.0), (5, 100.0), (7, 2.0)):
        batch.add(DEVICE, seq, b"telemetry", b"1", b"x", None, point(START + seq, value))
    columns = Samples(
        np.array([START + 10, START + 20], np.int64), np.array([0, 0], np.int32), np.array([3.0, 4.0]), ("temp",)
    )
    batch.add(DEVICE, 0, b"readings", b"1", b"x", None, columns)
    aggregator.fold(batch, {"org_1": {"pump-2": 4}}, now_ms=START)
    aggregator.close(START + 10)  # idle: everything closes
    (hour,) = payloads(aggregator, "1h")
    assert hour["metrics"] == {"temp": {"count": 4, "sum": 10.0, "min": 1.0, "max": 4.0, "avg": 2.5}}
    assert hour["device_id"] == "pump-2" and "corrected" not in hour


def test_one_entry_per_device_and_window_with_iso_bounds() -> None:
    aggregator = WindowAggregator(AggregationPolicy(idle_timeout_ms=1))
    batch = IngestBatch()
    batch.add(DEVICE, 1, b"telemetry", b"1", b"x", None, Samples.point(START + 1500, ("a", "b"), [1, 2.5]))
    aggregator.fold(batch, {"org_1": {"pump-2": 0}}, now_ms=START)
    aggregator.close(START + 10)
    (second,) = [e for e in aggregator.pending if e.resolution == "1s"]
    assert second.start_ms == START + 1000 and not second.corrected
    payload = orjson.loads(second.payload)
    assert payload["start"].endswith(":01.000Z") and payload["end"].endswith(":02.000Z")
    assert set(payload["metrics"]) == {"a", "b"}


def test_resolution_labels() -> None:
    assert [resolution_label(w) for w in (1_000, 10_000, 60_000, 3_600_000, 7_200_000)] == [
        "1s",
        "10s",
        "1m",
        "1h",
        "2h",
    ]
