"""Grouping stream reads by hash slot (hub/slot_reads.py): the tag rule, the groups, and one pipelined round of
reads against the local Redis Cluster, where a read over two organizations' streams is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, ResponseError

from hub import slot_reads
from hub.fanout.channels import device_commands
from hub.redis_client import open_pool_client
from ingest import stream_keys
from tests.redis_cluster import LocalRedisCluster

ORGS = ("org-a", "org-b", "org-c")


@pytest.mark.parametrize(
    ("key", "hashed"),
    [
        ("th:{org-a}:events", "org-a"),
        ("th:{org-a}:frames:{d-1}", "org-a"),
        ("th:orgs", "th:orgs"),
        ("th:{}:x{y}", "th:{}:x{y}"),
        ("th:{open", "th:{open"),
    ],
)
def test_the_hashed_part_is_what_redis_hashes(key: str, hashed: str) -> None:
    assert slot_reads.hash_part(key) == hashed
    assert slot_reads.slot(key) == key_slot(key.encode()) == key_slot(hashed.encode())


@pytest.mark.parametrize("key", ["th:{org-a}:events", "th:orgs", "th:{open", "th:{a{b}:x"])
def test_a_key_tagged_with_tag_of_lands_in_the_same_slot(key: str) -> None:
    tag = slot_reads.tag_of(key)
    assert tag is not None
    assert slot_reads.slot(f"th:{{{tag}}}:fanout:wake:n1") == slot_reads.slot(key)


def test_no_tag_reaches_the_slot_of_a_key_whose_hashed_part_has_a_closing_brace() -> None:
    assert slot_reads.tag_of("th:{}:x") is None
    assert slot_reads.tag_of("th:{}:x}") is None


def test_positions_are_grouped_by_slot_in_the_order_they_came() -> None:
    a, b = stream_keys.org_log("org-a"), stream_keys.org_log("org-b")
    a_frames = device_commands("org-a", "d-1")
    assert slot_reads.slot(a) != slot_reads.slot(b)
    groups = slot_reads.by_slot({a: "1-0", b: "2-0", a_frames: "3-0"})
    assert groups == [{a: "1-0", a_frames: "3-0"}, {b: "2-0"}]
    assert slot_reads.by_slot({}) == []


async def test_cluster_clients_are_told_apart(redis_cluster: LocalRedisCluster) -> None:
    cluster = open_pool_client(redis_cluster.url, decode_responses=False, max_connections=2)
    single = open_pool_client("redis://127.0.0.1:1/0", decode_responses=False, max_connections=2)
    try:
        assert slot_reads.is_cluster(cluster)
        assert not slot_reads.is_cluster(single)
    finally:
        await cluster.aclose()
        await single.aclose()


@pytest.fixture
async def cluster(redis_cluster: LocalRedisCluster) -> AsyncIterator[Any]:
    redis_cluster.flush()
    client = open_pool_client(redis_cluster.url, decode_responses=False, max_connections=8)
    yield client
    await client.aclose()


async def test_one_round_reads_every_slot_that_one_read_could_not(cluster: Any) -> None:
    streams = {stream_keys.org_log(org): "0-0" for org in ORGS}
    assert len({slot_reads.slot(key) for key in streams}) == len(ORGS)
    written = {key: (await cluster.xadd(key, {b"n": key.encode()})).decode() for key in streams}
    with pytest.raises(RedisClusterException):
        await cluster.xread(streams)
    groups = slot_reads.by_slot(streams)
    found = await slot_reads.read_each_slot(cluster, groups, ("XREAD", "COUNT", 10))
    assert found.error is None
    read = {key.decode(): [entry_id.decode() for entry_id, _ in entries] for key, entries in found.streams}
    assert read == {key: [entry_id] for key, entry_id in written.items()}
    # Nothing new: the round still answers at once, with nothing.
    after = {key: entry_id for key, entry_id in written.items()}
    empty = await slot_reads.read_each_slot(cluster, slot_reads.by_slot(after), ("XREAD", "COUNT", 10))
    assert empty.streams == [] and empty.error is None


async def test_a_failing_slot_does_not_discard_what_the_others_read(cluster: Any) -> None:
    """Entries an XREADGROUP took are pending: the caller must get them even when another slot's read failed."""
    a, b = stream_keys.org_log("org-a"), stream_keys.org_log("org-b")
    await cluster.xgroup_create(a, "g", id="0", mkstream=True)
    entry_id = (await cluster.xadd(a, {b"n": b"1"})).decode()
    await cluster.xadd(b, {b"n": b"2"})  # a stream without the group: NOGROUP
    found = await slot_reads.read_each_slot(
        cluster, slot_reads.by_slot({a: ">", b: ">"}), ("XREADGROUP", "GROUP", "g", "c")
    )
    assert isinstance(found.error, ResponseError) and "NOGROUP" in str(found.error)
    assert [(key.decode(), [i.decode() for i, _ in entries]) for key, entries in found.streams] == [(a, [entry_id])]
