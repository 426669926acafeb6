"""The ingest loop's flusher: closes the batch every few milliseconds (or when it is large), stores it, acks.

Nothing is dropped. When Redis is slow or down the write is retried with backoff, the batch stays in memory,
and once the frames waiting reach a bound, :meth:`Flusher.room` makes connections stop reading their sockets
(TCP backpressure) until the store catches up. Acks go out only after the write succeeded.

With aggregation on, each lane also folds the samples it stored into its ``WindowAggregator`` and writes the
windows that closed in its next round trip; with no batch coming, a tick every ``tick_s`` closes and writes
what is due (idle devices). A device this lane has not seen yet is rebuilt from Redis first
(``ingest.aggregate_rebuild``), before its new frames are written. After each write the samples stored also go
to the process's ``AlertLoop`` (alert rules, evaluated off the ack path).
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

from ingest.aggregate_rebuild import rebuild_device
from ingest.aggregates import WINDOWS_WRITTEN, AggregationPolicy, WindowAggregator
from ingest.alert_loop import AlertLoop
from ingest.batch import AckTarget, IngestBatch
from ingest.frames import Samples
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
    # How long a lane's first frame waits for more before the batch is written. 0: one turn of the event loop
    # (the frames read together); while a batch is being written the next one gathers, so batches still grow
    # with the load (group commit) and a quiet hub acks at once.
    interval_s: float = 0.0
    # A batch this large (in frames or bytes) is flushed at once instead of waiting for the interval. The byte
    # bound keeps one write of columns frames from holding Redis (and every other client of it) for long: 5,000
    # frames of 40 KB were one 200 MB script call; 4 MiB batches took ingest-columns from about 2,050 to 2,470
    # acked frames/s here (python -m benchmarks ingest-columns --target telehub --runs 1, docs/performance.md).
    max_batch_frames: int = 5_000
    max_batch_bytes: int = 4 * 1024 * 1024
    # Independent write lanes; a device always uses the same one, so its frames stay in order.
    lanes: int = 4
    # Frames (or bytes) received and not yet stored, across all connections, before reading stops.
    max_waiting_frames: int = 200_000
    max_waiting_bytes: int = 256 * 1024 * 1024
    retry_initial_s: float = 0.05
    retry_max_s: float = 2.0


class Flusher:
    """Frames are spread over ``lanes`` by device; each lane closes a batch when it is full
    (``max_batch_frames`` or ``max_batch_bytes``) or every ``interval_s``, and writes its batches one at a
    time, in order, so a device's frames are stored in the order received. Lanes write concurrently (each on
    its own Redis connection): one round trip waiting for Redis never holds up the others, which keeps Redis
    and this process busy at the same time (one lane in order managed 35k small frames/s here, four twice
    that; docs/performance.md)."""

    def __init__(
        self,
        writer: StreamWriter,
        *,
        policy: FlushPolicy | None = None,
        aggregation: AggregationPolicy | None = None,
        alerts: AlertLoop | None = None,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.writer = writer
        self.policy = policy or FlushPolicy()
        self.aggregation = aggregation
        # Told what each write stored, to evaluate the alert rules over it (off the ack path).
        self.alerts = alerts
        self.clock = clock
        self.lanes = [_Lane(self) for _ in range(max(1, self.policy.lanes))]
        self.waiting_frames = 0
        self._waiting_bytes = 0
        # Lanes whose last write failed and is being retried (Redis slow or down): ``/health`` says degraded.
        self.retrying: set[int] = set()
        self._room = asyncio.Event()
        self._room.set()

    def start(self) -> None:
        for index, lane in enumerate(self.lanes):
            lane.start(index)

    async def stop(self) -> None:
        """Flush what is waiting (acks included), then stop. Gives up only if Redis stays down past the wait."""
        await asyncio.gather(*(lane.stop() for lane in self.lanes))

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
        """Queue one frame for its device's lane (see :meth:`IngestBatch.add`)."""
        self.lanes[hash(device) % len(self.lanes)].add(device, seq, kind, encoding, raw, target, samples)
        self.waiting_frames += 1
        self._waiting_bytes += len(raw)
        if self._full():
            self._room.clear()

    def has_room(self) -> bool:
        return self._room.is_set()

    async def room(self) -> None:
        """Wait until the store has caught up enough for connections to read more frames."""
        if not self._room.is_set():
            await self._room.wait()

    def _full(self) -> bool:
        """Frames or bytes waiting to be stored have reached their bound: connections stop reading."""
        return (
            self.waiting_frames >= self.policy.max_waiting_frames
            or self._waiting_bytes >= self.policy.max_waiting_bytes
        )

    def _stored(self, batch: IngestBatch) -> None:
        self.waiting_frames -= batch.frames
        self._waiting_bytes -= batch.bytes
        if not self._full():
            self._room.set()
        FRAMES_WAITING.set(self.waiting_frames)


