"""The dashboard fan-out (API.md §5) end to end through real ``telehub serve`` processes: uvicorn, real sockets,
one Redis shared by the processes; ``websockets`` clients for devices and dashboards, raw sockets for a
dashboard that stops reading.

Devices send MessagePack telemetry frames whose metric ``n`` is the frame's seq, so what a dashboard received
can be compared with what the device had acked. Every wait is bounded by a multiple of ``TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import orjson
import pytest

from tests.conftest import TIMEOUT
from tests.fanout_process_clients import (
    BIG_METRICS,
    BIG_NAMES,
    DEVICE,
    EXACT,
    MAX_REPLAY,
    NOW_MS,
    SEND_BUFFER_BYTES,
    SLOW_CONSUMER,
    WAIT,
    WILDCARD,
    Device,
    Message,
    another_history,
    big_frame,
    dashboard,
    device,
    epoch_of,
    hubs,
    position,
    provision,
    raw_dashboard,
    seqs,
    small_frame,
)

# 1. Fan-out across processes.

FANOUT_FRAMES = 200


async def test_every_dashboard_on_either_process_gets_every_frame_once_in_order(redis_url: str, tmp_path: Path) -> None:
    with hubs(redis_url, tmp_path, 2) as (a, b):
        credentials = provision(a.http)
        token = credentials.admin_token
        async with contextlib.AsyncExitStack() as stack:
            exact_json_a = await stack.enter_async_context(dashboard(a, token))
            wildcard_json_b = await stack.enter_async_context(dashboard(b, token))
            exact_msgpack_b = await stack.enter_async_context(dashboard(b, token, binary=True))
            wildcard_msgpack_a = await stack.enter_async_context(dashboard(a, token, binary=True))
            subscribers = {
                "exact JSON on A": (exact_json_a, EXACT),
                "wildcard JSON on B": (wildcard_json_b, WILDCARD),
                "exact MessagePack on B": (exact_msgpack_b, EXACT),
                "wildcard MessagePack on A": (wildcard_msgpack_a, WILDCARD),
            }
            replies = {name: await ws.subscribe(channel) for name, (ws, channel) in subscribers.items()}
            assert all(reply["recovered"] is False for reply in replies.values())

            dev = await stack.enter_async_context(device(a, credentials.device_key))
            receiving = {name: asyncio.create_task(ws.messages(FANOUT_FRAMES)) for name, (ws, _) in subscribers.items()}
            assert await dev.publish(FANOUT_FRAMES) == FANOUT_FRAMES
            received = {name: await task for name, task in receiving.items()}
            for ws, _ in subscribers.values():
                await ws.nothing_more()

        expected = list(range(1, FANOUT_FRAMES + 1))
        for name, messages in received.items():
            assert seqs(messages) == expected, name
            assert {m["channel"] for m in messages} == {EXACT}, name
            assert {m["epoch"] for m in messages} == {epoch_of(messages[0], replies[name])}, name
        # One stream behind each channel, whichever the process: the same offsets and epochs.
        for one, other in (
            ("exact JSON on A", "exact MessagePack on B"),
            ("wildcard JSON on B", "wildcard MessagePack on A"),
        ):
            assert [m["offset"] for m in received[one]] == [m["offset"] for m in received[other]]
            assert replies[one]["epoch"] == replies[other]["epoch"]
        # JSON and MessagePack carry the same data.
        data = [m["data"] for m in received["exact JSON on A"]]
        assert data[0] == {"device_id": DEVICE, "ts": NOW_MS + 1, "metrics": {"n": 1.0}}
        for name, messages in received.items():
            assert [m["data"] for m in messages] == data, name


# 2. Recovery under continuous load.


class Publisher:
    """A device sending frames one after another (a few ms apart, at most 8 unacked) until ``finish``."""

    def __init__(self, dev: Device, *, interval: float) -> None:
        self.dev = dev
        self._stop = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(interval))

    async def _run(self, interval: float) -> int:
        while not self._stop.is_set():
            await self.dev.send(small_frame, window=8)
            await asyncio.sleep(interval)
        await self.dev.all_acked()
        return self.dev.sent

    async def finish(self) -> int:
        """Stop sending; the last seq, once every frame is acked."""
        self._stop.set()
        return await asyncio.wait_for(self.task, WAIT)


@contextlib.asynccontextmanager
async def publishing(dev: Device, *, interval: float) -> AsyncIterator[Publisher]:
    publisher = Publisher(dev, interval=interval)
    try:
        yield publisher
    finally:
        publisher.task.cancel()
        await asyncio.gather(publisher.task, return_exceptions=True)


# Times the dashboard goes away mid-stream and comes back with ``since``.
RECONNECTS = 3
AWAY_S = 0.3


def sequence_problems(got: list[int], expected: list[int]) -> str:
    counts = Counter(got)
    duplicates = sorted(n for n, count in counts.items() if count > 1)
    missing = sorted(set(expected) - counts.keys())
    return f"duplicates {duplicates}, missing {missing}"


@pytest.mark.parametrize("channel", [EXACT, WILDCARD])
async def test_a_dashboard_that_reconnects_with_since_misses_nothing_under_continuous_load(
    redis_url: str, tmp_path: Path, channel: str
) -> None:
    with hubs(redis_url, tmp_path, 2) as (a, b):
        credentials = provision(a.http)
        token = credentials.admin_token
        results: list[Message] = []
        # Per reconnection: the last seq received before leaving, the last acked at the resubscribe.
        marks: list[tuple[int, int]] = []
        async with device(a, credentials.device_key) as dev, contextlib.AsyncExitStack() as stack:
            ws = await stack.enter_async_context(dashboard(b, token))
            first = await ws.subscribe(channel)
            publisher = await stack.enter_async_context(publishing(dev, interval=0.001))
            received = await ws.messages(30)
            for _ in range(RECONNECTS):
                await ws.ws.close()  # mid-stream: the device goes on sending
                await asyncio.sleep(AWAY_S)
                ws = await stack.enter_async_context(dashboard(b, token))
                results.append(await ws.subscribe(channel, since=position(received[-1], first)))
                marks.append((seqs(received)[-1], dev.acked))
                # The replay, then live messages until well past what was acked at the subscribe.
                received.append(await ws.message())
                while seqs(received)[-1] < marks[-1][1] + 30:
                    received.append(await ws.message())
            last = await publisher.finish()
            while seqs(received)[-1] < last:
                received.append(await ws.message())
            await ws.nothing_more()

    epoch = received[0]["epoch"]
    assert all(result["recovered"] is True and result["epoch"] == first["epoch"] for result in results), results
    assert all(acked - left > 10 for left, acked in marks), f"frames should flow while the dashboard is away: {marks}"
    got, expected = seqs(received), list(range(1, last + 1))
    assert got == expected, f"{sequence_problems(got, expected)}; (left at, resubscribed at): {marks}"
    assert {m["channel"] for m in received} == {EXACT}
    assert {m["epoch"] for m in received} == {epoch}


# 3. A slow consumer is closed; nobody else notices.

# Large messages (about 20 KB each, 12 MB in all): they fill the 1 MiB send buffer many times over, kernel
# buffers (a few MB at most) included.
SLOW_FRAMES = 600
# Every frame of the device is acked within this, whoever does not read.
ACKS_WITHIN = 10 * TIMEOUT


async def test_a_dashboard_that_stops_reading_is_closed_with_4008_and_slows_nobody(
    redis_url: str, tmp_path: Path
) -> None:
    with hubs(redis_url, tmp_path, 1) as (hub,):
        credentials = provision(hub.http)
        token = credentials.admin_token
        with raw_dashboard(hub.process.port, token) as slow:
            slow.send_json({"op": "subscribe", "id": 1, "channel": WILDCARD})
            opcode, payload = slow.frame()
            assert opcode == 0x1 and orjson.loads(payload)["type"] == "reply", payload
            # From here on the slow dashboard reads nothing until the device is done.
            async with dashboard(hub, token) as fast, device(hub, credentials.device_key) as dev:
                await fast.subscribe(WILDCARD)
                receiving = asyncio.create_task(fast.messages(SLOW_FRAMES))
                try:
                    began = time.monotonic()
                    async with asyncio.timeout(ACKS_WITHIN):
                        await dev.publish(SLOW_FRAMES, big_frame, window=16)
                    acked_in = time.monotonic() - began
                    received = await asyncio.wait_for(receiving, WAIT)
                finally:
                    receiving.cancel()
            code = slow.close_code(WAIT)
            read = slow.received

    assert seqs(received) == list(range(1, SLOW_FRAMES + 1))
    assert len(received[0]["data"]["metrics"]) == BIG_METRICS + 1
    assert acked_in < ACKS_WITHIN
    # A reset may discard the close frame still unread in the receive buffer: closed all the same.
    assert code in (SLOW_CONSUMER, "reset"), f"the slow dashboard read {read} bytes, then: {code}"
    everything = sum(len(orjson.dumps(message)) for message in received)
    assert read < everything / 2, f"it read {read} of {everything} bytes: it was never treated as slow"


# 4. and 5. Resuming: a replay bigger than the send buffer; from where history does not reach.

MEDIUM_METRICS = 30
# About 2.5 KB each as a message: 1,000 of them are more than twice the send buffer.
REPLAYED_FRAMES = 1_000


def medium_frame(seq: int) -> bytes:
    metrics = {name: seq + i / 1000 for i, name in enumerate(BIG_NAMES[:MEDIUM_METRICS])}
    metrics["n"] = float(seq)
    return msgpack.packb({"type": "telemetry", "seq": seq, "ts": NOW_MS + seq, "metrics": metrics})


async def test_a_replay_bigger_than_the_send_buffer_reaches_a_reading_dashboard_whole(
    redis_url: str, tmp_path: Path
) -> None:
    with hubs(redis_url, tmp_path, 1) as (hub,):
        credentials = provision(hub.http)
        token = credentials.admin_token
        async with device(hub, credentials.device_key) as dev:
            async with dashboard(hub, token) as exact, dashboard(hub, token) as wildcard:
                replies = {EXACT: await exact.subscribe(EXACT), WILDCARD: await wildcard.subscribe(WILDCARD)}
                await dev.publish(1)
                first = {EXACT: await exact.message(), WILDCARD: await wildcard.message()}
            await dev.publish(REPLAYED_FRAMES, medium_frame, window=100)
            async with dashboard(hub, token) as exact, dashboard(hub, token) as wildcard:
                subscribers = {EXACT: exact, WILDCARD: wildcard}
                results = {
                    channel: await ws.subscribe(channel, since=position(first[channel], replies[channel]))
                    for channel, ws in subscribers.items()
                }
                # Both read as fast as they can: neither is a slow consumer.
                replayed = await asyncio.gather(*(ws.messages(REPLAYED_FRAMES) for ws in subscribers.values()))
                last = await dev.publish(1)
                live = {channel: await ws.message() for channel, ws in subscribers.items()}

    for channel, messages in zip(subscribers, replayed, strict=True):
        assert results[channel]["recovered"] is True, results[channel]
        assert sum(len(orjson.dumps(message)) for message in messages) > 2 * SEND_BUFFER_BYTES
        assert seqs(messages) + seqs([live[channel]]) == list(range(2, last + 1))


async def test_since_further_back_than_the_replay_limit_is_not_recovered_and_continues_live(
    redis_url: str, tmp_path: Path
) -> None:
    with hubs(redis_url, tmp_path, 1) as (hub,):
        credentials = provision(hub.http)
        token = credentials.admin_token
        async with device(hub, credentials.device_key) as dev:
            async with dashboard(hub, token) as exact, dashboard(hub, token) as wildcard:
                replies = {EXACT: await exact.subscribe(EXACT), WILDCARD: await wildcard.subscribe(WILDCARD)}
                await dev.publish(1)
                first = {EXACT: await exact.message(), WILDCARD: await wildcard.message()}
            # More messages after those than one subscribe may replay.
            await dev.publish(MAX_REPLAY + 1, window=1000)
            async with dashboard(hub, token) as exact, dashboard(hub, token) as wildcard:
                subscribers = {EXACT: exact, WILDCARD: wildcard}
                results = {
                    channel: await ws.subscribe(channel, since=position(first[channel], replies[channel]))
                    for channel, ws in subscribers.items()
                }
                last = await dev.publish(1)
                live = {channel: await ws.message() for channel, ws in subscribers.items()}
                for ws in subscribers.values():
                    await ws.nothing_more()

    assert last == MAX_REPLAY + 3
    for channel in (EXACT, WILDCARD):
        assert results[channel]["recovered"] is False, results[channel]
        assert results[channel]["epoch"] == replies[channel]["epoch"]
        # Nothing replayed: the first message is the frame sent after the subscribe.
        assert seqs([live[channel]]) == [last], live[channel]


async def test_since_with_another_epoch_is_not_recovered(redis_url: str, tmp_path: Path) -> None:
    with hubs(redis_url, tmp_path, 1) as (hub,):
        credentials = provision(hub.http)
        token = credentials.admin_token
        async with device(hub, credentials.device_key) as dev:
            async with dashboard(hub, token) as exact, dashboard(hub, token) as wildcard:
                replies = {EXACT: await exact.subscribe(EXACT), WILDCARD: await wildcard.subscribe(WILDCARD)}
                await dev.publish(3)
                seen = {EXACT: await exact.messages(3), WILDCARD: await wildcard.messages(3)}
            await dev.publish(2)  # missed, but the epoch says the offset is from another history
            async with dashboard(hub, token) as exact, dashboard(hub, token) as wildcard:
                subscribers = {EXACT: exact, WILDCARD: wildcard}
                results = {}
                for channel, ws in subscribers.items():
                    since = position(seen[channel][-1], replies[channel])
                    stale = {"offset": since["offset"], "epoch": another_history(since["epoch"])}
                    results[channel] = await ws.subscribe(channel, since=stale)
                await dev.publish(1)
                live = {channel: await ws.message() for channel, ws in subscribers.items()}

    for channel in (EXACT, WILDCARD):
        assert results[channel]["recovered"] is False, results[channel]
        assert results[channel]["epoch"] == replies[channel]["epoch"] != another_history(replies[channel]["epoch"])
        assert seqs([live[channel]]) == [6], live[channel]
