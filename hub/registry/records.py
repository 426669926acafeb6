"""Helpers shared by the stores: reading Redis hashes back into API records, and announcing revocations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from hub import keys
from hub.clock import iso_ms

__all__ = ["announce_credential_revoked", "iso_field", "page_ids", "page_records"]


def iso_field(record: Mapping[str, str], name: str) -> str | None:
    """A stored epoch-ms field as an ISO 8601 string (None when unset)."""
    raw = record.get(name)
    return iso_ms(int(raw)) if raw else None


async def page_records(
    redis: Any, index: str, record_key: Callable[[str], str], *, limit: int, offset: int
) -> tuple[list[dict[str, str]], int]:
    """One page of the hashes an index orders (``record_key`` maps an id to its hash), and the index's size."""
    ids, total = await page_ids(redis, index, limit=limit, offset=offset)
    async with redis.pipeline(transaction=False) as pipe:
        for item_id in ids:
            pipe.hgetall(record_key(item_id))
        records = await pipe.execute()
    return [r for r in records if r], total


async def page_ids(redis: Any, index: str, *, limit: int, offset: int) -> tuple[list[str], int]:
    """One page of ids from a creation-ordered sorted set, and the set's size."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrange(index, offset, offset + limit - 1)
        pipe.zcard(index)
        ids, total = await pipe.execute()
    return list(ids), int(total)


async def announce_credential_revoked(redis: Any, kind: str, org_id: str, credential_id: str) -> None:
    """Tell every process that a user or API key is gone: their dashboard connections close (4001)."""
    message = {"type": "credential_revoked", "kind": kind, "org_id": org_id, "id": credential_id}
    await redis.publish(keys.CONTROL_CHANNEL, orjson.dumps(message))
