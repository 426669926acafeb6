"""``Webhooks``: one per process, made in the app's lifespan after ingest and stopped before it.

Every process runs the same loops; Redis splits the work: the matcher of an organization's streams is the
holder of its lease, the senders share the queue through its consumer group, and the retry promoter and the
claimer may run anywhere at once (their scripts make that harmless).
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from hub.config import HubConfig
from hub.redis_client import StrRedis, open_pool_client
from hub.webhooks.matcher import EventMatcher
from hub.webhooks.queue import DeliveryQueue
from hub.webhooks.sender import PROMOTE_S, DeliverySender, SenderSettings, every
from hub.webhooks.ssrf import UrlGuard
from hub.webhooks.store import WebhookStore
from ingest.aggregates import resolution_label
from ingest.tasks import cancel_and_wait

__all__ = ["Webhooks"]

log = logging.getLogger("telehub.webhooks")

FORGET_CONSUMERS_S = 300.0


class Webhooks:
    def __init__(self, config: HubConfig, redis: StrRedis, *, node_id: str) -> None:
        # Stream entries hold binary frames: the workers read with a client that leaves replies as bytes.
        self.streams_redis = open_pool_client(config.redis_url, decode_responses=False, max_connections=16)
        resolutions = [resolution_label(width) for width in config.aggregate_resolutions_ms]
        self.store = WebhookStore(redis, resolutions=resolutions)
        self.guard = UrlGuard(allow_private=config.webhook_allow_private)
        self.queue = DeliveryQueue(self.streams_redis, backoff_ms=config.webhook_backoff_ms)
        self.matcher = EventMatcher(self.streams_redis, self.store, self.queue, node_id=node_id)
        settings = SenderSettings(
            timeout_s=config.webhook_timeout_ms / 1000,
            backoff_ms=config.webhook_backoff_ms,
            concurrency=config.webhook_concurrency,
            claim_idle_ms=config.webhook_claim_idle_ms,
        )
        self.sender = DeliverySender(self.queue, self.store, self.guard, settings, node_id=node_id)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        try:
            await self.queue.ensure_group()
        except (RedisError, OSError) as exc:  # Redis down at start: the loops keep trying
            log.warning("webhooks: no delivery queue yet (%s)", exc)
        claim_s = max(0.5, self.sender.settings.claim_idle_ms / 3000)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.matcher.keep_leases(), name="webhooks-leases"),
            loop.create_task(self.matcher.run(), name="webhooks-matcher"),
            loop.create_task(every(0, self._read, "queue", self._running), name="webhooks-sender"),
            loop.create_task(every(PROMOTE_S, self.sender.promote, "retries", self._running), name="webhooks-retries"),
            loop.create_task(every(claim_s, self.sender.claim, "claims", self._running), name="webhooks-claims"),
            loop.create_task(
                every(FORGET_CONSUMERS_S, self.sender.forget_idle_consumers, "consumers", self._running),
                name="webhooks-consumers",
            ),
        ]

    def _running(self) -> bool:
        return self.sender.running

    async def _read(self) -> None:
        try:
            await self.sender.read()
        except RedisError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.queue.ensure_group()

    def organization_changed(self) -> None:
        """A webhook was created here: look at the leases now rather than at the next renewal."""
        self.matcher.wake.set()

    async def stop(self) -> None:
        self.matcher.running = False
        self.sender.running = False
        await cancel_and_wait(self._tasks)
        await self.sender.stop()
        await self.matcher.release_leases()
        await self.streams_redis.aclose()
