"""The durable delivery queue, in Redis: a stream read by the consumer group ``senders`` (a consumer per
process), a retry schedule, and a record per delivery. The three share the hash tag ``{webhooks}``, so each
change below is one script on one slot.

- ``enqueue``: makes the record (``keys.webhook_delivery``: org, webhook, type, event, body, attempts, state)
  and adds its id to the stream, unless the record exists: a delivery id seen before (an entry read again
  after a crash) is not queued twice.
- ``settle``: after an attempt, acknowledges and deletes the stream entry and either schedules the next
  attempt (``retry``: attempts + 1, due in the retry sorted set), puts the delivery back without counting an
  attempt (``park``: its endpoint's local queue is full, or the process is stopping), or ends it
  (``delivered``, ``failed``, ``dropped``: the body is dropped and the record kept ``DONE_TTL_S`` to refuse
  the same id). An entry already acknowledged (settled by a process that took it over) changes nothing.
- ``promote``: moves due deliveries from the retry set back to the stream, on any process.
- ``claim``: takes over entries another process read and left untouched for the claim idle time (it died);
  ``touch`` keeps a live process's entries from looking idle while they wait in its local queues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from hub import keys
from hub.webhooks.events import Event

__all__ = ["DONE_TTL_S", "GROUP", "Delivery", "DeliveryQueue", "Taken"]

GROUP = "senders"
# How long an ended delivery's record stays, so the same delivery id is not queued again.
DONE_TTL_S = 3600
RECORD_MIN_TTL_S = 2 * 86_400

# KEYS: record, queue. ARGV: ttl s, delivery id, org, webhook, type, event id, body.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'org', ARGV[3], 'webhook', ARGV[4], 'type', ARGV[5], 'event', ARGV[6],
  'body', ARGV[7], 'attempts', 0, 'state', 'pending')
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'd', ARGV[2])
return 1
"""

# KEYS: record, queue, retries. ARGV: entry id, delivery id, outcome, due ms, done ttl s.
_SETTLE = """
if redis.call('XACK', KEYS[2], 'senders', ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[2], ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'pending' then return 0 end
local outcome = ARGV[3]
if outcome == 'park' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
elseif outcome == 'retry' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
else
  if outcome ~= 'dropped' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
  redis.call('HSET', KEYS[1], 'state', outcome)
  redis.call('HDEL', KEYS[1], 'body')
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
return 1
"""

# KEYS: retries, queue. ARGV: now ms, most to move.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('XADD', KEYS[2], '*', 'd', id)
end
return #due
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event for one webhook."""

    id: str
    org_id: str
    webhook_id: str
    event: Event


@dataclass(frozen=True, slots=True)
class Taken:
    """A stream entry this process took: the delivery it names."""

    entry_id: str
    delivery_id: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class DeliveryQueue:
    def __init__(self, redis: Any, *, backoff_ms: Sequence[int]) -> None:
        self.redis = redis
        self.record_ttl_s = max(RECORD_MIN_TTL_S, 3 * sum(backoff_ms) // 1000)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._settle = redis.register_script(_SETTLE)
        self._promote = redis.register_script(_PROMOTE)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(keys.WEBHOOK_QUEUE, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in deliveries:
                await self._enqueue(
                    keys=[keys.webhook_delivery(d.id), keys.WEBHOOK_QUEUE],
                    args=[self.record_ttl_s, d.id, d.org_id, d.webhook_id, d.event.type, d.event.id, d.event.body],
                    client=pipe,
                )
            await pipe.execute()

    async def read(self, consumer: str, *, count: int, block_ms: int) -> list[Taken]:
        reply = await self.redis.xreadgroup(GROUP, consumer, {keys.WEBHOOK_QUEUE: ">"}, count=count, block=block_ms)
        return [
            Taken(_text(entry_id), _text(fields[b"d"])) for _, entries in reply or [] for entry_id, fields in entries
        ]

    async def records(self, taken: Sequence[Taken]) -> list[dict[str, str]]:
        """Each delivery's record, decoded (empty when it expired)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in taken:
                pipe.hgetall(keys.webhook_delivery(item.delivery_id))
            found = await pipe.execute()
        return [{_text(k): _text(v) for k, v in fields.items()} for fields in found]

    async def settle(self, taken: Taken, outcome: str, *, due_ms: int = 0) -> bool:
        made = await self._settle(
            keys=[keys.webhook_delivery(taken.delivery_id), keys.WEBHOOK_QUEUE, keys.WEBHOOK_RETRIES],
            args=[taken.entry_id, taken.delivery_id, outcome, due_ms, DONE_TTL_S],
        )
        return bool(made)

    async def park_all(self, taken: Sequence[Taken], *, due_ms: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in taken:
                await self._settle(
                    keys=[keys.webhook_delivery(item.delivery_id), keys.WEBHOOK_QUEUE, keys.WEBHOOK_RETRIES],
                    args=[item.entry_id, item.delivery_id, "park", due_ms, DONE_TTL_S],
                    client=pipe,
                )
            await pipe.execute()

    async def promote(self, now_ms: int, *, limit: int = 500) -> int:
        moved: int = await self._promote(keys=[keys.WEBHOOK_RETRIES, keys.WEBHOOK_QUEUE], args=[now_ms, limit])
        return moved

    async def touch(self, consumer: str, entry_ids: Sequence[str]) -> None:
        for start in range(0, len(entry_ids), 500):
            chunk = list(entry_ids[start : start + 500])
            await self.redis.xclaim(keys.WEBHOOK_QUEUE, GROUP, consumer, 0, chunk, justid=True)

    async def claim(self, consumer: str, *, min_idle_ms: int, count: int = 100) -> list[Taken]:
        """Entries idle for ``min_idle_ms`` in any consumer, now this one's."""
        reply = await self.redis.xautoclaim(keys.WEBHOOK_QUEUE, GROUP, consumer, min_idle_ms, "0-0", count=count)
        taken: list[Taken] = []
        for entry_id, fields in reply[1]:
            if fields and b"d" in fields:
                taken.append(Taken(_text(entry_id), _text(fields[b"d"])))
            else:  # deleted meanwhile: nothing to deliver
                await self.redis.xack(keys.WEBHOOK_QUEUE, GROUP, entry_id)
        return taken

    async def forget_idle_consumers(self, me: str, *, idle_ms: int) -> None:
        """Remove consumers (processes gone) that hold nothing and were idle that long."""
        for consumer in await self.redis.xinfo_consumers(keys.WEBHOOK_QUEUE, GROUP):
            name = _text(consumer["name"])
            if name != me and int(consumer["pending"]) == 0 and int(consumer["idle"]) >= idle_ms:
                await self.redis.xgroup_delconsumer(keys.WEBHOOK_QUEUE, GROUP, name)
