"""Webhooks in Redis: each a hash, indexed per organization, plus the delivery log of each.

- ``th:{org}:webhook:<id>`` hash (``keys.webhook``), ``th:{org}:webhooks`` sorted set by creation ms, and the
  global set ``th:webhook-orgs`` of organizations with at least one webhook (what the matchers read);
- ``th:{org}:whlog:<id>`` stream: one entry per delivery attempt (``j``: JSON), capped at ``LOG_LENGTH``;
- consumer group ``webhooks`` on each source stream the organization's webhooks need (its event log,
  telemetry stream, aggregate streams), made at ``$`` when a webhook first needs that stream, so a new
  webhook never receives what happened before it existed.

The secret is kept as is (it must sign), never returned after creation and never logged.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import ResponseError

from hub import keys
from hub.clock import iso_ms, now_ms
from hub.redis_client import StrRedis
from hub.webhooks.events import SourceKind, source_kind
from ingest import stream_keys

__all__ = ["GROUP", "LOG_LENGTH", "MAX_WEBHOOKS", "Hook", "TooManyWebhooks", "WebhookStore", "public"]

GROUP = "webhooks"
MAX_WEBHOOKS = 20
LOG_LENGTH = 1000


class TooManyWebhooks(Exception):
    """The organization has ``MAX_WEBHOOKS`` webhooks."""


@dataclass(frozen=True, slots=True)
class Hook:
    """What the matcher needs of a webhook."""

    id: str
    events: frozenset[str]
    created_ms: int


# KEYS: index, hash. ARGV: id, created ms, url, events, secret, created_at, limit. 'limit' when full.
_CREATE = """
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[7]) then return 'limit' end
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'created_ms', ARGV[2], 'url', ARGV[3], 'events', ARGV[4],
  'secret', ARGV[5], 'created_at', ARGV[6])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 'ok'
"""

# KEYS: index. ARGV: the webhook hash key prefix. Every webhook's id, events and creation ms.
_HOOKS = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local h = redis.call('HMGET', ARGV[1] .. id, 'events', 'created_ms')
  if h[1] then out[#out + 1] = {id, h[1], h[2]} end
end
return out
"""

