"""Device keys ``dk_…``: one live key per device, stored as a digest, rotated or revoked at once."""

from __future__ import annotations

import orjson

from hub import keys
from hub.auth.principal import Principal, Role
from hub.auth.secrets import key_digest, new_secret
from hub.redis_client import StrRedis

__all__ = ["DEVICE_KEY_PREFIX", "DeviceKeys"]

DEVICE_KEY_PREFIX = "dk_"


class DeviceKeys:
    def __init__(self, redis: StrRedis) -> None:
        self.redis = redis

    async def issue(self, org_id: str, device_id: str) -> str:
        """A new key for the device; its previous key stops working and its live connection is closed."""
        secret = new_secret(DEVICE_KEY_PREFIX)
        digest = key_digest(secret)
        old = await self.redis.hget(keys.device(org_id, device_id), "key_digest")
        async with self.redis.pipeline(transaction=False) as pipe:
            if old:
                pipe.delete(keys.device_key_by_digest(old))
            pipe.hset(keys.device_key_by_digest(digest), mapping={"org_id": org_id, "device_id": device_id})
            pipe.hset(keys.device(org_id, device_id), "key_digest", digest)
            await pipe.execute()
        if old:
            await self._announce_revoked(org_id, device_id)
        return secret

    async def revoke(self, org_id: str, device_id: str) -> None:
        old = await self.redis.hget(keys.device(org_id, device_id), "key_digest")
        if old:
            await self.redis.delete(keys.device_key_by_digest(old))
        await self._announce_revoked(org_id, device_id)

    async def resolve(self, secret: str) -> Principal | None:
        record = await self.redis.hgetall(keys.device_key_by_digest(key_digest(secret)))
        if not record:
            return None
        device_id = record["device_id"]
        return Principal(kind="device", id=device_id, org_id=record["org_id"], role=Role.DEVICE, device_id=device_id)

    async def _announce_revoked(self, org_id: str, device_id: str) -> None:
        """Tell every process to close this device's connection (the device gateway listens)."""
        message = {"type": "device_key_revoked", "org_id": org_id, "device_id": device_id}
        await self.redis.publish(keys.CONTROL_CHANNEL, orjson.dumps(message))
