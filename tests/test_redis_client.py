"""The Redis client the hub is built on, held to what the hub relies on: a task looping on commands, as every
service's loop does, stops when ``ingest.tasks.cancel_and_wait`` cancels it (a single cancel is sometimes
swallowed by redis-py's read timeout; redis-py 8.0 and 8.1 swallow even repeated ones now and then, hence
the pin below 8)."""

from __future__ import annotations

import asyncio

from hub.redis_client import open_redis
from ingest.tasks import cancel_and_wait

ROUNDS = 30


async def test_a_task_looping_on_commands_stops_when_cancelled(redis_url: str) -> None:
    redis = open_redis(redis_url)  # the hub's own settings: pool, socket timeout, health checks
    try:
        for round_number in range(ROUNDS):

            async def loop() -> None:
                while True:
                    await redis.zrangebyscore("th:test:cancel", "-inf", "+inf")

            task = asyncio.get_running_loop().create_task(loop())
            await asyncio.sleep(0.005 + (round_number % 7) * 0.001)  # cancel at different points of a command
            await cancel_and_wait([task], rounds=20)
            assert task.done(), f"round {round_number}: the task still runs after 20 cancels"
        assert await redis.ping()  # and the client still works
    finally:
        await redis.aclose()
