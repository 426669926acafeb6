"""The Redis client the hub is built on, held to what the hub relies on: a task looping on commands, as every
service's loop does, stops when ``ingest.tasks.cancel_and_wait`` cancels it, and at the first cancel: redis-py
bounds each write with ``asyncio.wait_for``, which on Python 3.11 drops a cancellation arriving as the write
completes (most first cancels were lost, on one server and on a cluster alike); the hub's connections bound
it with ``asyncio.timeout`` (``hub.redis_client``). redis-py 8.0 and 8.1 swallowed even repeated cancels now
and then, hence the pin below 8."""

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
            await cancel_and_wait([task], rounds=1, round_s=1.0)
            assert task.done(), f"round {round_number}: the task still runs after a cancel"
        assert await redis.ping()  # and the client still works
    finally:
        await redis.aclose()
