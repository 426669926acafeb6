"""The key layout of a store: how many partitions each organization's devices are spread over.

``P`` (ingest/stream_keys.py) is part of every device key's name, so every process on one store must use the
same one, and it may never change once data is written under it (a device would move to another partition:
its last seq and its streams would split). The first process to start on a store writes it to ``th:layout``;
every later one reads it from there. ``TELEHUB_PARTITIONS=0`` (the default) takes the stored one, or for a new
store 1 on a single Redis (the layout every store had before partitions) and ``CLUSTER_PARTITIONS`` on a
cluster; another value must match the stored one, or the process refuses to start.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hub import slot_reads
from hub.config import ConfigError
from hub.keys import ORGS, PREFIX
from hub.redis_client import StrRedis
from ingest import stream_keys

__all__ = ["CLUSTER_PARTITIONS", "LAYOUT", "layout_check", "settle_layout", "settle_when_reachable"]

log = logging.getLogger("telehub")
RETRY_S = 0.5

LAYOUT = f"{PREFIX}:layout"  # string: P
# A new store on a cluster: partitions of one organization, enough to spread it over the masters of a
# typical cluster (3 to 8), few enough that a wildcard subscription's reads stay cheap (one per partition).
CLUSTER_PARTITIONS = 8
NOT_SETTLED = "the key layout is not known yet: Redis has not answered since the start"


async def settle_layout(redis: StrRedis, requested: int) -> int:
    """Agree on ``P`` with the store (see the module), apply it to this process and return it."""
    stored = await redis.get(LAYOUT)
    if stored is None:
        # A store written before partitions existed has organizations and no layout: its keys are P = 1's.
        legacy = bool(await redis.exists(ORGS))
        proposed = 1 if legacy else requested or (CLUSTER_PARTITIONS if slot_reads.is_cluster(redis) else 1)
        await redis.set(LAYOUT, proposed, nx=True)
        stored = await redis.get(LAYOUT)
    count = int(stored or 1)
    if requested and requested != count:
        raise ConfigError(
            f"partitions: this store is laid out with {count} partitions per organization, not {requested}; "
            f"unset TELEHUB_PARTITIONS (or set it to {count}): changing it would split every device's data"
        )
    stream_keys.use_partitions(count)
    return count


async def settle_when_reachable(redis: StrRedis, requested: int) -> asyncio.Task[str | None] | None:
    """``settle_layout`` for a starting process, which must come up even while Redis is unreachable (its health
    says so): None when settled now, else the task that keeps trying, whose result is None once settled or the
    refusal when the store turned out to have another layout. Until it succeeds no key can be named
    (``stream_keys.LayoutUnknown``, handled as Redis being unreachable), so nothing is written under a layout
    the store does not have. A refusal found at start is raised (the process does not start)."""
    try:
        await settle_layout(redis, requested)
        return None
    except slot_reads.REDIS_ERRORS as exc:
        stream_keys.forget_partitions()
        log.warning("Redis unreachable at start (%s); the hub waits for it before storing anything", exc)
    return asyncio.get_running_loop().create_task(_settle_later(redis, requested), name="settle-layout")


async def _settle_later(redis: StrRedis, requested: int) -> str | None:
    while True:
        await asyncio.sleep(RETRY_S)
        try:
            await settle_layout(redis, requested)
        except slot_reads.REDIS_ERRORS:
            continue
        except ConfigError as exc:
            log.error("telehub: %s; this process stores nothing until it is restarted with a matching setting", exc)
            return str(exc)
        log.info("Redis reachable: key layout settled (%d partitions per organization)", stream_keys.partitions())
        return None


def layout_check(settling: asyncio.Task[str | None] | None) -> dict[str, Any]:
    """Health: the partitions this process names its keys with, or why it has none yet (Redis not reached since
    the start), or the refusal that keeps it from storing anything (the store has another layout)."""
    if settling is not None and settling.done() and not settling.cancelled() and (refusal := settling.result()):
        return {"status": "unhealthy", "error": refusal}
    try:
        return {"status": "healthy", "partitions": stream_keys.partitions()}
    except stream_keys.LayoutUnknown:
        return {"status": "unhealthy", "error": NOT_SETTLED}
