"""The columnar batch the ingest loop fills between flushes, grouped by organization and device.

Connections append decoded frames; the flusher takes the whole batch at once (``take``), writes it, and tells
each frame's :class:`AckTarget` the highest seq of its that is now durable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ingest.frames import Samples
from ingest.ports import DeviceIdentity

__all__ = ["AckTarget", "DeviceFrames", "IngestBatch", "stored_samples"]


class AckTarget(Protocol):
    """Whoever waits for frames to be durable: a device session (acks) or an HTTP request."""

    def flushed(self, seq: int, count: int) -> None:
        """``count`` more of this target's frames are stored, the highest of them numbered ``seq``."""


# A frame larger than this (a columns frame, mostly) goes to the store script as an argument of its own rather
# than inside the batch's one MessagePack argument: neither packed by the hub nor unpacked by Redis.
LARGE_FRAME_BYTES = 4096


@dataclass(slots=True)
class DeviceFrames:
    """One device's frames in a batch, already laid out as the store script reads them: per frame its seq
    (as text: Lua prints large numbers in exponent form), kind, binary flag (``b"1"``/``b"0"``) and bytes, or
    for a large frame its number (from 1) in ``large``."""

    count: int = 0
    size: int = 0
    wire: list[str | bytes | int] = field(default_factory=list)
    large: list[bytes] = field(default_factory=list)
    # Per frame, in the same order: its seq and its telemetry samples (None for events and command results),
    # so that once the store script says which frames it kept, exactly those are aggregated.
    seqs: list[int] = field(default_factory=list)
    samples: list[Samples | None] = field(default_factory=list)


def stored_samples(frames: DeviceFrames, last_before: int) -> list[Samples]:
    """The samples of the frames the store script kept, in order, given the device's last seq before the write:
    it replays the script's rule (a frame is stored iff its seq is 0 or above the highest so far), so a resent
    frame counts exactly when it was stored: once."""
    kept: list[Samples] = []
    last = last_before
    for seq, samples in zip(frames.seqs, frames.samples, strict=True):
        if seq != 0 and seq <= last:
            continue
        last = max(last, seq)
        if samples is not None and len(samples):
            kept.append(samples)
    return kept


class IngestBatch:
    """Frames waiting for the next flush. Not thread-safe: one event loop owns it."""

    def __init__(self) -> None:
        self.orgs: dict[str, dict[str, DeviceFrames]] = {}
        self.frames = 0
        self.bytes = 0
        # Each target's highest seq and frame count so far, kept as frames are added (no pass at flush time).
        self.owed: dict[AckTarget, tuple[int, int]] = {}

    def add(
        self,
        device: DeviceIdentity,
        seq: int,
        kind: bytes,
        binary: bool,
        raw: bytes,
        target: AckTarget | None,
        samples: Samples | None = None,
    ) -> None:
        """One frame; ``seq`` 0 for frames that carry none (command results, HTTP readings): always stored.
        ``samples``: a telemetry frame's data points, aggregated once the frame is stored."""
        devices = self.orgs.get(device.org_id)
        if devices is None:
            devices = self.orgs[device.org_id] = {}
        pending = devices.get(device.device_id)
        if pending is None:
            pending = devices[device.device_id] = DeviceFrames()
        pending.count += 1
        pending.size += len(raw)
        if len(raw) > LARGE_FRAME_BYTES:
            pending.large.append(raw)
            pending.wire += (str(seq), kind, b"1" if binary else b"0", len(pending.large))
        else:
            pending.wire += (str(seq), kind, b"1" if binary else b"0", raw)
        pending.seqs.append(seq)
        pending.samples.append(samples)
        self.frames += 1
        self.bytes += len(raw)
        if target is not None:
            owed = self.owed.get(target)
            self.owed[target] = (seq, 1) if owed is None else (max(seq, owed[0]), owed[1] + 1)

    def take(self) -> IngestBatch:
        """Everything added so far, leaving this batch empty for the frames that arrive during the flush."""
        taken = IngestBatch()
        taken.orgs, taken.frames, taken.bytes, taken.owed = self.orgs, self.frames, self.bytes, self.owed
        self.orgs, self.frames, self.bytes, self.owed = {}, 0, 0, {}
        return taken
