"""Sends queued deliveries: one consumer of the ``senders`` group per process, a local lane per endpoint.

Every delivery this process takes from the queue joins its webhook's lane, which sends at most
``concurrency`` at a time (and ``MAX_IN_FLIGHT`` over all lanes): a slow or hanging endpoint fills its own
lane and no other. A lane longer than ``LANE_BACKLOG`` sends the surplus back to the retry schedule for
``PARK_MS`` (no attempt counted), so one endpoint's backlog never stops the reading. Each attempt is signed
anew (``t`` is its time), checked by the SSRF guard after resolution, bounded by the timeout as a whole,
logged in the webhook's delivery log, and settled in the queue: delivered, retried after the next backoff
(±20% jitter), or failed after the last attempt. On stop, what this process holds goes back to the retry
schedule, due at once, for any other process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.exceptions import RedisError

from hub import __version__
from hub.clock import iso_ms, now_ms
from hub.webhooks.queue import DeliveryQueue, Taken
from hub.webhooks.signing import signature_header
from hub.webhooks.ssrf import Refused, UrlGuard
from hub.webhooks.store import WebhookStore
from ingest.tasks import cancel_and_wait

__all__ = ["DeliverySender", "SenderSettings"]

log = logging.getLogger("telehub.webhooks")

USER_AGENT = f"telehub-webhooks/{__version__}"
MAX_IN_FLIGHT = 256
# Deliveries held by this process (in lanes or in flight) before it stops reading the queue.
MAX_HELD = 10_000
LANE_BACKLOG = 1_000
PARK_MS = 5_000
READ_COUNT = 100
BLOCK_MS = 1_000
PROMOTE_S = 0.25
RETRY_S = 1.0
JITTER = 0.2
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class SenderSettings:
    timeout_s: float
    backoff_ms: tuple[int, ...]
    concurrency: int
    claim_idle_ms: int

    @property
    def attempts(self) -> int:
        return len(self.backoff_ms) + 1


@dataclass
class Job:
    taken: Taken
    record: dict[str, str]


@dataclass
class Lane:
    """One webhook's deliveries waiting on this process, and how many workers send them."""

    waiting: deque[Job] = field(default_factory=deque)
    workers: int = 0


