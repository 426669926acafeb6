"""Online/offline: the device record's ``status`` and ``last_seen``, and device.online/offline events."""

from __future__ import annotations

import orjson

from hub import keys
from hub.clock import now_ms
from hub.redis_client import StrRedis
from ingest import stream_keys
from ingest.ports import DeviceIdentity
from ingest.stream_writer import Retention

__all__ = ["Presence"]

# KEYS: device hash, device event stream, org event stream. ARGV: connection id, now ms, event payload,
# events min id, 'online' | 'offline', the process (node) holding the connection. Online always wins; offline
# only from the connection that is current (a replaced connection closing must not mark its successor's device
# offline). Nothing for a deleted device.
_PRESENCE = """
if redis.call('HEXISTS', KEYS[1], 'id') == 0 then return 0 end
local state = ARGV[5]
if state == 'offline' and redis.call('HGET', KEYS[1], 'connection') ~= ARGV[1] then return 0 end
if state == 'online' then
  redis.call('HSET', KEYS[1], 'status', 'online', 'last_seen', ARGV[2], 'connection', ARGV[1], 'node', ARGV[6])
else
  redis.call('HSET', KEYS[1], 'status', 'offline', 'last_seen', ARGV[2])
  redis.call('HDEL', KEYS[1], 'connection', 'node')
end
local kind = 'device.' .. state
local device = redis.call('HGET', KEYS[1], 'id')
redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[4], '*', 'e', kind, 'd', device, 'b', '0', 'f', ARGV[3])
redis.call('XADD', KEYS[3], 'MINID', '~', ARGV[4], '*', 'e', kind, 'd', device, 'b', '0', 'f', ARGV[3])
return 1
"""


class Presence:
    """The hub's :class:`ingest.ports.PresenceSink`."""

    def __init__(self, redis: StrRedis, *, retention: Retention, node_id: str = "") -> None:
        self.redis = redis
        # The process holding the connections marked online here: where commands for them are routed.
        self.node_id = node_id
        self.retention = retention
        self._script = redis.register_script(_PRESENCE)

    async def connected(self, device: DeviceIdentity, connection_id: str) -> None:
        await self._mark(device, connection_id, "online")

    async def disconnected(self, device: DeviceIdentity, connection_id: str) -> None:
        await self._mark(device, connection_id, "offline")

    async def _mark(self, device: DeviceIdentity, connection_id: str, state: str) -> None:
        now = now_ms()
        payload = orjson.dumps({"type": f"device.{state}", "device_id": device.device_id, "ts": now})
        await self._script(
            keys=[
                keys.device(device.org_id, device.device_id),
                stream_keys.device_events(device.org_id, device.device_id),
                stream_keys.org_events(device.org_id),
            ],
            args=[connection_id, now, payload, now - self.retention.events_ms, state, self.node_id],
        )
