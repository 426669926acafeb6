"""Aggregation inside the ingest loop: the stored samples of every flush folded into time windows.

Each flusher lane owns one :class:`WindowAggregator` (a lane holds a fixed set of devices, so a device's
windows are written by one ordered sequence of round trips). After a write, the lane folds in the samples
of the frames the store script actually kept (never a duplicate: see ``fold``), closes what is due, and
queues the closed windows as :class:`WindowEntry`; its next round trip (or the idle tick) XADDs them to the
device's and the organization's aggregate stream of that resolution.

One entry per (device, resolution, window start) with the ``devices/{id}/aggregates/{resolution}`` channel
payload ``{device_id, start, end, metrics: {name: {count, sum, min, max, avg}}}`` (start/end ISO 8601 UTC,
as the REST ``readings/aggregate`` rows). A window that late samples changed is emitted again with
``corrected: true`` and only the metrics that changed: per (window, metric) the latest entry is the truth.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import orjson
from prometheus_client import Counter

from aggregation import DEFAULT_RESOLUTIONS_MS, ClosedWindows, WindowState
from aggregation.runs import BatchRuns, SampleRuns
from ingest import stream_keys
from ingest.batch import IngestBatch
from ingest.frames import Samples
from ingest.ports import DeviceIdentity

__all__ = ["AggregationPolicy", "MetricAggregate", "WindowAggregator", "WindowEntry", "iso_ms", "resolution_label"]

DAY_MS = 86_400_000

LATE_DROPPED = Counter(
    "telehub_aggregation_late_dropped_total", "samples too late to correct their window (stored, not aggregated)"
)
WINDOWS_WRITTEN = Counter("telehub_aggregation_windows_written_total", "closed window entries written")
# Entries of WindowAggregator's series cache before it starts again.
_SERIES_CACHE_MAX = 100_000

# name -> (count, sum, min, max): one window's aggregates of one metric.
MetricAggregate = tuple[int, float, float, float]


@dataclass(frozen=True, kw_only=True)
class AggregationPolicy:
    """Window widths, how long each resolution's streams keep entries, and the lateness rules of
    :class:`aggregation.WindowState`."""

    resolutions_ms: tuple[int, ...] = DEFAULT_RESOLUTIONS_MS
    # One per resolution: 1 s windows for a day, 1 min for 30 days, 1 h for a year.
    retention_ms: tuple[int, ...] = (DAY_MS, 30 * DAY_MS, 365 * DAY_MS)
    allowed_lateness_ms: int = 5_000
    late_horizon_ms: int = 30_000
    idle_timeout_ms: int = 10_000
    # How often a lane with nothing to write closes windows that are due anyway (idle devices).
    tick_s: float = 1.0

    def __post_init__(self) -> None:
        if len(self.retention_ms) != len(self.resolutions_ms):
            raise ValueError("give one retention per aggregate resolution")
        if any(r % 1000 for r in self.resolutions_ms):
            raise ValueError("aggregate resolutions must be whole seconds")


def resolution_label(width_ms: int) -> str:
    """``1000`` -> ``1s``, ``60000`` -> ``1m``, ``3600000`` -> ``1h``: the channel's ``{resolution}``."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if width_ms % size == 0:
            return f"{width_ms // size}{unit}"
    return f"{width_ms}ms"


