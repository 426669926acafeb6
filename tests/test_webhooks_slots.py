"""The webhook matcher reading for several organizations on the local Redis Cluster: each organization's source
streams are in its own slot, which one XREADGROUP cannot span."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from redis.exceptions import ResponseError

from hub import slot_reads
from hub.redis_client import open_pool_client
from hub.webhooks import matcher as matcher_module
from hub.webhooks.matcher import EventMatcher
from hub.webhooks.queue import DeliveryQueue
from hub.webhooks.store import GROUP, WebhookStore
from ingest import stream_keys
from ingest.tasks import cancel_and_wait
from tests.conftest import TIMEOUT
from tests.redis_cluster import LocalRedisCluster

ORGS = ("org-a", "org-b")


async def until(condition: Callable[[], Awaitable[bool]], what: str, within: float = 5 * TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Matching:
    streams: Any
    store: WebhookStore
    queue: DeliveryQueue
    matcher: EventMatcher

    async def online(self, org_id: str, device_id: str) -> str:
        """A device.online entry in the organization's event log."""
        fields = {b"e": b"device.online", b"d": device_id.encode(), b"b": b"0", b"f": b"{}"}
        entry_id: bytes = await self.streams.xadd(stream_keys.org_log(org_id), fields)
        return entry_id.decode()

    async def queued(self) -> list[dict[str, str]]:
        taken = await self.queue.read("test", count=100, block_ms=10)
        return await self.queue.records(taken) if taken else []

    async def has_group(self, org_id: str) -> bool:
        with contextlib.suppress(ResponseError):  # no stream yet
            return any(
                g["name"] == GROUP.encode() for g in await self.streams.xinfo_groups(stream_keys.org_log(org_id))
            )
        return False

    async def pending(self, org_id: str) -> int:
        summary = await self.streams.xpending(stream_keys.org_log(org_id), GROUP)
        return int(summary["pending"])


@pytest.fixture
async def matching(redis_cluster: LocalRedisCluster) -> AsyncIterator[Matching]:
    redis_cluster.flush()
    streams = open_pool_client(redis_cluster.url, decode_responses=False, max_connections=8)
    management = open_pool_client(redis_cluster.url, decode_responses=True, max_connections=8)
    store = WebhookStore(management, resolutions=["1m"])
    queue = DeliveryQueue(streams, backoff_ms=[1000])
    await queue.ensure_group()
    for org_id in ORGS:
        await store.create(org_id, url="https://hooks.example.com/in", events=["device.online"], secret="s")
    matcher = EventMatcher(streams, store, queue, node_id="node-1")
    await matcher.refresh_leases()
    assert set(matcher.readers) == set(ORGS)  # this process reads for both organizations
    yield Matching(streams, store, queue, matcher)
    await matcher.release_leases()
    await streams.aclose()
    await management.aclose()


def test_the_organizations_event_logs_are_in_different_slots() -> None:
    assert len({slot_reads.slot(stream_keys.org_log(org)) for org in ORGS}) == len(ORGS)


async def test_one_process_reading_two_organizations_queues_the_webhooks_of_both(matching: Matching) -> None:
    task = asyncio.get_running_loop().create_task(matching.matcher.run())
    try:
        await asyncio.sleep(0.1)  # past the first (history) reads
        for org_id in ORGS:
            await matching.online(org_id, "pump-1")
        found: list[dict[str, str]] = []

        async def both_queued() -> bool:
            found.extend(await matching.queued())
            return {record["org"] for record in found} == set(ORGS)

        await until(both_queued, "a delivery of each organization")
        assert sorted(record["type"] for record in found) == ["device.online", "device.online"]

        async def acknowledged() -> bool:
            return not any([await matching.pending(org_id) for org_id in ORGS])

        # Acknowledged once queued: nothing left pending in either organization's group.
        await until(acknowledged, "the entries acknowledged")
    finally:
        matching.matcher.running = False
        await cancel_and_wait([task])


async def test_entries_read_before_another_slot_failed_are_still_queued_and_acknowledged(
    matching: Matching, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(matcher_module, "POLL_S", 0)
    await matching.matcher.read_once()  # the pending entries (none): from now on, new ones
    assert all(pos == ">" for reader in matching.matcher.readers.values() for pos in reader.positions.values())
    await matching.streams.delete(stream_keys.org_log("org-b"))  # its group is gone with it: NOGROUP
    await matching.online("org-a", "pump-1")
    with pytest.raises(ResponseError, match="NOGROUP"):
        await matching.matcher.read_once()
    assert [record["org"] for record in await matching.queued()] == ["org-a"]
    assert await matching.pending("org-a") == 0
    # The matcher's loop makes the lost group again and goes on reading both.
    task = asyncio.get_running_loop().create_task(matching.matcher.run())
    try:
        await until(lambda: matching.has_group("org-b"), "org-b's group made again")
        await matching.online("org-b", "pump-2")
        found: list[dict[str, str]] = []

        async def queued() -> bool:
            found.extend(await matching.queued())
            return bool(found)

        await until(queued, "org-b's delivery")
        assert [record["org"] for record in found] == ["org-b"]
    finally:
        matching.matcher.running = False
        await cancel_and_wait([task])
