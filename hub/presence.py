"""Online/offline: the device's state hash (``status``, ``last_seen``, and where it is connected), kept in its
partition next to its event streams (ingest/stream_keys.py ``device_state``), and device.online/offline events."""

from __future__ import annotations

import orjson

from hub import keys
from hub.clock import now_ms
from hub.redis_client import StrRedis
from ingest import stream_keys
from ingest.ports import DeviceIdentity
from ingest.stream_writer import Retention

__all__ = ["Presence"]

# KEYS (of the device's partition): its state hash, its event stream, the partition's org event stream. ARGV:
# connection id, now ms, event payload, events min id, 'online' | 'offline', the process (node) holding the
# connection, the device id. Online always wins; offline only from the connection that is current (a replaced
# connection closing must not mark its successor's device offline). Nothing for a device without a state hash
# (deleted, or made before states existed: see Presence._mark); returns -1 then.
_PRESENCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local state = ARGV[5]
if state == 'offline' and redis.call('HGET', KEYS[1], 'connection') ~= ARGV[1] then return 0 end
if state == 'online' then
  redis.call('HSET', KEYS[1], 'status', 'online', 'last_seen', ARGV[2], 'connection', ARGV[1], 'node', ARGV[6])
else
  redis.call('HSET', KEYS[1], 'status', 'offline', 'last_seen', ARGV[2])
  redis.call('HDEL', KEYS[1], 'connection', 'node')
end
local kind = 'device.' .. state
redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[4], '*', 'e', kind, 'd', ARGV[7], 'b', '0', 'f', ARGV[3])
redis.call('XADD', KEYS[3], 'MINID', '~', ARGV[4], '*', 'e', kind, 'd', ARGV[7], 'b', '0', 'f', ARGV[3])
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
        org_id, device_id = device.org_id, device.device_id
        now = now_ms()
        payload = orjson.dumps({"type": f"device.{state}", "device_id": device_id, "ts": now})
        script_keys = [
            stream_keys.device_state(org_id, device_id),
            stream_keys.device_events(org_id, device_id),
            stream_keys.org_events(org_id, stream_keys.partition_of(device_id)),
        ]
        args = [connection_id, now, payload, now - self.retention.events_ms, state, self.node_id, device_id]
        if await self._script(keys=script_keys, args=args) != -1 or state != "online":
            return
        # No state hash: the registry makes one right after the record (a crash may have come in between), and
        # a store older than state hashes has none. A device whose record exists gets one, then is marked.
        if await self.redis.hexists(keys.device(org_id, device_id), "id"):
            await self.redis.hsetnx(script_keys[0], "status", "offline")
            await self._script(keys=script_keys, args=args)
