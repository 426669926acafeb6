"""The flusher against a real Redis: a burst of large frames is written in batches bounded in bytes (one huge
script call would hold Redis for every other client), still in order, each frame stored once and acked."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from ingest import stream_keys
from ingest.batch import IngestBatch
from ingest.flusher import Flusher, FlushPolicy
from ingest.ports import DeviceIdentity
from ingest.stream_writer import StoreResult, StreamWriter

DEVICE = DeviceIdentity("org_flusher", "camera-1")
FRAME_BYTES = 20_000


class Acks:
    def __init__(self) -> None:
        self.highest = 0
        self.count = 0

    def flushed(self, seq: int, count: int) -> None:
        self.highest, self.count = max(self.highest, seq), self.count + count


class CountingWriter(StreamWriter):
    """The real writer, noting the size of each batch it is given."""

    batches: list[tuple[int, int]]

    async def write(self, batch: IngestBatch, **kwargs: object) -> StoreResult:  # type: ignore[override]
        self.batches.append((batch.frames, batch.bytes))
        return await super().write(batch, **kwargs)  # type: ignore[arg-type]


async def test_a_burst_of_large_frames_is_written_in_batches_bounded_in_bytes(redis: aioredis.Redis) -> None:
    writer = CountingWriter(redis)
    writer.batches = []
    policy = FlushPolicy(lanes=1, max_batch_bytes=5 * FRAME_BYTES)
    flusher = Flusher(writer, policy=policy)
    acks = Acks()
    frames = [f"{seq}:".encode().ljust(FRAME_BYTES, b"x") for seq in range(1, 41)]
    # All 40 arrive before the lane runs once: without the byte bound they are one batch of 800 KB.
    for seq, raw in enumerate(frames, start=1):
        flusher.add(DEVICE, seq, b"columns", b"1", raw, acks)
    flusher.start()
    await flusher.stop()
    assert [frames_in for frames_in, _ in writer.batches] == [5] * 8
    assert all(size <= policy.max_batch_bytes for _, size in writer.batches)
    stored = await redis.xrange(stream_keys.device_frames(DEVICE.org_id, DEVICE.device_id))
    assert [fields[b"f"] for _, fields in stored] == frames
    assert (acks.highest, acks.count) == (40, 40)
    assert flusher.waiting_frames == 0


async def test_small_frames_still_go_together(redis: aioredis.Redis) -> None:
    writer = CountingWriter(redis)
    writer.batches = []
    flusher = Flusher(writer, policy=FlushPolicy(lanes=1))
    acks = Acks()
    for seq in range(1, 1001):
        flusher.add(DEVICE, seq, b"telemetry", b"1", b"\x80" * 40, acks)
    flusher.start()
    await asyncio.wait_for(flusher.stop(), 10)
    assert writer.batches == [(1000, 40_000)]
    assert acks.count == 1000
