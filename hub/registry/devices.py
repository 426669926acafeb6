"""Devices of an organization: the registry record, its creation-ordered indexes, and the list filters.

A device is one Redis hash (``keys.device``) listed in two sorted sets scored by a per-org creation number:
all of the org's devices, and the devices of its type. ``status`` and ``last_seen`` live in the device's state
hash (``stream_keys.device_state``), in its partition, where hub/presence.py writes them with its events; it is
made right after the record and removed right after it (a store older than state hashes has them in the
record: read from there when there is no state). The ``status`` and ``q`` filters read the hashes in pipelined
batches. Another organization's device id is simply a key that does not exist: 404.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypedDict

import orjson

from hub import keys
from hub.auth.secrets import new_id
from hub.clock import now_ms
from hub.errors import Conflict, NotFound
from hub.redis_client import StrRedis
from hub.registry.device_keys import DeviceKeys
from hub.registry.records import iso_field, page_ids
from ingest.stream_keys import device_state

__all__ = [
    "DEVICE_ID_PATTERN",
    "DEVICE_TYPE_PATTERN",
    "EDITABLE_FIELDS",
    "STATUSES",
    "DeviceFields",
    "Devices",
]

DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEVICE_TYPE_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
STATUSES = ("online", "offline")
EDITABLE_FIELDS = ("name", "type", "manufacturer", "model", "location", "metadata", "tags")
# Stored as JSON so that a string location and an object location read back as they were given.
JSON_FIELDS = frozenset({"location", "metadata", "tags"})
# Device hashes read per round trip when a list filter has to look at every device.
SCAN_BATCH = 500

# Creates the device unless one with this id exists; the creation number orders both indexes.
_CREATE_DEVICE = """
-- KEYS: device hash, org devices index, devices-of-type index, creation counter
-- ARGV: device id, then field/value pairs
if redis.call('HEXISTS', KEYS[1], 'id') == 1 then return 0 end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'seq', seq, unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
return 1
"""


class DeviceFields(TypedDict, total=False):
    """The fields a client sets; in an update, None clears an optional one."""

    name: str
    type: str
    manufacturer: str | None
    model: str | None
    location: str | dict[str, Any] | None
    metadata: dict[str, Any] | None
    tags: list[str] | None


class Devices:
    def __init__(self, redis: StrRedis, device_keys: DeviceKeys) -> None:
        self.redis = redis
        self.device_keys = device_keys
        self._create = redis.register_script(_CREATE_DEVICE)

    async def create(self, org_id: str, fields: DeviceFields, *, device_id: str | None = None) -> dict[str, Any]:
        """Register a device (``dev_…`` id when none is given); 409 ``device_exists`` when the id is taken."""
        device_id = device_id or new_id("dev")
        now = str(now_ms())
        stored, _ = _encode(fields)
        record = {
            **stored,
            "id": device_id,
            "created_at": now,
            "updated_at": now,
        }
        pairs = [item for pair in record.items() for item in pair]
        created = await self._create(
            keys=[
                keys.device(org_id, device_id),
                keys.devices(org_id),
                keys.devices_by_type(org_id, fields["type"]),
                keys.device_sequence(org_id),
            ],
            args=[device_id, *pairs],
        )
        if not created:
            raise Conflict(f"a device with id {device_id!r} already exists", code="device_exists")
        state = {"status": "offline", "last_seen": ""}
        async with self.redis.pipeline(transaction=True) as pipe:
            # A deleted device of the same id may have left a state behind (a presence write racing its delete).
            pipe.delete(device_state(org_id, device_id))
            pipe.hset(device_state(org_id, device_id), mapping=state)
            await pipe.execute()
        return _public({**record, **state})

    async def get(self, org_id: str, device_id: str) -> dict[str, Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.device(org_id, device_id))
            pipe.hgetall(device_state(org_id, device_id))
            record, state = await pipe.execute()
        if "id" not in record:
            raise NotFound(f"no device {device_id}")
        return _public(_with_state(record, state))

    async def list(
        self,
        org_id: str,
        *,
        status: str | None = None,
        device_type: str | None = None,
        name_contains: str | None = None,
        limit: int,
        offset: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of devices in creation order, and how many match the filters in all."""
        index = keys.devices_by_type(org_id, device_type) if device_type else keys.devices(org_id)
        if status is None and not name_contains:
            ids, total = await page_ids(self.redis, index, limit=limit, offset=offset)
        else:
            matching = await _matching_ids(self.redis, org_id, index, status=status, name_contains=name_contains)
            ids, total = matching[offset : offset + limit], len(matching)
        async with self.redis.pipeline(transaction=False) as pipe:
            for device_id in ids:
                pipe.hgetall(keys.device(org_id, device_id))
                pipe.hgetall(device_state(org_id, device_id))
            replies = await pipe.execute()
        pairs = zip(replies[::2], replies[1::2], strict=True)
        return [_public(_with_state(record, state)) for record, state in pairs if "id" in record], total

    async def update(self, org_id: str, device_id: str, changes: DeviceFields) -> dict[str, Any]:
        """Apply a partial update atomically (moving the device between type indexes); 404 when it is gone."""
        key = keys.device(org_id, device_id)
        stored, cleared = _encode(changes)
        stored["updated_at"] = str(now_ms())

        async def apply(pipe: Any) -> None:
            found, old_type, seq = await pipe.hmget(key, "id", "type", "seq")
            if found is None:
                raise NotFound(f"no device {device_id}")
            new_type = stored.get("type", old_type)
            pipe.multi()
            pipe.hset(key, mapping=stored)
            if cleared:
                pipe.hdel(key, *cleared)
            if new_type != old_type:
                pipe.zrem(keys.devices_by_type(org_id, old_type), device_id)
                pipe.zadd(keys.devices_by_type(org_id, new_type), {device_id: int(seq)})
            pipe.hgetall(key)

        results = await self.redis.transaction(apply, key)
        return _public(_with_state(results[-1], await self.redis.hgetall(device_state(org_id, device_id))))

    async def delete(self, org_id: str, device_id: str) -> None:
        """Remove the device from every index; its key dies with its hash, and its connection is closed."""
        key = keys.device(org_id, device_id)

        async def remove(pipe: Any) -> str | None:
            found, device_type, digest = await pipe.hmget(key, "id", "type", "key_digest")
            if found is None:
                raise NotFound(f"no device {device_id}")
            pipe.multi()
            pipe.delete(key)
            pipe.zrem(keys.devices(org_id), device_id)
            pipe.zrem(keys.devices_by_type(org_id, device_type), device_id)
            digest_seen: str | None = digest
            return digest_seen

        digest = await self.redis.transaction(remove, key, value_from_callable=True)
        await self.redis.delete(device_state(org_id, device_id))
        if digest:
            await self.redis.delete(keys.device_key_by_digest(digest))
        await self.device_keys.announce_revoked(org_id, device_id)

    async def rotate_key(self, org_id: str, device_id: str) -> str:
        """A new ``dk_`` key for the device; the old one stops working at once and its connection is closed."""
        secret = await self.device_keys.issue(org_id, device_id)
        if secret is None:
            raise NotFound(f"no device {device_id}")
        return secret


