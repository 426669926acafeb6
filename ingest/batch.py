"""The columnar batch the ingest loop fills between flushes, grouped by organization and device.

Connections append decoded frames; the flusher takes the whole batch at once (``take``), writes it, and tells
each frame's :class:`AckTarget` the highest seq of its that is now durable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ingest.frames import Samples
from ingest.ports import DeviceIdentity

__all__ = ["AckTarget", "DeviceFrames", "IngestBatch", "StoredTelemetry"]


class AckTarget(Protocol):
    """Whoever waits for frames to be durable: a device session (acks) or an HTTP request."""

    def flushed(self, seq: int, count: int) -> None:
        """``count`` more of this target's frames are stored, the highest of them numbered ``seq``."""


# Per organization and device, the samples of the telemetry frames a write stored, in order.
StoredTelemetry = dict[str, dict[str, list[Samples]]]

# A frame larger than this (a columns frame, mostly) goes to the store script as an argument of its own rather
# than inside the batch's one MessagePack argument: neither packed by the hub nor unpacked by Redis.
LARGE_FRAME_BYTES = 4096


@dataclass(slots=True)
class DeviceFrames:
    """One device's frames in a batch, already laid out as the store script reads them: per frame its seq
    (as text: Lua prints large numbers in exponent form), kind, encoding (``ingest.at_rest``) and bytes, or
    for a large frame its number (from 1) in ``large``."""

    count: int = 0
    size: int = 0
    wire: list[str | bytes | int] = field(default_factory=list)
    large: list[bytes] = field(default_factory=list)
    # Per frame, in the same order: its seq and its telemetry samples (None for events and command results),
    # so that once the store script says which frames it kept, exactly those are aggregated.
    seqs: list[int] = field(default_factory=list)
    samples: list[Samples | None] = field(default_factory=list)


class IngestBatch:
    """Frames waiting for the next flush. Not thread-safe: one event loop owns it."""

    def __init__(self) -> None:
        self.orgs: dict[str, dict[str, DeviceFrames]] = {}
        self.frames = 0
        self.bytes = 0
        # Each target's highest seq and frame count so far, kept as frames are added (no pass at flush time).
        self.owed: dict[AckTarget, tuple[int, int]] = {}
        self._stored: tuple[Mapping[str, Mapping[str, int]], StoredTelemetry] | None = None

    def add(
        self,
        device: DeviceIdentity,
        seq: int,
        kind: bytes,
        encoding: bytes,
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
            pending.wire += (str(seq), kind, encoding, len(pending.large))
        else:
            pending.wire += (str(seq), kind, encoding, raw)
        pending.seqs.append(seq)
        pending.samples.append(samples)
        self.frames += 1
        self.bytes += len(raw)
        if target is not None:
            owed = self.owed.get(target)
            self.owed[target] = (seq, 1) if owed is None else (max(seq, owed[0]), owed[1] + 1)

    def stored_telemetry(self, last_before: Mapping[str, Mapping[str, int]]) -> StoredTelemetry:
        """The samples of the telemetry frames the store script kept, given each device's last seq before the
        write (its reply). It replays the script's rule (a frame is stored iff its seq is 0 or above the highest
        so far), so a resent frame counts exactly when it was stored: once. Worked out once per batch: the
        aggregator and the alert loop both read it."""
        if self._stored is not None and self._stored[0] is last_before:
            return self._stored[1]
        stored: StoredTelemetry = {}
        for org_id, devices in self.orgs.items():
            befores = last_before.get(org_id)
            if not befores:
                continue
            by_device: dict[str, list[Samples]] = {}
            for device_id, pending in devices.items():
                last = befores.get(device_id)
                if last is None:
                    continue
                kept: list[Samples] = []
                for seq, samples in zip(pending.seqs, pending.samples, strict=True):
                    if seq:
                        if seq <= last:
                            continue
                        last = seq
                    if samples is not None:
                        kept.append(samples)
                if kept:
                    by_device[device_id] = kept
            if by_device:
                stored[org_id] = by_device
        self._stored = (last_before, stored)
        return stored

    def take(self) -> IngestBatch:
        """Everything added so far, leaving this batch empty for the frames that arrive during the flush."""
        taken = IngestBatch()
        taken.orgs, taken.frames, taken.bytes, taken.owed = self.orgs, self.frames, self.bytes, self.owed
        self.orgs, self.frames, self.bytes, self.owed = {}, 0, 0, {}
        return taken
