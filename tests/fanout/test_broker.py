"""The Broker's reads of history against a real Redis: counting what a replay would send."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hub.fanout import broker as broker_module
from hub.fanout.broker import StreamBroker
from hub.redis_client import open_pool_client

KEY = "th:{org-a}:stream:device:d-1"


@pytest.fixture
async def stream(redis_url: str) -> AsyncIterator[tuple[StreamBroker, list[str]]]:
    client = open_pool_client(redis_url, decode_responses=False, max_connections=8)
    pipe = client.pipeline(transaction=False)
    for n in range(1_234):
        pipe.xadd(KEY, {b"n": str(n).encode()})
    ids = [entry_id.decode() for entry_id in await pipe.execute()]
    yield StreamBroker(client), ids
    await client.aclose()


@pytest.mark.parametrize("limit", [10, 499, 500, 501, 1_000, 1_232])
async def test_count_between_is_exact_up_to_the_limit_in_short_calls(
    stream: tuple[StreamBroker, list[str]], limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, ids = stream
    monkeypatch.setattr(broker_module, "COUNT_CHUNK", 100)
    # After the 10th entry up to the 1,200th (inclusive): 1,190 entries between.
    between = len(ids[10:1_200])
    found = await broker.count_between(KEY, ids[9], ids[1_199], limit)
    assert found == min(between, limit + 1)
    # A range inside the limit is counted whole.
    assert await broker.count_between(KEY, ids[1_000], ids[1_009], limit) == min(9, limit + 1)


async def test_count_between_skips_the_count_when_the_stream_is_within_the_limit(
    stream: tuple[StreamBroker, list[str]],
) -> None:
    broker, ids = stream
    assert await broker.count_between(KEY, ids[0], ids[-1], 1_234) == 0
    assert await broker.count_between(KEY, ids[0], ids[-1], 1_233) == 1_233
