"""The Node's reads across hash slots: on the local Redis Cluster it follows the streams of several
organizations (each in its own slot, which one XREAD cannot span), reads a stream followed meanwhile at once,
and survives cluster errors; on a single Redis it still makes one blocking read with its wake stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from redis.exceptions import RedisClusterException

from hub import slot_reads
from hub.embedded_redis import EmbeddedRedis
from hub.fanout import node as node_module
from hub.fanout.broker import StreamBroker
from hub.fanout.channels import Source, org_alerts
from hub.fanout.node import Node
from hub.redis_client import open_pool_client, open_sync_client
from tests.conftest import TIMEOUT
from tests.redis_cluster import LocalRedisCluster

A, B, C = (Source(org, "alerts") for org in ("org-a", "org-b", "org-c"))


class RecordingHub:
    """Stands in for the Hub: records what the Node delivers, by organization."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []
        self._arrived = asyncio.Event()

    def deliver(self, source: Source, channel: str, offset: str, epoch: str, data: Any) -> int:
        self.received.append((source.org_id, data))
        self._arrived.set()
        return 1

    def orgs(self) -> set[str]:
        return {org for org, _ in self.received}

    async def until(self, orgs: set[str], *, count: int = 0) -> float:
        """Wait until messages of every one of ``orgs`` (and more than ``count`` in all) arrived; how long that
        took."""
        started = time.monotonic()
        async with asyncio.timeout(5 * TIMEOUT):
            while not orgs <= self.orgs() or len(self.received) <= count:
                self._arrived.clear()
                await self._arrived.wait()
        return time.monotonic() - started


async def alert(client: Any, source: Source, n: int) -> str:
    entry_id: bytes = await client.xadd(org_alerts(source.org_id), {b"p": orjson.dumps({"n": n})})
    return entry_id.decode()


def wake_streams(url: str) -> list[str]:
    """Every wake stream in the store (all masters of a cluster)."""
    client = open_sync_client(url, decode_responses=True)
    try:
        return sorted(client.scan_iter(match="th:*fanout:wake:*"))
    finally:
        client.close()


class Reader:
    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = open_pool_client(url, decode_responses=False, max_connections=8)
        self.hub = RecordingHub()
        self.node = Node(StreamBroker(self.redis), self.hub)  # type: ignore[arg-type]


@pytest.fixture
async def on_cluster(redis_cluster: LocalRedisCluster) -> AsyncIterator[Reader]:
    redis_cluster.flush()
    reader = Reader(redis_cluster.url)
    reader.node.start()
    yield reader
    await reader.node.stop()
    await reader.redis.aclose()


def test_the_organizations_are_in_different_slots() -> None:
    assert len({slot_reads.slot(source.key) for source in (A, B, C)}) == 3


async def test_streams_of_two_organizations_on_a_cluster_are_both_delivered(on_cluster: Reader) -> None:
    on_cluster.node.follow(A, "0-0")
    on_cluster.node.follow(B, "0-0")
    await alert(on_cluster.redis, A, 1)
    await alert(on_cluster.redis, B, 2)
    await on_cluster.hub.until({"org-a", "org-b"})
    # Then live entries, after the Node has gone idle.
    await asyncio.sleep(0.1)
    before = len(on_cluster.hub.received)
    await alert(on_cluster.redis, B, 3)
    await on_cluster.hub.until(set(), count=before)
    assert on_cluster.hub.received[-1] == ("org-b", {"n": 3})
    assert wake_streams(on_cluster.url) == []  # polling over several slots writes no wake stream


async def test_a_stream_followed_while_the_node_blocks_on_one_slot_is_read_at_once(on_cluster: Reader) -> None:
    node, hub = on_cluster.node, on_cluster.hub
    node.follow(A, "0-0")
    await alert(on_cluster.redis, A, 1)
    await hub.until({"org-a"})
    await asyncio.sleep(0.2)  # the Node now blocks on org-a's slot, for up to BLOCK_MS
    await alert(on_cluster.redis, B, 2)
    node.follow(B, "0-0")
    took = await hub.until({"org-b"})
    assert took < node_module.BLOCK_MS / 1000 / 2
    # The read was woken through a wake stream in org-a's slot, which stop() removes.
    [wake] = wake_streams(on_cluster.url)
    assert slot_reads.slot(wake) == slot_reads.slot(A.key)
    await node.stop()
    assert wake_streams(on_cluster.url) == []


