"""Flag: asyncio.Event's behaviour without its per-instance deque."""

from __future__ import annotations

import asyncio

import pytest

from ingest.flag import Flag


async def test_set_wakes_every_waiter_and_a_set_flag_does_not_block() -> None:
    flag = Flag()
    woken: list[int] = []

    async def waiter(n: int) -> None:
        await flag.wait()
        woken.append(n)

    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert woken == [] and not flag.is_set()
    flag.set()
    await asyncio.gather(*tasks)
    assert sorted(woken) == [0, 1, 2]
    assert await asyncio.wait_for(flag.wait(), 0.1) is True


async def test_clear_makes_waiters_wait_again() -> None:
    flag = Flag(initially=True)
    flag.clear()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(flag.wait(), 0.01)
    flag.set()
    assert await flag.wait() is True


async def test_a_cancelled_waiter_is_forgotten() -> None:
    flag = Flag()
    task = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not flag._waiters
    flag.set()
    assert flag.is_set()