async def _matching_ids(
    redis: StrRedis, org_id: str, index: str, *, status: str | None, name_contains: str | None
) -> list[str]:
    """The ids in ``index`` (in its order) whose device passes the status and name filters."""
    ids: list[str] = await redis.zrange(index, 0, -1)
    needle = name_contains.casefold() if name_contains else None
    matching: list[str] = []
    for start in range(0, len(ids), SCAN_BATCH):
        batch = ids[start : start + SCAN_BATCH]
        async with redis.pipeline(transaction=False) as pipe:
            for device_id in batch:
                pipe.hmget(keys.device(org_id, device_id), "name", "status")
                pipe.hget(device_state(org_id, device_id), "status")
            rows = await pipe.execute()
        for device_id, (name, recorded_status), state_status in zip(batch, rows[::2], rows[1::2], strict=True):
            if name is None:
                continue
            device_status = state_status or recorded_status
            if status is not None and (device_status or "offline") != status:
                continue
            if needle is not None and needle not in name.casefold():
                continue
            matching.append(device_id)
    return matching


def _with_state(record: dict[str, str], state: Mapping[str, str]) -> dict[str, str]:
    """The record with the state hash's ``status`` and ``last_seen`` (a record from before state hashes keeps
    its own when there is no state)."""
    if "status" in state:
        record["status"] = state["status"]
        record["last_seen"] = state.get("last_seen", "")
    return record


def _encode(fields: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Hash fields to set, and the names of fields to delete (the ones set to None)."""
    stored: dict[str, str] = {}
    cleared: list[str] = []
    for name, value in fields.items():
        if value is None:
            cleared.append(name)
        elif name in JSON_FIELDS:
            stored[name] = orjson.dumps(value).decode()
        else:
            stored[name] = value
    return stored, cleared


def _public(record: Mapping[str, str]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "name": record["name"],
        "type": record["type"],
        "manufacturer": record.get("manufacturer"),
        "model": record.get("model"),
        "location": _json(record, "location", None),
        "metadata": _json(record, "metadata", {}),
        "tags": _json(record, "tags", []),
        "status": record.get("status") or "offline",
        "last_seen": iso_field(record, "last_seen"),
        "created_at": iso_field(record, "created_at"),
        "updated_at": iso_field(record, "updated_at"),
    }


def _json(record: Mapping[str, str], name: str, default: Any) -> Any:
    raw = record.get(name)
    return orjson.loads(raw) if raw else default