@functools.lru_cache(maxsize=4096)
def iso_ms(ms: int) -> str:
    """``1763800000123`` -> ``'2025-11-22T08:26:40.123Z'`` (the contract's REST timestamp form). Cached: the
    windows closing together share their bounds, device after device."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class WindowEntry:
    """One closed window of one device at one resolution, ready to XADD (fields d, s, c, p)."""

    org_id: str
    device_id: str
    resolution: str
    start_ms: int
    corrected: bool
    # The channel payload, JSON.
    payload: bytes
    retention_ms: int

    @property
    def device_key(self) -> str:
        return stream_keys.device_aggregates(self.org_id, self.device_id, self.resolution)

    @property
    def org_key(self) -> str:
        return stream_keys.org_aggregates(self.org_id, self.resolution, stream_keys.partition_of(self.device_id))

    @property
    def corrected_flag(self) -> bytes:
        return b"1" if self.corrected else b"0"


class WindowAggregator:
    """One lane's window state, the dense ids it needs, and the closed windows waiting to be written."""

    def __init__(self, policy: AggregationPolicy | None = None) -> None:
        self.policy = policy or AggregationPolicy()
        self.state = WindowState(
            self.policy.resolutions_ms,
            allowed_lateness_ms=self.policy.allowed_lateness_ms,
            late_horizon_ms=self.policy.late_horizon_ms,
            idle_timeout_ms=self.policy.idle_timeout_ms,
        )
        self._labels = {width: resolution_label(width) for width in self.policy.resolutions_ms}
        self._retention = dict(zip(self.policy.resolutions_ms, self.policy.retention_ms, strict=True))
        # Dense ids: device identity <-> int, (device int, metric name) <-> series int.
        self._device_ids: dict[DeviceIdentity, int] = {}
        self.devices: list[DeviceIdentity] = []
        self._series_ids: dict[tuple[int, str], int] = {}
        self._metric_names: list[str] = []
        # (device int, a frame's metric names) -> their series ints: frames of a device mostly repeat theirs.
        self._series_of_names: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        # Closed windows not yet written.
        self.pending: list[WindowEntry] = []

    def knows(self, device: DeviceIdentity) -> bool:
        return device in self._device_ids

    def device_id(self, device: DeviceIdentity) -> int:
        number = self._device_ids.get(device)
        if number is None:
            number = self._device_ids[device] = len(self.devices)
            self.devices.append(device)
        return number

    def series_ids(self, device: int, names: Iterable[str]) -> list[int]:
        ids = []
        for name in names:
            number = self._series_ids.get((device, name))
            if number is None:
                number = self._series_ids[(device, name)] = len(self._metric_names)
                self._metric_names.append(name)
            ids.append(number)
        return ids

    def metric_name(self, series: int) -> str:
        return self._metric_names[series]

    # Folding and closing.

    def fold(self, batch: IngestBatch, last_before: dict[str, dict[str, int]], *, now_ms: int) -> None:
        """Aggregate the frames of ``batch`` that were stored, then close what is due.

        Stored frames are found by replaying the store script's rule on its reply (each device's last seq
        before the write): a frame was stored iff its seq is 0 or above the highest seq so far. So a resent
        frame is aggregated exactly when it is stored: once."""
        columns = SampleColumns()
        series_of = self._series_of_names
        if len(series_of) > _SERIES_CACHE_MAX:
            series_of.clear()
        for org_id, devices in batch.stored_telemetry(last_before).items():
            for device_id, kept in devices.items():
                number = self.device_id(DeviceIdentity(org_id, device_id))
                for samples in kept:
                    series = series_of.get((number, samples.names))
                    if series is None:
                        series = series_of[(number, samples.names)] = self.series_ids(number, samples.names)
                    columns.add(number, series, samples)
        self.add(columns, now_ms=now_ms)
        self.close(now_ms)

    def add(self, columns: SampleColumns, *, now_ms: int) -> None:
        if columns.size:
            dropped = self.state.late_dropped
            runs = columns.runs(self.state.unit_ms)
            if runs is None:
                self.state.add(*columns.arrays(), now_ms=now_ms)
            else:
                self.state.add_runs(runs, now_ms=now_ms, samples=columns.arrays)
            if self.state.late_dropped > dropped:
                LATE_DROPPED.inc(self.state.late_dropped - dropped)

    def close(self, now_ms: int) -> None:
        """Close the windows due now and queue them."""
        for width, closed in self.state.close(now_ms).items():
            self.pending += self.entries(width, closed)

    def entries(self, width: int, closed: ClosedWindows) -> list[WindowEntry]:
        """One entry per (device, window start) of ``closed`` (sorted by device, start, series)."""
        entries = []
        key: tuple[int, int] | None = None
        metrics: dict[str, MetricAggregate] = {}
        corrected = False
        for device, start, series, count, total, low, high, fixed in closed.rows():
            if (device, start) != key:
                if key is not None:
                    entries.append(self.entry(*key, width, metrics, corrected=corrected))
                key, metrics, corrected = (device, start), {}, False
            metrics[self._metric_names[series]] = (count, total, low, high)
            corrected = corrected or fixed
        if key is not None:
            entries.append(self.entry(*key, width, metrics, corrected=corrected))
        return entries

    def entry(
        self, device: int, start: int, width: int, metrics: dict[str, MetricAggregate], *, corrected: bool
    ) -> WindowEntry:
        """The stream entry of one window of ``device`` (its dense number): the channel payload."""
        identity = self.devices[device]
        payload: dict[str, object] = {
            "device_id": identity.device_id,
            "start": iso_ms(start),
            "end": iso_ms(start + width),
            "metrics": {
                name: {"count": count, "sum": total, "min": low, "max": high, "avg": total / count}
                for name, (count, total, low, high) in metrics.items()
            },
        }
        if corrected:
            payload["corrected"] = True
        return WindowEntry(
            identity.org_id,
            identity.device_id,
            self._labels[width],
            start,
            corrected,
            orjson.dumps(payload),
            self._retention[width],
        )


