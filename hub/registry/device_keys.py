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
    """The device hash's ``key_digest`` field says which key is live; ``th:devkey:<digest>`` only indexes it.

    A key is accepted only when its index entry names a device whose hash still holds that digest, so a
    rotation or delete takes effect with the single write to the device hash, whatever order the index
    writes land in (and no cross-slot transaction is needed under Redis Cluster).
    """

    def __init__(self, redis: StrRedis) -> None:
        self.redis = redis

    async def issue(self, org_id: str, device_id: str) -> str | None:
        """A new key for an existing device (None if there is no such device); the previous key stops working
        and the device's live connection is closed."""
        secret = new_secret(DEVICE_KEY_PREFIX)
        digest = key_digest(secret)
        device = keys.device(org_id, device_id)
        # Index first: the key is live only once the device hash names it.
        await self.redis.hset(keys.device_key_by_digest(digest), mapping={"org_id": org_id, "device_id": device_id})
        old = await self.redis.eval(_SWAP_DIGEST, 1, device, digest)
        if old is None:
            await self.redis.delete(keys.device_key_by_digest(digest))
            return None
        if old:
            await self.redis.delete(keys.device_key_by_digest(old))
            await self.announce_revoked(org_id, device_id)
        return secret

    async def revoke(self, org_id: str, device_id: str) -> None:
        device = keys.device(org_id, device_id)
        old = await self.redis.eval(_DROP_DIGEST, 1, device)
        if old:
            await self.redis.delete(keys.device_key_by_digest(old))
        await self.announce_revoked(org_id, device_id)

    async def resolve(self, secret: str) -> Principal | None:
        digest = key_digest(secret)
        record = await self.redis.hgetall(keys.device_key_by_digest(digest))
        if not record:
            return None
        org_id, device_id = record["org_id"], record["device_id"]
        if await self.redis.hget(keys.device(org_id, device_id), "key_digest") != digest:
            return None
        return Principal(kind="device", id=device_id, org_id=org_id, role=Role.DEVICE, device_id=device_id)

    async def announce_revoked(self, org_id: str, device_id: str) -> None:
        """Tell every process to close this device's connection (the device gateway listens)."""
        message = {"type": "device_key_revoked", "org_id": org_id, "device_id": device_id}
        await self.redis.publish(keys.CONTROL_CHANNEL, orjson.dumps(message))


# KEYS[1] device hash, ARGV[1] new digest. Returns the old digest ('' if none), or nil if no such device.
_SWAP_DIGEST = """
if redis.call('HEXISTS', KEYS[1], 'id') == 0 then return nil end
local old = redis.call('HGET', KEYS[1], 'key_digest') or ''
redis.call('HSET', KEYS[1], 'key_digest', ARGV[1])
return old
"""

# KEYS[1] device hash. Removes and returns its digest ('' if none).
_DROP_DIGEST = """
local old = redis.call('HGET', KEYS[1], 'key_digest') or ''
redis.call('HDEL', KEYS[1], 'key_digest')
return old
"""