async def test_a_stream_followed_while_the_node_polls_is_read_at_once(
    on_cluster: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long poll interval: only the follow can make the read of org-c prompt.
    monkeypatch.setattr(node_module, "POLL_S", 5.0)
    monkeypatch.setattr(node_module, "POLL_MAX_S", 5.0)
    node, hub = on_cluster.node, on_cluster.hub
    await alert(on_cluster.redis, A, 1)
    node.follow(A, "0-0")
    node.follow(B, "0-0")
    await hub.until({"org-a"})
    await asyncio.sleep(0.1)
    await alert(on_cluster.redis, C, 2)
    node.follow(C, "0-0")
    assert await hub.until({"org-c"}) < 1.0


async def test_idle_polling_backs_off_and_a_new_entry_still_arrives(on_cluster: Reader) -> None:
    """Empty rounds double the wait up to POLL_MAX_S (10, 20, 40, 50, 50 ms...): about 12 rounds in half a
    second of quiet instead of 50; an entry written then is read within that longest wait."""
    node, hub = on_cluster.node, on_cluster.hub
    rounds = 0
    poll = node.broker.poll

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal rounds
        rounds += 1
        return await poll(*args, **kwargs)

    node.broker.poll = counted  # type: ignore[method-assign]
    node.follow(A, "0-0")
    node.follow(B, "0-0")
    await asyncio.sleep(0.5)
    assert 3 <= rounds <= 20
    await alert(on_cluster.redis, B, 7)
    assert await hub.until({"org-b"}) < node_module.POLL_MAX_S + 0.5 * TIMEOUT


async def test_a_cluster_error_is_retried_rather_than_ending_the_reader(
    on_cluster: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = on_cluster.node.broker
    poll = broker.poll
    failures = []

    async def failing_once(groups: list[dict[str, str]], *, count: int) -> Any:
        if not failures:
            failures.append(groups)
            raise RedisClusterException("no node for the slot (topology changing)")
        return await poll(groups, count=count)

    monkeypatch.setattr(broker, "poll", failing_once)
    on_cluster.node.follow(A, "0-0")
    on_cluster.node.follow(B, "0-0")
    await alert(on_cluster.redis, A, 1)
    await alert(on_cluster.redis, B, 2)
    await on_cluster.hub.until({"org-a", "org-b"})
    assert failures


async def test_on_a_single_redis_every_read_blocks_on_all_streams_and_the_wake_stream(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = Reader(redis_server.url)
    broker, node = reader.node.broker, reader.node
    reads: list[tuple[dict[str, str], int]] = []
    read = broker.read

    async def spy(positions: dict[str, str], *, block_ms: int, count: int) -> Any:
        reads.append((dict(positions), block_ms))
        return await read(positions, block_ms=block_ms, count=count)

    async def no_poll(groups: list[dict[str, str]], *, count: int) -> Any:
        raise AssertionError("a single Redis is never polled")

    monkeypatch.setattr(broker, "read", spy)
    monkeypatch.setattr(broker, "poll", no_poll)
    node.start()
    try:
        node.follow(A, "0-0")
        await asyncio.sleep(0.1)
        node.follow(B, "0-0")  # wakes the read in flight
        await alert(reader.redis, B, 1)
        await reader.hub.until({"org-b"})
    finally:
        await node.stop()
        await reader.redis.aclose()
    assert all(block_ms == node_module.BLOCK_MS for _, block_ms in reads)
    assert all(node.wake_key in positions for positions, _ in reads)
    assert {A.key, B.key, node.wake_key} == set(reads[-1][0])
    assert wake_streams(redis_server.url) == []
