"""HTTP readings through the same batch as WebSocket frames: the request waits until its readings are stored."""

from __future__ import annotations

import asyncio

from ingest import at_rest, codec
from ingest.flusher import Flusher
from ingest.limits import FrameLimits
from ingest.ports import DeviceIdentity

__all__ = ["ReadingsNotStored", "store_readings"]


class ReadingsNotStored(Exception):
    """The readings were not confirmed stored in time (Redis slow or down); they may still be stored."""


class _StoredSignal:
    """The ack target of one HTTP request: completes its future when the flusher has stored the readings."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def flushed(self, seq: int, count: int) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def store_readings(
    flusher: Flusher,
    device: DeviceIdentity,
    body: bytes,
    *,
    binary: bool,
    now_ms: int,
    limits: FrameLimits,
    timeout_s: float,
) -> int:
    """Validate ``body`` (codec.FrameError if bad), add it to the batch, wait until stored; the sample count."""
    frame = codec.decode_readings(body, binary=binary, now_ms=now_ms, limits=limits)
    await flusher.room()
    signal = _StoredSignal()
    flusher.add(device, 0, b"readings", at_rest.encoding(binary), frame.raw, signal, frame.samples)
    try:
        await asyncio.wait_for(asyncio.shield(signal.done), timeout_s)
    except TimeoutError:
        raise ReadingsNotStored from None
    return len(frame.samples)
