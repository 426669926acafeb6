"""Turns the source streams of organizations with webhooks into queued deliveries.

Each organization's streams are read by one process at a time, the holder of its lease
(``keys.webhook_reader``, renewed every ``LEASE_RENEW_S``, lost ``LEASE_TTL_MS`` after a crash): coalescing
``data.received`` per device and second needs every entry of a second in one place, which a consumer group
split over processes would not give. The reading itself goes through the consumer group ``webhooks`` of each
stream with the one consumer name ``reader``, so the position survives restarts, and an entry stays pending
until its deliveries are queued (``XACK`` after ``enqueue``: at-least-once). A process that takes a lease
first reads the pending entries its predecessor left (``XREADGROUP`` from ``0``), then new ones; ids derived
from the entries make the deliveries it queues again the same ones, which the queue refuses twice.
Telemetry entries stay pending until their second's ``data.received`` is queued.

On a Redis Cluster each organization's streams are in its slot (``{org_id}``) and one command reads one slot
(``hub.slot_reads``): a process holding the leases of several organizations reads each slot with an
``XREADGROUP`` of its own, all in one pipeline, without blocking (a blocking read per organization would
hold a connection each), and waits ``POLL_S`` after a round that found nothing. Entries a round read are
matched and acknowledged even when another slot's read failed, as they are pending already. While the
streams read are in one slot (and always on a single Redis) it is one blocking read, as it always was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError, ResponseError

from hub import keys, slot_reads
from hub.clock import now_ms
from hub.webhooks.events import (
    Event,
    SourceKind,
    TelemetryCoalescer,
    aggregate_event,
    delivery_id,
    entry_ms,
    log_event,
    source_kind,
)
from hub.webhooks.queue import Delivery, DeliveryQueue
from hub.webhooks.store import GROUP, Hook, WebhookStore

__all__ = ["EventMatcher"]

log = logging.getLogger("telehub.webhooks")

CONSUMER = "reader"
LEASE_TTL_MS = 15_000
LEASE_RENEW_S = 2.0
READ_COUNT = 500
BLOCK_MS = 500
RETRY_S = 1.0
HISTORY = "0-0"
# On a cluster, reading several slots: the wait after a round that found nothing. A new entry waits at most
# this long (webhooks are delivered over HTTP, with retries in seconds), and an idle process costs 1 / POLL_S
# pipelined rounds a second (one XREADGROUP per organization it reads).
POLL_S = 0.05

# KEYS: lease, webhook index. ARGV: this process, ttl ms. 1 held, 0 another holds it, -1 no webhooks left.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if redis.call('ZCARD', KEYS[2]) == 0 then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return -1
end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass
class OrgReader:
    """The streams of one organization this process holds the lease for, and where each read is."""

    org_id: str
    positions: dict[str, str] = field(default_factory=dict)
    # Per telemetry stream read (one per partition: a device is in one, so its per-second buckets are too).
    coalescers: dict[str, TelemetryCoalescer] = field(default_factory=dict)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class EventMatcher:
    def __init__(self, redis: Any, store: WebhookStore, queue: DeliveryQueue, *, node_id: str) -> None:
        self.redis = redis  # bytes replies: frames are binary
        self.store = store
        self.queue = queue
        self.node_id = node_id
        self.readers: dict[str, OrgReader] = {}
        self.wake = asyncio.Event()
        self.running = True
        self._cluster = slot_reads.is_cluster(redis)
        self._lease = redis.register_script(_LEASE)
        self._release = redis.register_script(_RELEASE)

    # Leases.

    async def keep_leases(self) -> None:
        while self.running:
            try:
                await self.refresh_leases()
            except slot_reads.REDIS_ERRORS as exc:
                log.warning("webhooks: leases: %s; retrying", exc)
            except Exception:
                log.exception("webhooks: leases failed")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), LEASE_RENEW_S)

    async def refresh_leases(self) -> None:
        orgs = [_text(o) for o in await self.redis.smembers(keys.WEBHOOK_ORGS)]
        held: dict[str, OrgReader] = {}
        for org_id in orgs:
            state = await self._lease(
                keys=[keys.webhook_reader(org_id), keys.webhooks(org_id)], args=[self.node_id, LEASE_TTL_MS]
            )
            if state == -1:
                await self.store.forget_org_if_empty(org_id)
            elif state == 1:
                held[org_id] = await self._reader(org_id, self.readers.get(org_id))
        self.readers = held

    async def release_leases(self) -> None:
        for org_id in list(self.readers):
            with contextlib.suppress(RedisError, OSError):
                await self._release(keys=[keys.webhook_reader(org_id)], args=[self.node_id])
        self.readers = {}

    async def _reader(self, org_id: str, current: OrgReader | None) -> OrgReader:
        """The reader for a held organization: the streams its webhooks need now, new ones read from their
        pending entries first."""
        kinds = {kind for hook in await self.store.hooks(org_id) for kind in _kinds(hook)}
        reader = current or OrgReader(org_id)
        wanted = {stream: kind for kind in kinds for stream in self.store.sources(org_id, kind)}
        added = {kind for stream, kind in wanted.items() if stream not in reader.positions}
        if added:
            await self.store.ensure_groups(org_id, added)
        reader.positions = {s: reader.positions.get(s, HISTORY) for s in wanted}
        reader.coalescers = {
            stream: reader.coalescers.get(stream) or TelemetryCoalescer(org_id, stream)
            for stream, kind in wanted.items()
            if kind == "telemetry"
        }
        return reader

    # Reading.

    async def run(self) -> None:
        while self.running:
            try:
                if not self.readers:
                    await asyncio.sleep(BLOCK_MS / 1000)
                    continue
                await self.read_once()
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # a stream was lost: its group anew, at its end
                    with contextlib.suppress(RedisError, OSError):
                        await self._regroup()
                    continue
                log.warning("webhooks: matcher: %s; retrying", exc)
                await asyncio.sleep(RETRY_S)
            except slot_reads.REDIS_ERRORS as exc:
                log.warning("webhooks: matcher: %s; retrying", exc)
                await asyncio.sleep(RETRY_S)
            except Exception:
                log.exception("webhooks: matcher failed")
                await asyncio.sleep(RETRY_S)

    async def _regroup(self) -> None:
        for reader in list(self.readers.values()):
            kinds = {kind for hook in await self.store.hooks(reader.org_id) for kind in _kinds(hook)}
            await self.store.ensure_groups(reader.org_id, kinds)

    async def read_once(self) -> None:
        readers = list(self.readers.values())
        streams = {stream: pos for r in readers for stream, pos in r.positions.items()}
        owner = {stream: r for r in readers for stream in r.positions}
        history = any(pos != ">" for pos in streams.values())
        groups = slot_reads.by_slot(streams) if self._cluster else [streams]
        error: Exception | None = None
        if len(groups) <= 1:
            reply = await self.redis.xreadgroup(
                GROUP, CONSUMER, streams, count=READ_COUNT, block=None if history else BLOCK_MS
            )
        else:
            command = ("XREADGROUP", "GROUP", GROUP, CONSUMER, "COUNT", READ_COUNT)
            found = await slot_reads.read_each_slot(self.redis, groups, command)
            reply, error = found.streams, found.error
        batches: dict[str, list[tuple[str, str, dict[bytes, bytes]]]] = defaultdict(list)
        for raw_stream, entries in reply or []:
            stream = _text(raw_stream)
            reader = owner[stream]
            if reader.positions.get(stream, ">") != ">":
                reader.positions[stream] = _text(entries[-1][0]) if entries else ">"
            batches[reader.org_id] += [(stream, _text(entry_id), fields or {}) for entry_id, fields in entries]
        for reader in readers:
            await self._match(reader, batches.get(reader.org_id, []))
        if error is not None:
            raise error
        if len(groups) > 1 and not history and not reply:
            await asyncio.sleep(POLL_S)

    async def _match(self, reader: OrgReader, entries: list[tuple[str, str, dict[bytes, bytes]]]) -> None:
        coalescers = reader.coalescers
        if not entries and not any(c.buckets for c in coalescers.values()):
            return
        org_id = reader.org_id
        hooks = await self.store.hooks(org_id)
        deliveries: list[Delivery] = []
        done: dict[str, list[str]] = defaultdict(list)
        for stream, entry_id, fields in entries:
            coalescer = coalescers.get(stream)
            if coalescer is not None:
                if fields and b"d" in fields and _wanted(hooks, "data.received", entry_ms(entry_id)):
                    coalescer.add(fields[b"d"].decode(), entry_id)
                else:
                    done[stream].append(entry_id)
                continue
            event = self._event(org_id, stream, entry_id, fields)
            if event is not None:
                deliveries += _deliveries(org_id, hooks, event)
            done[stream].append(entry_id)
        for coalescer in coalescers.values():
            for bucket in coalescer.closed(now_ms()):
                deliveries += _deliveries(org_id, hooks, coalescer.event(bucket))
                done[coalescer.source] += bucket.entries
        await self.queue.enqueue(deliveries)
        for stream, ids in done.items():
            for start in range(0, len(ids), 1000):
                await self.redis.xack(stream, GROUP, *ids[start : start + 1000])

    def _event(self, org_id: str, stream: str, entry_id: str, fields: dict[bytes, bytes]) -> Event | None:
        if not fields:
            return None
        if b"e" in fields:
            return log_event(org_id, stream, entry_id, fields)
        if b"p" in fields:
            resolution = stream.rsplit(":", 1)[1]
            return aggregate_event(org_id, stream, resolution, entry_id, fields)
        return None


def _kinds(hook: Hook) -> set[SourceKind]:
    return {source_kind(t) for t in hook.events}


def _wanted(hooks: list[Hook], event_type: str, created_ms: int) -> bool:
    return any(event_type in h.events and created_ms >= h.created_ms for h in hooks)


def _deliveries(org_id: str, hooks: list[Hook], event: Event) -> list[Delivery]:
    """The event for every webhook that subscribes to its type and existed when it happened."""
    return [
        Delivery(delivery_id(event.id, hook.id), org_id, hook.id, event)
        for hook in hooks
        if event.type in hook.events and event.created_ms >= hook.created_ms
    ]
