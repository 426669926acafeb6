"""Decoded device frames: what ``ingest.codec.decode_frame`` hands to the ingest loop (API.md §4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["CommandResultFrame", "DeviceFrame", "EventFrame", "Samples", "TelemetryFrame"]


@dataclass(frozen=True, slots=True, eq=False)
class Samples:
    """One frame's data points in columnar long format: sample ``i`` is ``(ts[i], names[metric[i]], value[i])``.

    A columns frame of T timestamps and M metrics gives n = T*M samples, metric-major (all of metric 0, then
    metric 1, ...); telemetry frames give theirs in the order received. Treat the arrays as read-only: some
    are views of immutable buffers (a binary column's bytes, a shared index) and refuse writes. Equality is
    identity (arrays do not compare to one bool): compare the fields with numpy.
    """

    # Milliseconds since the epoch; int64, shape (n,).
    ts: npt.NDArray[np.int64]
    # Index into ``names``; int32, shape (n,).
    metric: npt.NDArray[np.int32]
    # Finite values, booleans as 1.0/0.0; float64, shape (n,).
    value: npt.NDArray[np.float64]
    # Distinct metric names, in the order first seen in the frame.
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.value)


@dataclass(frozen=True, slots=True)
class TelemetryFrame:
    """A ``telemetry`` (metrics or points) or ``columns`` frame, or an HTTP ``readings`` body (seq 0)."""

    seq: int
    kind: Literal["telemetry", "columns", "readings"]
    samples: Samples
    # The frame exactly as received: MessagePack bytes, or the UTF-8 of the JSON text.
    raw: bytes
    # True for a binary (MessagePack) message, False for a text (JSON) one.
    binary: bool


@dataclass(frozen=True, slots=True)
class EventFrame:
    """An ``event`` frame; ``data`` is None when absent and is JSON-compatible."""

    seq: int
    ts: int
    name: str
    data: Any
    raw: bytes
    binary: bool


@dataclass(frozen=True, slots=True)
class CommandResultFrame:
    """A ``command_result`` frame (no seq: a command is answered once, by its id)."""

    command_id: str
    status: Literal["completed", "failed"]
    result: Any
    error: str | None
    raw: bytes
    binary: bool


DeviceFrame: TypeAlias = TelemetryFrame | EventFrame | CommandResultFrame
