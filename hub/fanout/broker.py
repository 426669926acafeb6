"""The Broker (ARCHITECTURE.md, roles): the only fan-out code that talks to Redis Streams.

Offsets are stream ids (``<ms>-<n>``). A stream's epoch is a name kept in the organization's ``epochs`` hash
(``th:{org}:epochs``, field: the stream key), made the first time anyone asks: ``<ms>.<random>``, the time it
was made and a random part. If the stream and the hash are lost together (a Redis without persistence
restarted, a flush), the next epoch differs, and a client resuming with the old one is told
``recovered: false``.

Whether history still reaches back to an offset: streams are trimmed by age (``MINID``: entries older than
the retention go), so the entries after an offset are all there when the oldest entry is at or before it, or
when nothing after it can be old enough to have been trimmed: neither the offset's time nor the epoch's
(a subscription to an empty stream has offset ``0-0``; whatever came later came after the epoch was made)
is older than the retention.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from hub import slot_reads
from hub.fanout.channels import Source
from ingest.history import offset_key
from ingest.stream_keys import PREFIX

__all__ = ["Entry", "StreamBroker", "offset_key"]

Fields = dict[bytes, bytes]
Entry = tuple[str, Fields]


def _entries(raw: list[tuple[bytes, Fields]]) -> list[Entry]:
    return [(entry_id.decode(), fields) for entry_id, fields in raw]


# KEYS[1] a stream; ARGV: after (exclusive), up to (inclusive), at most how many. How many entries lie between
# (up to the most) and the last one's id, counted in Redis so that nothing but a number crosses the network.
_COUNT_BETWEEN = """
local found = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], ARGV[2], 'COUNT', tonumber(ARGV[3]))
if #found == 0 then return {0, ARGV[1]} end
return {#found, found[#found][1]}
"""
# Entries counted by one call of the script: Redis runs nothing else meanwhile, so a long count is cut into
# calls this short (about a millisecond each) and other clients' commands run between them.
COUNT_CHUNK = 500
WAKE_TTL_S = 60


class StreamBroker:
    def __init__(self, redis: Any) -> None:
        # A client with decode_responses=False: frames are bytes.
        self.redis = redis
        self._count_between = redis.register_script(_COUNT_BETWEEN)

    async def epoch(self, source: Source) -> str:
        key = f"{PREFIX}:{{{source.org_id}}}:epochs"
        await self.redis.hsetnx(key, source.key, f"{time.time_ns() // 1_000_000}.{secrets.token_hex(4)}")
        value: bytes = await self.redis.hget(key, source.key)
        return value.decode()

    async def reaches_back(self, key: str, offset: str, epoch: str, retention_ms: int | None) -> bool:
        """Whether every entry after ``offset`` (an offset of ``epoch``) is still in the stream."""
        oldest = await self.oldest(key)
        if oldest is None or offset_key(oldest) <= offset_key(offset):
            return True
        if retention_ms is None:
            return False
        made, _, _ = epoch.partition(".")
        since_ms = max(offset_key(offset)[0], int(made) if made.isdigit() else 0)
        return since_ms >= time.time_ns() // 1_000_000 - retention_ms

    async def newest(self, key: str) -> str:
        """The newest entry's id, ``0-0`` for an empty stream."""
        found = await self.redis.xrevrange(key, count=1)
        return found[0][0].decode() if found else "0-0"

    async def oldest(self, key: str) -> str | None:
        found = await self.redis.xrange(key, count=1)
        return found[0][0].decode() if found else None

    async def after(self, key: str, offset: str, count: int, *, upto: str = "+") -> list[Entry]:
        """Up to ``count`` entries after ``offset`` (and at or before ``upto``), oldest first."""
        return _entries(await self.redis.xrange(key, min="(" + offset, max=upto, count=count))

    async def count_between(self, key: str, offset: str, upto: str, limit: int) -> int:
        """The number of entries after ``offset`` and at or before ``upto`` when more than ``limit`` (then
        ``limit + 1``); 0 when the stream holds no more than ``limit`` in all (the exact count is not needed)."""
        if await self.redis.xlen(key) <= limit:  # the common case, without reading the entries
            return 0
        counted, after = 0, offset
        while counted <= limit:
            chunk = min(COUNT_CHUNK, limit + 1 - counted)
            found, last = await self._count_between(keys=[key], args=[after, upto, chunk])
            counted += int(found)
            if found < chunk:
                break
            after = last.decode() if isinstance(last, bytes) else str(last)
        return counted

    async def last(self, key: str, count: int, *, upto: str = "+") -> list[Entry]:
        """The newest ``count`` entries (at or before ``upto``), oldest first."""
        return _entries(await self.redis.xrevrange(key, max=upto, count=count))[::-1]

    async def entry(self, key: str, entry_id: str) -> Fields | None:
        found = await self.redis.xrange(key, min=entry_id, max=entry_id, count=1)
        return found[0][1] if found else None

    async def wake(self, key: str) -> None:
        """Add an entry to a wake stream (one entry kept, gone a minute after the last): a read blocked on it
        returns."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {b"w": b"1"}, maxlen=1, approximate=False)
            pipe.expire(key, WAKE_TTL_S)
            await pipe.execute()

    async def read(self, positions: dict[str, str], *, block_ms: int, count: int) -> list[tuple[str, list[Entry]]]:
        """New entries after each key's position, waiting up to ``block_ms`` for the first one."""
        replies = await self.redis.xread(positions, count=count, block=block_ms)
        return [(key.decode(), _entries(entries)) for key, entries in replies or ()]

    async def poll(
        self, groups: list[dict[str, str]], *, count: int
    ) -> tuple[list[tuple[str, list[Entry]]], Exception | None]:
        """New entries after each key's position, without waiting: one ``XREAD`` per group (the keys of one
        hash slot of a cluster), all in one pipeline. Also the first group's error, if any: the entries of the
        groups that answered are returned all the same, for the caller to deliver before raising it."""
        found = await slot_reads.read_each_slot(self.redis, groups, ("XREAD", "COUNT", count))
        return [(key.decode(), _entries(entries)) for key, entries in found.streams], found.error