# KEYS: hash, log. ARGV: the attempt (JSON), the log's length.
_LOG = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'j', ARGV[1])
return 1
"""


def public(fields: dict[str, str]) -> dict[str, Any]:
    """A webhook as the API shows it (never its secret)."""
    return {
        "id": fields["id"],
        "url": fields["url"],
        "events": fields["events"].split(","),
        "created_at": fields["created_at"],
    }


def new_webhook_id() -> str:
    return "whk_" + secrets.token_urlsafe(12)


class WebhookStore:
    def __init__(self, redis: StrRedis, *, resolutions: Iterable[str]) -> None:
        self.redis = redis
        self.resolutions = tuple(resolutions)
        self._create = redis.register_script(_CREATE)
        self._hooks = redis.register_script(_HOOKS)
        self._log = redis.register_script(_LOG)

    # REST.

    async def create(self, org_id: str, *, url: str, events: list[str], secret: str) -> dict[str, Any]:
        before = {source_kind(t) for hook in await self.hooks(org_id) for t in hook.events}
        webhook_id = new_webhook_id()
        now = now_ms()
        created_at = iso_ms(now)
        outcome = await self._create(
            keys=[keys.webhooks(org_id), keys.webhook(org_id, webhook_id)],
            args=[webhook_id, now, url, ",".join(events), secret, created_at, MAX_WEBHOOKS],
        )
        if outcome == "limit":
            raise TooManyWebhooks
        needed = {source_kind(t) for t in events}
        await self.ensure_groups(org_id, needed, fresh=needed - before)
        await self.redis.sadd(keys.WEBHOOK_ORGS, org_id)
        return {"id": webhook_id, "url": url, "events": events, "secret": secret, "created_at": created_at}

    async def page(self, org_id: str, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.webhooks(org_id), offset, offset + limit - 1)
            pipe.zcard(keys.webhooks(org_id))
            ids, total = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for webhook_id in ids:
                pipe.hgetall(keys.webhook(org_id, webhook_id))
            found = await pipe.execute()
        return [public(fields) for fields in found if fields], int(total)

    async def exists(self, org_id: str, webhook_id: str) -> bool:
        return bool(await self.redis.exists(keys.webhook(org_id, webhook_id)))

    async def delete(self, org_id: str, webhook_id: str) -> bool:
        """Remove the webhook and its log; its queued deliveries are dropped when their turn comes."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.webhook(org_id, webhook_id))
            pipe.zrem(keys.webhooks(org_id), webhook_id)
            pipe.delete(keys.webhook_log(org_id, webhook_id))
            deleted, _, _ = await pipe.execute()
        return bool(deleted)

    async def deliveries(
        self, org_id: str, webhook_id: str, *, limit: int, before: str | None
    ) -> list[tuple[str, dict[str, Any]]]:
        """The newest attempts first, after the log entry ``before`` (exclusive)."""
        top = f"({before}" if before else "+"
        entries = await self.redis.xrevrange(keys.webhook_log(org_id, webhook_id), top, "-", count=limit)
        return [(entry_id, orjson.loads(fields["j"])) for entry_id, fields in entries]

    # Delivery.

    async def endpoint(self, org_id: str, webhook_id: str) -> tuple[str, str] | None:
        """(url, secret) of a webhook, or None when it was deleted."""
        url, secret = await self.redis.hmget(keys.webhook(org_id, webhook_id), "url", "secret")
        return None if url is None or secret is None else (url, secret)

    async def append_log(self, org_id: str, webhook_id: str, attempt: dict[str, Any]) -> None:
        """Log an attempt, unless the webhook is gone (a deleted webhook's log must not come back)."""
        await self._log(
            keys=[keys.webhook(org_id, webhook_id), keys.webhook_log(org_id, webhook_id)],
            args=[orjson.dumps(attempt), LOG_LENGTH],
        )

    # Matching.

    async def hooks(self, org_id: str) -> list[Hook]:
        rows = await self._hooks(keys=[keys.webhooks(org_id)], args=[keys.webhook(org_id, "")])
        return [Hook(_text(i), frozenset(_text(e).split(",")), int(c or 0)) for i, e, c in rows]

    def sources(self, org_id: str, kind: SourceKind) -> list[str]:
        """The stream keys events of ``kind`` are read from."""
        partitions = range(stream_keys.partitions())
        if kind == "events":
            return stream_keys.org_event_streams(org_id)
        if kind == "telemetry":
            return [stream_keys.org_telemetry(org_id, p) for p in partitions]
        return [
            stream_keys.org_aggregates(org_id, resolution, p) for resolution in self.resolutions for p in partitions
        ]

    async def ensure_groups(
        self, org_id: str, kinds: Iterable[SourceKind], *, fresh: Iterable[SourceKind] = ()
    ) -> None:
        """Make the consumer group of every source stream of ``kinds`` (at the stream's end); for ``fresh``
        kinds, that no webhook of the organization needed until now, move an old group to the end too."""
        fresh = set(fresh)
        for kind in kinds:
            for stream in self.sources(org_id, kind):
                try:
                    await self.redis.xgroup_create(stream, GROUP, id="$", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                    if kind in fresh:
                        await self.redis.xgroup_setid(stream, GROUP, id="$")

    async def forget_org_if_empty(self, org_id: str) -> None:
        """Drop the organization from the matchers' set when it has no webhook left (checked again after, so
        a webhook created meanwhile puts it back)."""
        if await self.redis.zcard(keys.webhooks(org_id)) == 0:
            await self.redis.srem(keys.WEBHOOK_ORGS, org_id)
            if await self.redis.zcard(keys.webhooks(org_id)) > 0:
                await self.redis.sadd(keys.WEBHOOK_ORGS, org_id)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
