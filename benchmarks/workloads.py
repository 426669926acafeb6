"""The ingest workloads: what each device sends, and which figures a run reports (BENCHMARKS.md).

A workload makes the MessagePack payload of a device's frame number ``index`` (``seq = index + 1``). The
frame at an index is the same for every device (each device is its own series, so identical bytes on two
connections are two distinct series), which lets a load generator process encode each frame once, before
the clock starts, and hand the same bytes to all of its devices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgpack
import numpy as np

__all__ = ["WORKLOADS", "Figure", "QuotedReference", "Workload", "columns_payload", "rows_payload"]

# Column frames: 1,000 samples of 4 metrics, one sample per millisecond.
COLUMN_SAMPLES = 1000
ROW_METRICS = ("temp", "hum", "pres")


@dataclass(frozen=True)
class Figure:
    """One figure a run reports: its key in the results, its label, its unit and how to read it."""

    key: str
    label: str
    unit: str
    higher_is_better: bool = True


FRAMES_PER_S = Figure("frames_per_s", "acked frames/s", "frames/s")
POINTS_PER_S = Figure("points_per_s", "data points/s", "points/s")
SAMPLES_PER_S = Figure("samples_per_s", "acked samples/s", "samples/s")
SERVER_US_PER_FRAME = Figure("server_cpu_us_per_frame", "server CPU µs/frame", "µs", higher_is_better=False)
LOADGEN_US_PER_FRAME = Figure("loadgen_cpu_us_per_frame", "load generator CPU µs/frame", "µs", False)


@dataclass(frozen=True)
class QuotedReference:
    """A figure someone published for a comparable setup: shown beside the measured rows, never run here."""

    name: str
    figures: dict[str, float]
    source: str


THINGSBOARD = (
    QuotedReference(
        "ThingsBoard + PostgreSQL (published, 2 vCPU)",
        {"frames_per_s": 1000, "points_per_s": 3000},
        "ThingsBoard performance tests: 1,000 msg/s = 3,000 data points/s on 2 vCPU with PostgreSQL",
    ),
    QuotedReference(
        "ThingsBoard + Kafka (published, 2 vCPU)",
        {"points_per_s": 15000},
        "ThingsBoard performance tests: 15,000 data points/s on 2 vCPU with Kafka",
    ),
)


def rows_payload(index: int, base_ts_ms: int) -> bytes:
    """``{"type": "telemetry", "seq", "ts", "metrics": {temp, hum, pres}}``: 3 data points, 1 timestamp."""
    wave = (index % 200) / 10.0
    frame = {
        "type": "telemetry",
        "seq": index + 1,
        "ts": base_ts_ms + index,
        "metrics": {"temp": 20.0 + wave, "hum": 40.0 + wave / 2, "pres": 1013.25 - wave / 4},
    }
    return msgpack.packb(frame)


_COLUMN_OFFSETS = np.arange(COLUMN_SAMPLES, dtype="<i8")
# name: (phase, amplitude, level) of a sine wave over the frame.
_COLUMN_WAVES = {
    "temp": (0.0, 5.0, 21.0),
    "hum": (1.0, 10.0, 45.0),
    "pres": (2.0, 3.0, 1013.0),
    "volt": (3.0, 0.2, 3.3),
}
_COLUMN_BASES = {
    name: (np.sin(np.linspace(0.0, 2 * np.pi, COLUMN_SAMPLES) + phase) * amplitude + level).astype("<f8")
    for name, (phase, amplitude, level) in _COLUMN_WAVES.items()
}


def columns_payload(index: int, base_ts_ms: int) -> bytes:
    """``{"type": "columns", "seq", "ts": bin int64 LE, "metrics": {name: bin float64 LE}}``, 1,000 x 4."""
    ts = _COLUMN_OFFSETS + (base_ts_ms + index * COLUMN_SAMPLES)
    drift = (index % 100) * 0.01
    frame = {
        "type": "columns",
        "seq": index + 1,
        "ts": ts.tobytes(),
        "metrics": {name: (values + drift).tobytes() for name, values in _COLUMN_BASES.items()},
    }
    return msgpack.packb(frame, use_bin_type=True)


@dataclass(frozen=True, kw_only=True)
class Workload:
    name: str
    description: str
    # Device connections the load is spread over.
    devices: int
    # What one frame carries: metric values (data points) and timestamps (samples).
    points_per_frame: int
    samples_per_frame: int
    # The MessagePack payload of frame ``index`` given the run's first timestamp.
    payload: Callable[[int, int], bytes]
    # Frames per device encoded before the clock starts; more are encoded (and counted) if a run needs them.
    prebuilt_frames: int
    # Figures in the order the table shows them; the first is the one the plot and the ratios use.
    figures: tuple[Figure, ...]
    # The peers that run this workload besides telehub and the floor.
    peers: tuple[str, ...]
    # Published figures quoted in the table, not run.
    quoted: tuple[QuotedReference, ...] = ()


WORKLOADS: dict[str, Workload] = {
    "ingest-rows": Workload(
        name="ingest-rows",
        description="1,000 devices send `telemetry` frames of 3 metrics as fast as acks allow",
        devices=1000,
        points_per_frame=len(ROW_METRICS),
        samples_per_frame=1,
        payload=rows_payload,
        prebuilt_frames=2000,
        figures=(FRAMES_PER_S, POINTS_PER_S, SERVER_US_PER_FRAME, LOADGEN_US_PER_FRAME),
        peers=("mosquitto",),
        quoted=THINGSBOARD,
    ),
    "ingest-columns": Workload(
        name="ingest-columns",
        description="100 devices send `columns` frames of 1,000 samples x 4 metrics (ts int64, values float64)",
        devices=100,
        points_per_frame=COLUMN_SAMPLES * len(_COLUMN_WAVES),
        samples_per_frame=COLUMN_SAMPLES,
        payload=columns_payload,
        prebuilt_frames=1000,
        figures=(SAMPLES_PER_S, FRAMES_PER_S, POINTS_PER_S, SERVER_US_PER_FRAME, LOADGEN_US_PER_FRAME),
        peers=("influxdb",),
    ),
}
