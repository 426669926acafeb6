"""The store's key layout (hub/layout.py): how many partitions each organization's devices are spread over is
agreed with the store by the first process and kept by every later one; a setting that disagrees is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from hub.config import ConfigError
from hub.keys import ORGS
from hub.layout import CLUSTER_PARTITIONS, LAYOUT, settle_layout
from hub.redis_client import open_pool_client
from ingest import stream_keys
from tests.conftest import CLUSTER, PARTITIONS
from tests.processes import run_telehub, telehub_env


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = open_pool_client(redis_url, decode_responses=True, max_connections=8)
    yield client
    await client.aclose()


async def test_a_new_store_takes_the_default_and_every_later_process_the_stored_one(store: aioredis.Redis) -> None:
    default = CLUSTER_PARTITIONS if CLUSTER else 1
    assert await settle_layout(store, 0) == default
    assert await store.get(LAYOUT) == str(default)
    stream_keys.use_partitions(default + 2)
    assert await settle_layout(store, 0) == default and stream_keys.partitions() == default
    assert await settle_layout(store, default) == default


async def test_a_chosen_count_is_kept_and_a_different_one_refused(store: aioredis.Redis) -> None:
    assert await settle_layout(store, 5) == 5
    assert stream_keys.partitions() == 5
    assert await settle_layout(store, 0) == 5
    with pytest.raises(ConfigError, match="laid out with 5 partitions per organization, not 3") as refused:
        await settle_layout(store, 3)
    assert "TELEHUB_PARTITIONS" in str(refused.value)
    assert stream_keys.partitions() == 5, "a refused setting changes nothing"


async def test_a_store_written_before_partitions_keeps_its_single_partition(store: aioredis.Redis) -> None:
    await store.sadd(ORGS, "org_old")
    assert await settle_layout(store, 0) == 1
    assert stream_keys.device_frames("org_old", "d1") == "th:{org_old}:frames:d1"
    with pytest.raises(ConfigError):
        await settle_layout(store, 8)


def test_the_cli_refuses_a_count_the_store_was_not_laid_out_with(redis_url: str, sync_redis: redis.Redis) -> None:
    env = telehub_env(TELEHUB_REDIS_URL=redis_url, TELEHUB_PARTITIONS=str(PARTITIONS + 1))
    first = run_telehub("admin", "create-org", "--name", "acme", env=telehub_env(TELEHUB_REDIS_URL=redis_url))
    assert first.returncode == 0, first.stderr
    refused = run_telehub("admin", "create-org", "--name", "globex", env=env)
    assert refused.returncode == 2
    assert f"laid out with {PARTITIONS} partitions" in refused.stderr and "TELEHUB_PARTITIONS" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sync_redis.scard(ORGS) == 1, "nothing was written under the wrong layout"
