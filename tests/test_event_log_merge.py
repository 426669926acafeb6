"""The organization's event log over several streams (ingest/history.py ``events``): the partitions of the
device events and the organization's own log merged by (entry id, stream index), each event once, in order,
whatever the page boundaries, both ways; ties between streams included."""

from __future__ import annotations

import redis.asyncio as aioredis

from ingest import stream_keys
from ingest.history import HistoryReader, Order, Position

ORG = "org_log"


async def walk(reader: HistoryReader, order: Order, page: int, device_id: str | None = None) -> list[Position]:
    """Every event, read ``page`` at a time, each page resuming after the last position of the one before."""
    seen: list[Position] = []
    after: Position | None = None
    while True:
        got: list[Position] = []
        async for position, _ in reader.events(
            ORG, start_ms=None, end_ms=None, order=order, after=after, device_id=device_id
        ):
            got.append(position)
            if len(got) == page:
                break
        seen += got
        if len(got) < page:
            return seen
        after = got[-1]


async def test_pages_of_the_merged_log_return_every_event_once_in_order(redis: aioredis.Redis) -> None:
    stream_keys.use_partitions(3)
    streams = stream_keys.org_event_streams(ORG)
    assert len(streams) == 4 and streams[-1] == stream_keys.org_log(ORG)
    # Entry ids that tie across streams (1000-0 in three of them), and one stream with nothing.
    written = {0: ["1000-0", "1000-1", "1002-0"], 1: ["999-0", "1000-0"], 3: ["1000-0", "1001-0", "1003-5"]}
    for index, ids in written.items():
        for entry_id in ids:
            await redis.xadd(streams[index], {"e": "device.online", "d": f"d{index}", "b": "0", "f": "{}"}, id=entry_id)
    expected = sorted(
        (Position(entry_id, index) for index, ids in written.items() for entry_id in ids),
        key=lambda p: (tuple(map(int, p.stream_id.split("-"))), p.index),
    )
    reader = HistoryReader(redis)
    for page in (1, 2, 3, 100):
        assert await walk(reader, "asc", page) == expected, page
        assert await walk(reader, "desc", page) == expected[::-1], page


async def test_a_device_filter_reads_its_partition_and_the_organizations_log(redis: aioredis.Redis) -> None:
    stream_keys.use_partitions(3)
    streams = stream_keys.org_event_streams(ORG)
    own = stream_keys.partition_of("boiler-7")
    other = (own + 1) % 3
    await redis.xadd(streams[own], {"e": "device.online", "d": "boiler-7", "b": "0", "f": "{}"}, id="5-0")
    await redis.xadd(streams[other], {"e": "device.online", "d": "x", "b": "0", "f": "{}"}, id="6-0")
    await redis.xadd(streams[3], {"e": "command.sent", "d": "boiler-7", "b": "0", "f": "{}"}, id="7-0")
    found = await walk(HistoryReader(redis), "asc", 10, device_id="boiler-7")
    assert found == [Position("5-0", own), Position("7-0", 3)]
