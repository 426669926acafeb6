"""The ingest loop's flusher: closes the batch every few milliseconds (or when it is large), stores it, acks.

Nothing is dropped. When Redis is slow or down the write is retried with backoff, the batch stays in memory,
and once the frames waiting reach a bound, :meth:`Flusher.room` makes connections stop reading their sockets
(TCP backpressure) until the store catches up. Acks go out only after the write succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError

from ingest.batch import AckTarget, IngestBatch
from ingest.ports import DeviceIdentity
from ingest.stream_writer import StreamWriter

__all__ = ["FlushPolicy", "Flusher"]

log = logging.getLogger("telehub.ingest")

FRAMES_STORED = Counter("telehub_ingest_frames_stored_total", "frames written to Redis (duplicates left out)")
FRAMES_FLUSHED = Counter("telehub_ingest_frames_flushed_total", "frames flushed, duplicates included")
FLUSH_SECONDS = Histogram("telehub_ingest_flush_seconds", "time to write one batch to Redis")
WRITE_FAILURES = Counter("telehub_ingest_write_failures_total", "batch writes that failed and were retried")
FRAMES_WAITING = Gauge("telehub_ingest_frames_waiting", "frames received and not yet stored")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, kw_only=True)
class FlushPolicy:
    interval_s: float = 0.005
    # A batch this large is flushed at once instead of waiting for the interval.
    max_batch_frames: int = 5_000
    # Frames (or bytes) received and not yet stored, across all connections, before reading stops.
    max_waiting_frames: int = 200_000
    max_waiting_bytes: int = 256 * 1024 * 1024
    retry_initial_s: float = 0.05
    retry_max_s: float = 2.0


class Flusher:
    """Batches close when full (``max_batch_frames``) or every ``interval_s``; they are written one at a time,
    in order. Closing full batches instead of writing everything waiting at once keeps Redis and this
    process busy together: while one batch is being stored, the devices acked for the one before are
    already sending the next frames."""

    def __init__(
        self, writer: StreamWriter, *, policy: FlushPolicy | None = None, clock: Callable[[], int] = _now_ms
    ) -> None:
        self.writer = writer
        self.policy = policy or FlushPolicy()
        self.clock = clock
        self.batch = IngestBatch()
        self._closed: deque[IngestBatch] = deque()
        self.waiting_frames = 0
        self._waiting_bytes = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ingest-flusher")

    async def stop(self) -> None:
        """Flush what is waiting (acks included), then stop. Gives up only if Redis stays down past the wait."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    def add(
        self, device: DeviceIdentity, seq: int, kind: bytes, binary: bool, raw: bytes, target: AckTarget | None
    ) -> None:
        """Queue one frame for the next flush (see :meth:`IngestBatch.add`)."""
        batch = self.batch
        batch.add(device, seq, kind, binary, raw, target)
        self.waiting_frames += 1
        self._waiting_bytes += len(raw)
        if batch.frames >= self.policy.max_batch_frames:
            self._closed.append(batch)
            self.batch = IngestBatch()
            self._wake.set()
        elif batch.frames == 1:
            self._wake.set()
        if (
            self.waiting_frames >= self.policy.max_waiting_frames
            or self._waiting_bytes >= self.policy.max_waiting_bytes
        ):
            self._room.clear()

    def has_room(self) -> bool:
        return self._room.is_set()

    async def room(self) -> None:
        """Wait until the store has caught up enough for connections to read more frames."""
        if not self._room.is_set():
            await self._room.wait()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._closed and self.batch.frames < self.policy.max_batch_frames and not self._stopping:
                await asyncio.sleep(self.policy.interval_s)
            batch = self._closed.popleft() if self._closed else self.batch.take()
            if batch.frames:
                await self._flush(batch)
            if self._closed or self.batch.frames:
                self._wake.set()
            elif self._stopping:
                return

    async def _flush(self, batch: IngestBatch) -> None:
        FRAMES_WAITING.set(self.waiting_frames)
        delay = self.policy.retry_initial_s
        while True:
            started = time.perf_counter()
            try:
                stored = await self.writer.write(batch, now_ms=self.clock())
                break
            except (RedisError, OSError) as exc:
                WRITE_FAILURES.inc()
                log.warning("storing %d frames failed (%s); retrying in %.2f s", batch.frames, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.policy.retry_max_s)
        FLUSH_SECONDS.observe(time.perf_counter() - started)
        FRAMES_STORED.inc(stored)
        FRAMES_FLUSHED.inc(batch.frames)
        self.waiting_frames -= batch.frames
        self._waiting_bytes -= batch.bytes
        for target, (seq, count) in batch.owed.items():
            target.flushed(seq, count)
        if self.waiting_frames < self.policy.max_waiting_frames and self._waiting_bytes < self.policy.max_waiting_bytes:
            self._room.set()
        FRAMES_WAITING.set(self.waiting_frames)
