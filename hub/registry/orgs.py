"""Organizations: the tenants every resource belongs to."""

from __future__ import annotations

from typing import Any

from hub import keys
from hub.auth.secrets import new_id
from hub.clock import now_ms
from hub.redis_client import StrRedis
from hub.registry.records import iso_field

__all__ = ["Organizations"]


class Organizations:
    def __init__(self, redis: StrRedis) -> None:
        self.redis = redis

    async def create(self, *, name: str) -> dict[str, Any]:
        org_id = new_id("org")
        created = now_ms()
        # Two slots under Redis Cluster (the org's tag, and the global set), so no transaction: the record
        # first, then the membership that makes the organization exist (exists() reads the set).
        await self.redis.hset(keys.org(org_id), mapping={"id": org_id, "name": name, "created_at": created})
        await self.redis.sadd(keys.ORGS, org_id)
        return {"id": org_id, "name": name, "created_at": iso_field({"c": str(created)}, "c")}

    async def get(self, org_id: str) -> dict[str, Any] | None:
        record = await self.redis.hgetall(keys.org(org_id))
        if not record:
            return None
        return {"id": record["id"], "name": record["name"], "created_at": iso_field(record, "created_at")}

    async def exists(self, org_id: str) -> bool:
        return bool(await self.redis.sismember(keys.ORGS, org_id))

    async def count(self) -> int:
        return int(await self.redis.scard(keys.ORGS))
