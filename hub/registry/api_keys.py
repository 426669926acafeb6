"""API keys: org-scoped credentials with a role, shown once and stored as SHA-256 digests."""

from __future__ import annotations

from typing import Any

from hub import keys
from hub.auth.principal import Principal, Role
from hub.auth.secrets import key_digest, new_id, new_secret
from hub.clock import now_ms
from hub.errors import NotFound
from hub.redis_client import StrRedis
from hub.registry.records import announce_credential_revoked, iso_field, page_records

__all__ = ["API_KEY_PREFIX", "ApiKeys"]

API_KEY_PREFIX = "sk_live_"
# How much of a key is kept in clear to tell keys apart in listings.
SHOWN_PREFIX_CHARS = 12


class ApiKeys:
    def __init__(self, redis: StrRedis) -> None:
        self.redis = redis

    async def create(self, *, org_id: str, name: str, role: Role) -> dict[str, Any]:
        """Create a key; the reply carries the secret ``key``, which is never shown again."""
        key_id = new_id("key")
        secret = new_secret(API_KEY_PREFIX)
        digest = key_digest(secret)
        created = now_ms()
        record = {
            "id": key_id,
            "org_id": org_id,
            "name": name,
            "role": role.value,
            "digest": digest,
            "prefix": secret[:SHOWN_PREFIX_CHARS],
            "created_at": str(created),
        }
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.api_key(org_id, key_id), mapping=record)
            pipe.zadd(keys.api_keys(org_id), {key_id: created})
            pipe.hset(
                keys.api_key_by_digest(digest),
                mapping={"id": key_id, "org_id": org_id, "role": role.value},
            )
            await pipe.execute()
        return {**_public(record), "key": secret}

    async def list(self, org_id: str, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        records, total = await page_records(
            self.redis, keys.api_keys(org_id), lambda key_id: keys.api_key(org_id, key_id), limit=limit, offset=offset
        )
        return [_public(r) for r in records], total

    async def revoke(self, org_id: str, key_id: str) -> None:
        """Delete the key; the digest lookup goes first, so the key stops working at once on every process."""
        digest = await self.redis.hget(keys.api_key(org_id, key_id), "digest")
        if digest is None:
            raise NotFound(f"no API key {key_id}")
        await self.redis.delete(keys.api_key_by_digest(digest))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.api_key(org_id, key_id))
            pipe.zrem(keys.api_keys(org_id), key_id)
            await pipe.execute()
        await announce_credential_revoked(self.redis, "api_key", org_id, key_id)

    async def resolve(self, secret: str) -> Principal | None:
        record = await self.redis.hgetall(keys.api_key_by_digest(key_digest(secret)))
        if not record:
            return None
        return Principal(kind="api_key", id=record["id"], org_id=record["org_id"], role=Role(record["role"]))


def _public(record: dict[str, str]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "name": record["name"],
        "role": record["role"],
        "prefix": record["prefix"],
        "created_at": iso_field(record, "created_at"),
    }
