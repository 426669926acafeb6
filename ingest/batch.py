"""The columnar batch the ingest loop fills between flushes, grouped by organization and device.

Connections append decoded frames; the flusher takes the whole batch at once (``take``), writes it, and tells
each frame's :class:`AckTarget` the highest seq of its that is now durable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ingest.ports import DeviceIdentity

__all__ = ["AckTarget", "DeviceFrames", "IngestBatch", "PendingFrame"]


class AckTarget(Protocol):
    """Whoever waits for frames to be durable: a device session (acks) or an HTTP request."""

    def flushed(self, seq: int, count: int) -> None:
        """``count`` more of this target's frames are stored, the highest of them numbered ``seq``."""


@dataclass(slots=True)
class PendingFrame:
    # The device's seq; 0 for frames that carry none (command results, HTTP readings): always stored.
    seq: int
    kind: bytes
    binary: bool
    raw: bytes
    target: AckTarget | None


@dataclass(slots=True)
class DeviceFrames:
    frames: list[PendingFrame] = field(default_factory=list)


class IngestBatch:
    """Frames waiting for the next flush. Not thread-safe: one event loop owns it."""

    def __init__(self) -> None:
        self.orgs: dict[str, dict[str, DeviceFrames]] = {}
        self.frames = 0
        self.bytes = 0
        # Each target's highest seq and frame count so far, kept as frames are added (no pass at flush time).
        self.owed: dict[AckTarget, tuple[int, int]] = {}

    def add(self, device: DeviceIdentity, frame: PendingFrame) -> None:
        devices = self.orgs.get(device.org_id)
        if devices is None:
            devices = self.orgs[device.org_id] = {}
        pending = devices.get(device.device_id)
        if pending is None:
            pending = devices[device.device_id] = DeviceFrames()
        pending.frames.append(frame)
        self.frames += 1
        self.bytes += len(frame.raw)
        if frame.target is not None:
            seq, count = self.owed.get(frame.target, (0, 0))
            self.owed[frame.target] = (max(seq, frame.seq), count + 1)

    def take(self) -> IngestBatch:
        """Everything added so far, leaving this batch empty for the frames that arrive during the flush."""
        taken = IngestBatch()
        taken.orgs, taken.frames, taken.bytes, taken.owed = self.orgs, self.frames, self.bytes, self.owed
        self.orgs, self.frames, self.bytes, self.owed = {}, 0, 0, {}
        return taken