class DeliverySender:
    def __init__(
        self, queue: DeliveryQueue, store: WebhookStore, guard: UrlGuard, settings: SenderSettings, *, node_id: str
    ) -> None:
        self.queue = queue
        self.store = store
        self.guard = guard
        self.settings = settings
        self.node_id = node_id
        self.lanes: dict[str, Lane] = {}
        self.held: dict[str, Job] = {}
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._workers: set[asyncio.Task[None]] = set()
        self.running = True
        # trust_env off: an HTTP proxy from the environment would connect to what the guard did not check.
        self.client = httpx.AsyncClient(
            timeout=settings.timeout_s, follow_redirects=False, trust_env=False, headers={"User-Agent": USER_AGENT}
        )

    # Loops (run by the service).

    async def read(self) -> None:
        if len(self.held) >= MAX_HELD:
            await asyncio.sleep(0.1)
            return
        await self.take(await self.queue.read(self.node_id, count=READ_COUNT, block_ms=BLOCK_MS))

    async def promote(self) -> None:
        await self.queue.promote(now_ms())

    async def claim(self) -> None:
        """Keep what this process holds fresh, and take over what a dead process left."""
        await self.queue.touch(self.node_id, list(self.held))
        await self.take(await self.queue.claim(self.node_id, min_idle_ms=self.settings.claim_idle_ms))

    async def forget_idle_consumers(self) -> None:
        await self.queue.forget_idle_consumers(self.node_id, idle_ms=max(600_000, 10 * self.settings.claim_idle_ms))

    async def stop(self) -> None:
        self.running = False
        await cancel_and_wait(list(self._workers))
        held = [job.taken for job in self.held.values()]
        self.held.clear()
        with contextlib.suppress(RedisError, OSError):
            await self.queue.park_all(held, due_ms=now_ms())
        await self.client.aclose()

    # Lanes.

    async def take(self, taken: list[Taken]) -> None:
        if not taken:
            return
        for item, record in zip(taken, await self.queue.records(taken), strict=True):
            if record.get("state") != "pending" or "body" not in record or item.entry_id in self.held:
                if item.entry_id not in self.held:
                    await self.queue.settle(item, "dropped")
                continue
            lane = self.lanes.setdefault(record["webhook"], Lane())
            if len(lane.waiting) >= LANE_BACKLOG:
                await self.queue.settle(item, "park", due_ms=now_ms() + PARK_MS)
                continue
            job = Job(item, record)
            self.held[item.entry_id] = job
            lane.waiting.append(job)
            if lane.workers < self.settings.concurrency:
                lane.workers += 1
                task = asyncio.get_running_loop().create_task(self._work(record["webhook"], lane))
                self._workers.add(task)
                task.add_done_callback(self._workers.discard)

    async def _work(self, webhook_id: str, lane: Lane) -> None:
        try:
            while lane.waiting and self.running:
                job = lane.waiting.popleft()
                try:
                    async with self._slots:
                        await self._attempt(job)
                except (RedisError, OSError) as exc:  # left pending: the claimer takes it up again
                    log.warning("webhooks: delivery %s: %s", job.taken.delivery_id, exc)
                except Exception:
                    log.exception("webhooks: delivery %s failed", job.taken.delivery_id)
                else:
                    self.held.pop(job.taken.entry_id, None)
        finally:
            lane.workers -= 1
            if lane.workers == 0 and not lane.waiting and self.lanes.get(webhook_id) is lane:
                del self.lanes[webhook_id]

    # One attempt.

    async def _attempt(self, job: Job) -> None:
        record = job.record
        org_id, webhook_id = record["org"], record["webhook"]
        endpoint = await self.store.endpoint(org_id, webhook_id)
        if endpoint is None:  # the webhook was deleted
            await self.queue.settle(job.taken, "dropped")
            return
        url, secret = endpoint
        number = int(record.get("attempts", "0")) + 1
        at = now_ms()
        started = time.monotonic()
        status, error = await self._post(url, secret, record["body"].encode(), record["type"], job.taken.delivery_id)
        duration_ms = round((time.monotonic() - started) * 1000)
        due = None
        if status is not None and 200 <= status < 300:
            outcome = "delivered"
        elif number < self.settings.attempts:
            outcome = "retry"
            wait = self.settings.backoff_ms[number - 1] * random.uniform(1 - JITTER, 1 + JITTER)
            due = now_ms() + round(wait)
        else:
            outcome = "failed"
        attempt = {
            "delivery_id": job.taken.delivery_id,
            "event_id": record.get("event"),
            "type": record["type"],
            "attempt": number,
            "status_code": status,
            "error": error,
            "duration_ms": duration_ms,
            "created_at": iso_ms(at),
            "outcome": "retrying" if outcome == "retry" else outcome,
            "next_retry_at": iso_ms(due) if due is not None else None,
        }
        await self.store.append_log(org_id, webhook_id, attempt)
        await self.queue.settle(job.taken, outcome, due_ms=due or 0)

    async def _post(
        self, url: str, secret: str, body: bytes, event_type: str, delivery_id: str
    ) -> tuple[int | None, str | None]:
        """(status code, None) when the endpoint answered, (None, what went wrong) otherwise."""
        timeout = self.settings.timeout_s
        try:
            async with asyncio.timeout(timeout):
                target = await self.guard.target(url)
                headers = {
                    "Content-Type": "application/json",
                    "Telehub-Event": event_type,
                    "Telehub-Delivery": delivery_id,
                    "Telehub-Signature": signature_header(secret, int(time.time()), body),
                    **target.headers,
                }
                request = self.client.build_request(
                    "POST", target.url, content=body, headers=headers, extensions=target.extensions
                )
                response = await self.client.send(request, stream=True)
                await response.aclose()
                return response.status_code, None
        except Refused as exc:
            return None, f"refused: {exc}"[:MAX_ERROR_CHARS]
        except (TimeoutError, httpx.TimeoutException):
            return None, f"timed out after {timeout:g} s"
        except httpx.HTTPError as exc:
            return None, (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:MAX_ERROR_CHARS]


async def every(period_s: float, work: Callable[[], Awaitable[Any]], what: str, running: Callable[[], bool]) -> None:
    """Run ``work`` every ``period_s`` (right away first) while ``running()``, surviving Redis errors."""
    while running():
        try:
            await work()
        except (RedisError, OSError) as exc:
            log.warning("webhooks: %s: %s; retrying", what, exc)
            await asyncio.sleep(RETRY_S)
        except Exception:
            log.exception("webhooks: %s failed", what)
        await asyncio.sleep(period_s)
