"""The store's key layout (hub/layout.py): how many partitions each organization's devices are spread over is
agreed with the store by the first process and kept by every later one; a setting that disagrees is refused."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from hub.app import create_app
from hub.config import ConfigError, HubConfig
from hub.embedded_redis import EmbeddedRedis
from hub.keys import ORGS
from hub.layout import CLUSTER_PARTITIONS, LAYOUT, settle_layout
from hub.redis_client import open_pool_client
from ingest import stream_keys
from tests.conftest import CLUSTER, PARTITIONS, TIMEOUT
from tests.processes import free_port, run_telehub, telehub_env
from tests.support import HubClient


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


def test_health_shows_the_layout_it_uses(client: HubClient) -> None:
    layout = client.get("/health").json()["checks"]["layout"]
    assert layout == {"status": "healthy", "partitions": PARTITIONS}


@pytest.mark.single_redis
def test_a_store_that_comes_up_with_another_layout_leaves_the_process_unhealthy_and_storing_nothing(
    tmp_path: Path,
) -> None:
    # Redis is down when the hub starts, then comes up laid out with another count than the hub's setting: the
    # hub must not name a key under its own count; its health says why, with what to set.
    port, password = free_port(), "layout-test-password"
    config = HubConfig(
        redis_url=f"redis://:{password}@127.0.0.1:{port}/0",
        data_dir=tmp_path / "data",
        secret="test-secret-" + "x" * 60,
        partitions=3,
    )
    with TestClient(create_app(config), raise_server_exceptions=False) as http:
        waiting = http.get("/api/v1/health")
        assert waiting.status_code == 503
        assert waiting.json()["checks"]["layout"]["error"].startswith("the key layout is not known yet")
        with EmbeddedRedis(tmp_path / "redis", port=port, password=password) as server:
            store = redis.Redis.from_url(server.url, decode_responses=True)
            store.set(LAYOUT, "5")
            deadline = time.monotonic() + 20 * TIMEOUT
            while (layout := http.get("/api/v1/health").json()["checks"]["layout"]).get("partitions") is None:
                if "laid out with 5" in layout["error"] or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            health = http.get("/api/v1/health")
            assert health.status_code == 503
            assert health.json()["checks"]["redis"]["status"] == "healthy"
            error = health.json()["checks"]["layout"]["error"]
            assert "laid out with 5 partitions per organization, not 3" in error and "TELEHUB_PARTITIONS" in error
            time.sleep(1.0)  # the background loops (heartbeats, webhook readers) have all met the store
            # Keys that depend on the layout are an organization's ("th:{org...}"); the process's own (heartbeat,
            # rate bucket, the webhook queue's group) do not.
            written = [key for key in store.keys("*") if "{" in key and not key.startswith("th:{webhooks}")]
            assert written == [], "nothing was written under the process's own layout"
            store.close()
