"""Decoded device frames: what ``ingest.codec.decode_frame`` hands to the ingest loop (API.md §4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["CommandResultFrame", "DeviceFrame", "EventFrame", "Samples", "TelemetryFrame"]


class Samples:
    """One frame's data points in columnar long format: sample ``i`` is ``(ts[i], names[metric[i]], value[i])``.

    A columns frame of T timestamps and M metrics gives n = T*M samples, metric-major (all of metric 0, then
    metric 1, ...); telemetry frames give theirs in the order received. Treat the arrays as read-only: some
    are views of immutable buffers (a binary column's bytes, a shared index) and refuse writes. Equality is
    identity (arrays do not compare to one bool): compare the fields with numpy.

    A one-point frame (``metrics``, the common small frame) keeps its timestamp and values as Python objects
    and builds the arrays only when they are first read: the ingest loop stores most frames without ever
    looking at them as arrays, and three small arrays cost more than the rest of decoding such a frame.
    """

    __slots__ = ("_column_ts", "_metric", "_point", "_ts", "_value", "names", "timestamps")

    def __init__(
        self,
        ts: npt.NDArray[np.int64],
        metric: npt.NDArray[np.int32],
        value: npt.NDArray[np.float64],
        names: tuple[str, ...],
    ) -> None:
        self._ts, self._metric, self._value = ts, metric, value
        # Distinct metric names, in the order first seen in the frame.
        self.names = names
        self._point: tuple[int, list[Any]] | None = None
        self._column_ts: npt.NDArray[np.int64] | None = None
        # A columns frame's T: every metric over the same T timestamps (``ts[:T]``), so ``value`` is an M x T
        # table; None for other frames.
        self.timestamps: int | None = None

    @classmethod
    def table(cls, ts: npt.NDArray[np.int64], value: npt.NDArray[np.float64], names: tuple[str, ...]) -> Samples:
        """A columns frame: T timestamps and M x T values (metric-major). ``ts`` and ``metric`` per sample are
        built only when first read: the ingest loop reads the T timestamps (``column_ts``) and the values."""
        samples = cls(ts, _NO_METRICS, value, names)
        samples._column_ts = ts
        samples.timestamps = len(ts)
        return samples

    @property
    def column_ts(self) -> npt.NDArray[np.int64]:
        """A columns frame's T timestamps (``ts[:T]``), without building ``ts``."""
        if self._column_ts is not None:
            return self._column_ts
        return self.ts[: self.timestamps]

    @classmethod
    def point(cls, ts: int, names: tuple[str, ...], values: list[Any]) -> Samples:
        """One data point: ``values[i]`` of metric ``names[i]`` at ``ts`` (finite numbers, checked)."""
        samples = cls.__new__(cls)
        samples.names = names
        samples._point = (ts, values)
        samples._column_ts = None
        samples.timestamps = None
        return samples

    @property
    def lazy_point(self) -> tuple[int, list[Any]] | None:
        """``(ts, values)`` of a one-point frame whose arrays were never built, else None: lets a reader of
        many small frames gather them into one array of its own instead of three small arrays per frame."""
        return self._point

    # Milliseconds since the epoch; int64, shape (n,).
    @property
    def ts(self) -> npt.NDArray[np.int64]:
        if self._column_ts is not None:
            self._spread_table()
        self._materialize()
        return self._ts

    # Index into ``names``; int32, shape (n,).
    @property
    def metric(self) -> npt.NDArray[np.int32]:
        if self._column_ts is not None:
            self._spread_table()
        self._materialize()
        return self._metric

    # Finite values, booleans as 1.0/0.0; float64, shape (n,).
    @property
    def value(self) -> npt.NDArray[np.float64]:
        self._materialize()
        return self._value

    def __len__(self) -> int:
        return len(self.names) if self._point is not None else len(self._value)

    def _spread_table(self) -> None:
        ts, m = self._column_ts, len(self.names)
        assert ts is not None
        self._ts = np.tile(ts, m)
        self._metric = np.arange(m, dtype=np.int32).repeat(len(ts))
        self._column_ts = None

    def _materialize(self) -> None:
        if self._point is None:
            return
        ts, values = self._point
        n = len(values)
        self._ts = np.full(n, ts, dtype=np.int64)
        self._metric = np.arange(n, dtype=np.int32)
        self._value = np.array(values, dtype=np.float64)
        self._point = None


_NO_METRICS: npt.NDArray[np.int32] = np.empty(0, dtype=np.int32)


# Frames are not frozen dataclasses: a frozen one's __init__ costs three times as much (object.__setattr__ per
# field), once per frame on the ingest path. Nothing changes a frame after decoding.
@dataclass(slots=True)
class TelemetryFrame:
    """A ``telemetry`` (metrics or points) or ``columns`` frame, or an HTTP ``readings`` body (seq 0)."""

    seq: int
    kind: Literal["telemetry", "columns", "readings"]
    samples: Samples
    # The frame exactly as received: MessagePack bytes, or the UTF-8 of the JSON text.
    raw: bytes
    # True for a binary (MessagePack) message, False for a text (JSON) one.
    binary: bool
    # A columns frame whose ts and metric columns all arrived as little-endian bytes (not number lists): it
    # can be stored packed and restored field for field (ingest/at_rest.py).
    bin_columns: bool = False


@dataclass(slots=True)
class EventFrame:
    """An ``event`` frame; ``data`` is None when absent and is JSON-compatible."""

    seq: int
    ts: int
    name: str
    data: Any
    raw: bytes
    binary: bool


@dataclass(slots=True)
class CommandResultFrame:
    """A ``command_result`` frame (no seq: a command is answered once, by its id)."""

    command_id: str
    status: Literal["completed", "failed"]
    result: Any
    error: str | None
    raw: bytes
    binary: bool


DeviceFrame: TypeAlias = TelemetryFrame | EventFrame | CommandResultFrame