class SampleColumns:
    """Samples of many frames gathered for one ``WindowState`` fold: one-point frames as Python lists (no
    arrays per frame), larger frames as their ``Samples``. With a columns frame among them the batch goes to
    the state as runs (``runs``): each columns frame is folded on its own table of M metrics x T timestamps,
    which shares one timestamp column, so its samples are never gathered one by one."""

    __slots__ = ("_arrays", "_device", "_frames", "_series", "_ts", "_value", "size")

    def __init__(self) -> None:
        self._device: list[int] = []
        self._series: list[int] = []
        self._ts: list[int] = []
        self._value: list[float] = []
        self._frames: list[tuple[int, list[int], Samples]] = []
        self._arrays: list[Columns] = []
        self.size = 0

    def add(self, device: int, series: list[int], samples: Samples, keep_from: int | None = None) -> None:
        """A frame's samples; with ``keep_from``, only those at or after that timestamp."""
        point = samples.lazy_point
        if point is not None and keep_from is None:
            ts, values = point
            n = len(values)
            self._device += [device] * n
            self._series += series
            self._ts += [ts] * n
            self._value += values
            self.size += n
        elif keep_from is None:
            self._frames.append((device, series, samples))
            self.size += len(samples)
        else:
            device_of, series_of, ts_column, value = _frame_columns(device, series, samples)
            keep = ts_column >= keep_from
            self._arrays.append((device_of[keep], series_of[keep], ts_column[keep], value[keep]))
            self.size += int(np.count_nonzero(keep))

    def arrays(self) -> Columns:
        parts = list(self._arrays) + [_frame_columns(*frame) for frame in self._frames]
        if self._ts:
            parts.append(
                (
                    np.array(self._device, np.int64),
                    np.array(self._series, np.int64),
                    np.array(self._ts, np.int64),
                    np.array(self._value, np.float64),
                )
            )
        if len(parts) == 1:
            return parts[0]
        device, series, ts, value = (np.concatenate(column) for column in zip(*parts, strict=True))
        return device, series, ts, value

    def runs(self, unit_ms: int) -> BatchRuns | None:
        """The samples as runs of one series in one ``unit_ms`` (``WindowState.unit_ms``), or None where no
        columns frame is among them (then runs would not pay) or some frame was cut by ``keep_from``."""
        if self._arrays or not any(samples.timestamps is not None for _, _, samples in self._frames):
            return None
        tables: dict[tuple[int, int], list[tuple[int, list[int], Samples]]] = {}
        parts = []
        for frame in self._frames:
            samples = frame[2]
            if samples.timestamps is None:
                parts.append(_single_runs(*_frame_columns(*frame), unit_ms))
            else:
                tables.setdefault((len(samples.names), samples.timestamps), []).append(frame)
        parts += (_table_runs(frames, unit_ms) for frames in tables.values())
        if self._ts:
            ts = np.array(self._ts, np.int64)
            value = np.array(self._value, np.float64)
            parts.append(
                _single_runs(np.array(self._device, np.int64), np.array(self._series, np.int64), ts, value, unit_ms)
            )
        return BatchRuns.concat(parts)


Columns = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]


def _frame_columns(device: int, series: list[int], samples: Samples) -> Columns:
    ts = samples.ts
    return (
        np.full(ts.size, device, np.int64),
        np.asarray(series, np.int64)[samples.metric],
        ts.astype(np.int64, copy=False),
        samples.value,
    )


def _table_runs(frames: list[tuple[int, list[int], Samples]], unit_ms: int) -> BatchRuns:
    """The runs of columns frames of one shape (M metrics x T timestamps), all at once: F frames make an
    F x M x T block of values over an F x T block of timestamps. A frame's unit boundaries split each of its
    M rows alike; a run never crosses a row's end (every frame starts a run). Runs come frame by frame, metric
    by metric, in time order within a row: what folding the frames one by one gave, in a fixed number of
    numpy calls per batch rather than per frame."""
    first = frames[0][2]
    metrics, count = len(first.names), first.timestamps
    assert count is not None
    number = len(frames)
    ts = np.stack([samples.column_ts for _, _, samples in frames]).astype(np.int64, copy=False)
    values = np.stack([samples.value for _, _, samples in frames]).ravel()
    unit_index = ts // unit_ms
    change = np.empty((number, count), np.bool_)
    change[:, 0] = True
    np.not_equal(unit_index[:, 1:], unit_index[:, :-1], out=change[:, 1:])
    # A run per frame and unit (positions in F x T), then per frame, metric and unit (positions in F x M x T).
    frame_starts = np.flatnonzero(change)
    row_starts = np.flatnonzero(np.broadcast_to(change[:, None, :], (number, metrics, count)))
    row = row_starts // count
    frame_of = row // metrics
    frame_run = np.searchsorted(frame_starts, frame_of * count + (row_starts - row * count))
    lengths = np.empty(frame_starts.size, np.int64)
    np.subtract(frame_starts[1:], frame_starts[:-1], out=lengths[:-1])
    lengths[-1] = number * count - frame_starts[-1]
    flat_ts = ts.ravel()
    return BatchRuns(
        np.array([device for device, _, _ in frames], np.int64)[frame_of],
        SampleRuns(
            np.array([series for _, series, _ in frames], np.int64).ravel()[row],
            unit_index.ravel()[frame_starts][frame_run],
            lengths[frame_run],
            np.add.reduceat(values, row_starts),
            np.minimum.reduceat(values, row_starts),
            np.maximum.reduceat(values, row_starts),
        ),
        np.minimum.reduceat(flat_ts, frame_starts)[frame_run],
        np.maximum.reduceat(flat_ts, frame_starts)[frame_run],
    )


def _single_runs(
    device: npt.NDArray[np.int64],
    series: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    value: npt.NDArray[np.float64],
    unit_ms: int,
) -> BatchRuns:
    """Samples as runs of one sample each."""
    return BatchRuns(device, SampleRuns(series, ts // unit_ms, None, value, value, value), ts, ts)
