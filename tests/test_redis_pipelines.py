"""The one-server client's pipelines call scripts without asking ``SCRIPT EXISTS`` first (one round trip less
for each ingest flush and each command change), and still run a script the server has lost: that call alone
is sent again, after the rest, and its reply (or its error) takes its place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ResponseError

from hub.redis_client import open_redis

pytestmark = pytest.mark.single_redis  # a cluster pipeline sends every script as EVAL (TelehubCluster)

ADD = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('refused ' .. ARGV[1])"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = open_redis(redis_url)
    yield client
    await client.aclose()


async def script_calls(redis: Any) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_script", {}).get("calls", 0))


async def test_a_pipeline_calls_a_loaded_script_without_asking(redis: Any) -> None:
    add = redis.register_script(ADD)
    assert await add(keys=["th:test:n"], args=[1]) == 1  # loads it
    await redis.config_resetstat()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incr("th:test:before")
        await add(keys=["th:test:n"], args=[10], client=pipe)
        pipe.incr("th:test:after")
        assert await pipe.execute() == [1, 11, 1]
    assert await script_calls(redis) == 0


async def test_a_script_the_server_lost_runs_once_in_its_place(redis: Any) -> None:
    add = redis.register_script(ADD)
    await add(keys=["th:test:n"], args=[1])
    await redis.script_flush()  # as after a restart of Redis
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incr("th:test:before")
        await add(keys=["th:test:n"], args=[10], client=pipe)
        pipe.incr("th:test:after")
        assert await pipe.execute() == [1, 11, 1]
    assert [await redis.get(key) for key in ("th:test:before", "th:test:n", "th:test:after")] == ["1", "11", "1"]
    async with redis.pipeline(transaction=False) as pipe:  # and the next pipeline finds it loaded
        await add(keys=["th:test:n"], args=[1], client=pipe)
        assert await pipe.execute() == [12]


async def test_a_lost_scripts_own_error_is_its_reply(redis: Any) -> None:
    fail = redis.register_script(FAIL)
    await redis.script_flush()
    async with redis.pipeline(transaction=False) as pipe:
        await fail(keys=[], args=["x"], client=pipe)
        pipe.incr("th:test:after")
        replies = await pipe.execute(raise_on_error=False)
    assert isinstance(replies[0], ResponseError) and "refused x" in str(replies[0]) and replies[1] == 1
    async with redis.pipeline(transaction=False) as pipe:
        await fail(keys=[], args=["y"], client=pipe)
        with pytest.raises(ResponseError, match="refused y"):
            await pipe.execute()


async def test_a_transaction_still_loads_its_scripts_first(redis: Any) -> None:
    add = redis.register_script(ADD)
    await redis.script_flush()
    async with redis.pipeline(transaction=True) as pipe:
        await add(keys=["th:test:t"], args=[5], client=pipe)
        assert await pipe.execute() == [5]
