"""Alert rules in the ingest loop: what the flusher stored is evaluated off the ack path, in order, never lost
to a Redis blip.

After a lane's write succeeded (and its acks went out), ``AlertLoop.submit`` takes the samples of the frames
the store script kept (never a duplicate) of organizations that have rules, or whose rules it does not know
yet; it is synchronous and cheap. One task per process then takes everything submitted so far at once,
refreshes the rules it needs (``AlertRules``: at most once a second per organization), evaluates them with numpy
(``ingest.alert_eval``) and hands the summaries of all organizations to ``AlertSink.apply`` in one round trip.
Batches submitted while one is applied form the next (group commit), so a slow Redis makes bigger applies, not
a longer queue of them.

A failed apply (Redis unreachable, a timeout) is retried with backoff, the same summaries first, so alerts are
late rather than lost; a script error (a bug, not a blip) is logged and those summaries dropped. What the loop
holds is in memory: a process killed between storing frames and applying their summaries does not evaluate
them (the frames are stored; the next samples of the device are evaluated as usual).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from prometheus_client import Counter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ingest.alert_eval import ConditionSummary, SampleTable, evaluate
from ingest.batch import IngestBatch
from ingest.frames import Samples
from ingest.ports import AlertRules, AlertSink
from ingest.tasks import cancel_and_wait

__all__ = ["AlertLoop"]

log = logging.getLogger("telehub.alerts")

APPLY_FAILURES = Counter("telehub_alerts_apply_failures_total", "alert applies that failed and were retried")
SUMMARIES_APPLIED = Counter("telehub_alerts_summaries_applied_total", "(rule, device) summaries applied")
SAMPLES_DROPPED = Counter(
    "telehub_alerts_samples_dropped_total", "stored samples never evaluated (a script error, or shutdown)"
)
# Errors worth retrying: Redis unreachable or slow. Anything else from an apply is a bug, not a blip.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)

T = TypeVar("T")
# (org id, [(device id, samples of one stored frame)]) in the order stored.
Submitted = tuple[str, list[tuple[str, Samples]]]


class AlertLoop:
    """One per process; ``start`` once the loop runs, ``submit`` after each stored batch, ``stop`` last."""

    def __init__(
        self,
        rules: AlertRules,
        sink: AlertSink,
        *,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 2.0,
        type_ttl_s: float = 1.0,
        max_queued_frames: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = rules
        self.sink = sink
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        # Device types the alert script reported, trusted this long to leave type rules out for other types.
        self.type_ttl_s = type_ttl_s
        self.clock = clock
        # Frames waiting past this (evaluation slower than ingest for long) are left out, oldest first.
        self.max_queued_frames = max_queued_frames
        self._queued = 0
        self._types: dict[tuple[str, str], tuple[str, float]] = {}
        self._queue: list[Submitted] = []
        # What the loop is applying now.
        self._taken: list[Submitted] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="alert-loop")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Apply what was submitted, then end; what is still unapplied after ``timeout_s`` is dropped (logged)."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            await cancel_and_wait([self._task])
            dropped = _samples(self._queue) + _samples(self._taken)
            SAMPLES_DROPPED.inc(dropped)
            log.error("shutdown: alerts of %d stored samples not evaluated (Redis down?)", dropped)
        self._task = None

    def submit(self, batch: IngestBatch, last_before: Mapping[str, Mapping[str, int]]) -> None:
        """Queue the samples ``batch`` stored (``last_before``: the store script's reply, per org and device)."""
        for org_id in batch.orgs:
            rules = self.rules.current(org_id)
            if rules is not None and not rules:
                continue  # known to have none
            devices = batch.stored_telemetry(last_before).get(org_id, {})
            frames = [(device_id, samples) for device_id, kept in devices.items() for samples in kept]
            if frames:
                self._queue.append((org_id, frames))
                self._queued += len(frames)
                self._wake.set()
        while self._queued > self.max_queued_frames and len(self._queue) > 1:
            org_id, frames = self._queue.pop(0)
            self._queued -= len(frames)
            SAMPLES_DROPPED.inc(_samples([(org_id, frames)]))
            log.error(
                "alert evaluation is behind by %d frames: %d frames of %s left out", self._queued, len(frames), org_id
            )

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._queue:
                self._taken, self._queue, self._queued = self._queue, [], 0
                try:
                    await self._apply(self._taken)
                except Exception:  # a bug must not end alerting for the process
                    SAMPLES_DROPPED.inc(_samples(self._taken))
                    log.exception("evaluating alert rules over %d stored samples failed", _samples(self._taken))
                self._taken = []
            if self._stopping and not self._queue:
                return

    async def _apply(self, taken: list[Submitted]) -> None:
        by_org: dict[str, list[tuple[str, Samples]]] = {}
        for org_id, frames in taken:
            by_org.setdefault(org_id, []).extend(frames)
        await self._retrying(lambda: self.rules.refresh(by_org.keys()), "reading alert rules")
        summaries: dict[str, list[ConditionSummary]] = {}
        for org_id, frames in by_org.items():
            rules = self.rules.current(org_id) or ()
            if not rules:
                continue
            table = SampleTable.gather(frames, {rule.metric for rule in rules})
            found = evaluate(table, rules, device_type=self._type_of(org_id))
            if found:
                summaries[org_id] = found
        if not summaries:
            return
        learned = await self._retrying(lambda: self.sink.apply(summaries), "applying alert summaries")
        SUMMARIES_APPLIED.inc(sum(len(found) for found in summaries.values()))
        now = self.clock()
        for org_id, types in learned.items():
            for device_id, device_type in types.items():
                self._types[(org_id, device_id)] = (device_type, now)

    def _type_of(self, org_id: str) -> Callable[[str], str | None]:
        """A lookup of the device types reported recently (None: unknown or too old)."""
        oldest = self.clock() - self.type_ttl_s

        def device_type(device_id: str) -> str | None:
            known = self._types.get((org_id, device_id))
            if known is None or known[1] < oldest:
                self._types.pop((org_id, device_id), None)
                return None
            return known[0]

        return device_type

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """``attempt()`` until it does not fail on Redis being unreachable or slow (then with backoff)."""
        delay = self.retry_initial_s
        while True:
            try:
                return await attempt()
            except TRANSIENT as exc:
                APPLY_FAILURES.inc()
                log.warning("%s failed (%s); retrying in %.2f s", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)


def _samples(submitted: list[Submitted]) -> int:
    return sum(len(samples) for _, frames in submitted for _, samples in frames)
