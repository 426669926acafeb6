"""Helpers shared by the stores: reading Redis hashes back into API records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.clock import iso_ms

__all__ = ["iso_field", "page_ids"]


def iso_field(record: Mapping[str, str], name: str) -> str | None:
    """A stored epoch-ms field as an ISO 8601 string (None when unset)."""
    raw = record.get(name)
    return iso_ms(int(raw)) if raw else None


async def page_ids(redis: Any, index: str, *, limit: int, offset: int) -> tuple[list[str], int]:
    """One page of ids from a creation-ordered sorted set, and the set's size."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrange(index, offset, offset + limit - 1)
        pipe.zcard(index)
        ids, total = await pipe.execute()
    return list(ids), int(total)