class _Lane:
    """One ordered sequence of batch writes."""

    def __init__(self, flusher: Flusher) -> None:
        self.flusher = flusher
        self.policy = flusher.policy
        self.aggregator = None if flusher.aggregation is None else WindowAggregator(flusher.aggregation)
        self.batch = IngestBatch()
        self._closed: deque[IngestBatch] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self, index: int) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"ingest-flusher-{index}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    def add(
        self,
        device: DeviceIdentity,
        seq: int,
        kind: bytes,
        encoding: bytes,
        raw: bytes,
        target: AckTarget | None,
        samples: Samples | None,
    ) -> None:
        batch = self.batch
        batch.add(device, seq, kind, encoding, raw, target, samples)
        if self._full(batch):
            self._closed.append(batch)
            self.batch = IngestBatch()
            self._wake.set()
        elif batch.frames == 1:
            self._wake.set()

    def _full(self, batch: IngestBatch) -> bool:
        return batch.frames >= self.policy.max_batch_frames or batch.bytes >= self.policy.max_batch_bytes

    async def _run(self) -> None:
        while True:
            if not await self._woken():
                await self._tick()
                continue
            self._wake.clear()
            if not self._closed and not self._full(self.batch) and not self._stopping:
                await asyncio.sleep(self.policy.interval_s)
            batch = self._closed.popleft() if self._closed else self.batch.take()
            if batch.frames:
                await self._flush(batch)
            if self._closed or self.batch.frames:
                self._wake.set()
            elif self._stopping:
                if self.aggregator is not None and self.aggregator.pending:
                    await self._flush(IngestBatch())
                return

    async def _woken(self) -> bool:
        """Wait for frames; False when the aggregation tick came first."""
        if self.aggregator is None or self._stopping:
            await self._wake.wait()
            return True
        try:
            await asyncio.wait_for(self._wake.wait(), self.aggregator.policy.tick_s)
        except TimeoutError:
            return self._wake.is_set()
        return True

    async def _tick(self) -> None:
        """No frames for a while: close the windows due (idle devices) and write what is queued."""
        assert self.aggregator is not None
        self.aggregator.close(self.flusher.clock())
        if self.aggregator.pending:
            await self._flush(IngestBatch())

    async def _flush(self, batch: IngestBatch) -> None:
        FRAMES_WAITING.set(self.flusher.waiting_frames)
        delay = self.policy.retry_initial_s
        aggregator = self.aggregator
        while True:
            started = time.perf_counter()
            try:
                if aggregator is not None:
                    await self._rebuild_new_devices(aggregator, batch)
                windows = [] if aggregator is None else aggregator.pending
                now_ms = self.flusher.clock()
                result = await self.flusher.writer.write(batch, now_ms=now_ms, windows=windows)
                self.flusher.retrying.discard(id(self))
                break
            except (RedisError, OSError) as exc:
                self.flusher.retrying.add(id(self))
                WRITE_FAILURES.inc()
                log.warning("storing %d frames failed (%s); retrying in %.2f s", batch.frames, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.policy.retry_max_s)
        FLUSH_SECONDS.observe(time.perf_counter() - started)
        FRAMES_STORED.inc(result.stored)
        FRAMES_FLUSHED.inc(batch.frames)
        self.flusher._stored(batch)
        for target, (seq, count) in batch.owed.items():
            target.flushed(seq, count)
        if aggregator is not None:
            WINDOWS_WRITTEN.inc(len(windows))
            aggregator.pending = []
            if batch.frames:
                try:
                    aggregator.fold(batch, result.last_before, now_ms=now_ms)
                except Exception:  # a bug here must not stop storing and acking
                    log.exception("aggregating a batch of %d frames failed", batch.frames)
        alerts = self.flusher.alerts
        if alerts is not None and batch.frames:
            try:
                alerts.submit(batch, result.last_before)
            except Exception:  # nor here
                log.exception("queueing a batch of %d frames for alert rules failed", batch.frames)

    async def _rebuild_new_devices(self, aggregator: WindowAggregator, batch: IngestBatch) -> None:
        """Rebuild the windows of devices with telemetry in ``batch`` that this lane has not seen yet."""
        for org_id, devices in batch.orgs.items():
            for device_id, pending in devices.items():
                device = DeviceIdentity(org_id, device_id)
                if not aggregator.knows(device) and any(s is not None for s in pending.samples):
                    try:
                        await rebuild_device(aggregator, self.flusher.writer.redis, device)
                    except (RedisError, OSError):
                        raise
                    except Exception:  # aggregate from here on rather than stop storing
                        log.exception("rebuilding the windows of %s failed", device)
                        aggregator.device_id(device)
