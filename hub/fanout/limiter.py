"""Dashboard connections per credential, counted across every process on the Redis.

Each open connection holds a lease: a member of the credential's sorted set
(``th:{org}:dashboards:<kind>:<id>``) scored with the time it expires. Admitting drops expired leases and adds
one only while fewer than the limit remain, in one script, so two processes cannot both take the last place.
A process renews its leases every ``RENEW_S``; the leases of a process that died expire ``LEASE_S`` later, so
a crash does not hold places for ever. The script reads Redis's clock, so the hosts' clocks do not matter.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from hub.auth.principal import Principal
from ingest.stream_keys import PREFIX
from ingest.tasks import cancel_and_wait

__all__ = ["ConnectionLimiter", "Lease"]

log = logging.getLogger("telehub.fanout")
LEASE_S = 60
RENEW_S = 20

# KEYS[1]: the credential's leases. ARGV: member, limit, lease seconds. 1 when admitted.
_ADMIT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[3]) * 1000, ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# KEYS[1]: one credential's leases; ARGV: lease seconds, then this process's members.
_RENEW = """
local now = redis.call('TIME')
local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1]) * 1000
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i])
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return #ARGV - 1
"""


@dataclass(frozen=True)
class Lease:
    key: str
    member: str


class ConnectionLimiter:
    def __init__(self, redis: Any, limit: int) -> None:
        self.redis = redis
        self.limit = limit
        self._admit = redis.register_script(_ADMIT)
        self._renew = redis.register_script(_RENEW)
        self._prefix = secrets.token_hex(4)
        self._serial = itertools.count(1)
        self._held: set[Lease] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._renew_forever(), name="dashboard-leases")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])

    async def admit(self, principal: Principal) -> Lease | None:
        """A lease for one more connection of ``principal``'s credential; None when it has ``limit`` already."""
        key = f"{PREFIX}:{{{principal.org_id}}}:dashboards:{principal.kind}:{principal.id}"
        lease = Lease(key, f"{self._prefix}:{next(self._serial)}")
        if not await self._admit(keys=[key], args=[lease.member, self.limit, LEASE_S]):
            return None
        self._held.add(lease)
        return lease

    async def release(self, lease: Lease) -> None:
        self._held.discard(lease)
        try:
            await self.redis.zrem(lease.key, lease.member)
        except (RedisError, OSError) as exc:  # the lease expires on its own
            log.warning("could not release a dashboard connection lease: %s", exc)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_S)
            members: dict[str, list[str]] = {}
            for lease in self._held:
                members.setdefault(lease.key, []).append(lease.member)
            if not members:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for key, held in members.items():  # one key per call: fine on a cluster too
                        await self._renew(keys=[key], args=[LEASE_S, *held], client=pipe)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("could not renew dashboard connection leases: %s", exc)
