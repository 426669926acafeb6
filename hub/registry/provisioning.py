"""Registration tokens: an operator makes a one-time ``rtk_`` token, a device trades it for its id and key.

Only the token's SHA-256 digest is stored, in a global key (the device knows no organization yet). Claiming
a token is one Lua script, so of two devices racing with the same token exactly one gets a key. The record
outlives the token's expiry by a week, so a late device hears 410 ``token_expired`` rather than 404.
"""

from __future__ import annotations

from typing import Any

from hub import keys
from hub.auth.secrets import key_digest, new_id, new_secret
from hub.clock import iso_ms, now_ms
from hub.errors import Gone, NotFound
from hub.redis_client import StrRedis
from hub.registry.device_keys import DeviceKeys
from hub.registry.devices import Devices

__all__ = [
    "DEFAULT_DEVICE_TYPE",
    "DEFAULT_TOKEN_TTL_S",
    "MAX_TOKEN_TTL_S",
    "MIN_TOKEN_TTL_S",
    "TOKEN_PREFIX",
    "Provisioning",
]

TOKEN_PREFIX = "rtk_"
DEFAULT_TOKEN_TTL_S = 86_400
MIN_TOKEN_TTL_S = 60
MAX_TOKEN_TTL_S = 2_592_000
# How long a token's record is kept past its expiry, to answer 410 instead of 404.
EXPIRED_TOKEN_KEPT_S = 7 * 86_400
# The type of a provisioned device when the token named none.
DEFAULT_DEVICE_TYPE = "generic"

# Check and mark used in one step: the token is good only if it exists, is unused and has not expired.
_CLAIM_TOKEN = """
-- KEYS[1]: the token's hash; ARGV[1]: now in epoch ms
local token = redis.call('HMGET', KEYS[1], 'org_id', 'device_id', 'device_name', 'type', 'expires_at', 'used')
if not token[1] then return {'unknown'} end
if token[6] == '1' then return {'used'} end
if tonumber(ARGV[1]) >= tonumber(token[5]) then return {'expired'} end
redis.call('HSET', KEYS[1], 'used', '1', 'used_at', ARGV[1])
return {'ok', token[1], token[2], token[3], token[4]}
"""


class Provisioning:
    def __init__(self, redis: StrRedis, devices: Devices, device_keys: DeviceKeys) -> None:
        self.redis = redis
        self.devices = devices
        self.device_keys = device_keys
        self._claim = redis.register_script(_CLAIM_TOKEN)

    async def create_token(
        self, *, org_id: str, device_name: str, device_type: str | None, expires_in: int
    ) -> dict[str, Any]:
        """A new token for one future device, whose id is chosen now; the token is shown only here."""
        token = new_secret(TOKEN_PREFIX)
        device_id = new_id("dev")
        expires_at = now_ms() + expires_in * 1000
        key = keys.registration_token(key_digest(token))
        record = {
            "org_id": org_id,
            "device_id": device_id,
            "device_name": device_name,
            "type": device_type or DEFAULT_DEVICE_TYPE,
            "expires_at": str(expires_at),
            "used": "0",
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=record)
            pipe.expire(key, expires_in + EXPIRED_TOKEN_KEPT_S)
            await pipe.execute()
        return {"token": token, "device_id": device_id, "device_name": device_name, "expires_at": iso_ms(expires_at)}

    async def provision(self, token: str) -> dict[str, str]:
        """Spend the token: create its device and issue the device's key. 404 unknown, 410 used or expired."""
        outcome: list[str] = await self._claim(keys=[keys.registration_token(key_digest(token))], args=[now_ms()])
        if outcome[0] == "unknown":
            raise NotFound("no such registration token")
        if outcome[0] == "used":
            raise Gone("this registration token has already been used", code="token_used")
        if outcome[0] == "expired":
            raise Gone("this registration token has expired; ask for a new one", code="token_expired")
        org_id, device_id, device_name, device_type = outcome[1:]
        await self.devices.create(org_id, {"name": device_name, "type": device_type}, device_id=device_id)
        device_key = await self.device_keys.issue(org_id, device_id)
        if device_key is None:  # deleted in the instant since it was made
            raise NotFound(f"device {device_id} was deleted while it was being provisioned")
        return {"device_id": device_id, "device_key": device_key}
