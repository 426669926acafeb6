"""``HubClient`` against live ``telehub serve`` processes: resuming after a cut connection, a hub restart and a
4008 close with no gap and no duplicate, in both encodings; ``last``; gaps reported; refused subscriptions."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import pytest

from clients import Backoff, DeviceClient, HubClient, RestClient, Subscription, SubscriptionError
from tests.clients.conftest import WAIT, admin_rest, eventually, new_device, restart
from tests.clients.proxy import cuttable_proxy
from tests.processes import ServeProcess

NOW_MS = int(time.time() * 1000)
FRAMES = 400


def fast_backoff() -> Backoff:
    return Backoff(initial_s=0.05, maximum_s=0.5)


async def produce(
    device: DeviceClient,
    frames: int | range,
    metrics: Callable[[int], dict[str, float]] | None = None,
    *,
    pause_every: int = 20,
) -> None:
    """Frames 1..frames, or those of a range (metric ``n`` is the frame's number), a pause every few, then
    every one acked."""
    for n in frames if isinstance(frames, range) else range(1, frames + 1):
        await device.send(metrics(n) if metrics else {"n": n}, ts=NOW_MS + n)
        if n % pause_every == 0:
            await asyncio.sleep(0.01)
    await device.flush()


async def collect(subscription: Subscription, count: int, into: list[float]) -> None:
    """The ``n`` of telemetry messages until ``count`` of them arrived."""
    async for message in subscription:
        if message.channel.endswith("/telemetry"):
            into.append(float(message.data["metrics"]["n"]))
            if len(into) >= count:
                return


@pytest.mark.parametrize(
    ("encoding", "pattern"),
    [("json", "devices/{id}/telemetry"), ("msgpack", "devices/{id}/#")],
    ids=["json", "msgpack"],
)
async def test_cut_connections_resume_with_no_gap_and_no_duplicate(
    hub_server: ServeProcess, rest: RestClient, encoding: str, pattern: str
) -> None:
    device = await new_device(rest)
    assert rest.token is not None
    received: list[float] = []
    async with cuttable_proxy(hub_server.port) as proxy:
        hub = HubClient(proxy.url, rest.token, encoding=encoding, backoff=fast_backoff())  # type: ignore[arg-type]
        async with hub, DeviceClient(hub_server.url, device.key) as sender:
            subscription = await hub.subscribe(pattern.format(id=device.id))
            consumer = asyncio.create_task(collect(subscription, FRAMES, received))
            phase = FRAMES // 4
            for cut in range(1, 4):
                # Cut mid-phase; the rest of the phase is sent while the dashboard is away or resubscribing.
                numbers = range((cut - 1) * phase + 1, cut * phase + 1)
                producer = asyncio.create_task(produce(sender, numbers, pause_every=4))
                half = numbers[phase // 2]
                await eventually(lambda half=half: len(received) >= half, "messages stopped arriving")
                proxy.cut()
                await asyncio.wait_for(producer, WAIT)
                await eventually(lambda cut=cut: hub.connections == cut + 1, "the dashboard did not reconnect")
            await produce(sender, range(3 * phase + 1, FRAMES + 1))
            await asyncio.wait_for(consumer, WAIT)
            assert subscription.gaps == 0 and subscription.recovered
    assert received == [float(n) for n in range(1, FRAMES + 1)]


async def test_a_dashboard_resumes_across_a_hub_restart(own_server: ServeProcess) -> None:
    async with admin_rest(own_server) as rest:
        device = await new_device(rest)
        token = rest.token
    assert token is not None
    received: list[float] = []
    hub = HubClient(own_server.url, token, encoding="msgpack", backoff=fast_backoff())
    sender = DeviceClient(own_server.url, device.key, backoff=fast_backoff())
    async with hub, sender:
        subscription = await hub.subscribe("devices/+/telemetry")
        consumer = asyncio.create_task(collect(subscription, FRAMES, received))
        producer = asyncio.create_task(produce(sender, FRAMES))
        await eventually(lambda: len(received) >= FRAMES // 3, "messages stopped arriving")
        # Off the event loop: the clients must read the 1012 and answer it while the server drains (blocked, the
        # device's answer never came, and the exit's reset could discard the unread close frame: 1006).
        assert await asyncio.to_thread(own_server.stop, signal.SIGTERM) == 0  # both clients are closed with 1012
        await asyncio.to_thread(restart, own_server)
        await asyncio.wait_for(producer, WAIT)
        await asyncio.wait_for(consumer, WAIT)
        assert hub.connections >= 2 and sender.connections >= 2 and subscription.gaps == 0
        assert hub.last_close_code == sender.last_close_code == 1012
    assert received == [float(n) for n in range(1, FRAMES + 1)]


# Names as long as the contract allows, so a few hundred frames are megabytes.
WIDE = {f"{i:03d}-".ljust(64, "m"): float(i) for i in range(200)}


async def test_a_reader_closed_with_4008_resumes_and_loses_nothing(hub_server: ServeProcess, rest: RestClient) -> None:
    device = await new_device(rest)
    assert rest.token is not None
    frames = 500
    received: list[float] = []
    async with cuttable_proxy(hub_server.port) as proxy:
        hub = HubClient(proxy.url, rest.token, buffer_size=4, backoff=fast_backoff())
        async with hub, DeviceClient(hub_server.url, device.key) as sender:
            subscription = await hub.subscribe(f"devices/{device.id}/telemetry")
            # Megabytes the dashboard does not read: the hub's send buffer for it passes 1 MiB, and it closes 4008.
            proxy.hold()
            await produce(sender, frames, lambda n: {**WIDE, "n": float(n)})
            await asyncio.sleep(1)
            proxy.release()
            await asyncio.wait_for(collect(subscription, frames, received), WAIT)
            assert hub.connections >= 2 and subscription.gaps == 0
            assert hub.last_close_code == 4008  # slow_consumer
    assert received == [float(n) for n in range(1, frames + 1)]


async def test_last_replays_the_newest_and_a_resume_that_cannot_replay_is_a_gap(
    hub_server: ServeProcess, rest: RestClient
) -> None:
    device = await new_device(rest)
    assert rest.token is not None
    gaps: list[Subscription] = []
    async with HubClient(hub_server.url, rest.token) as hub, DeviceClient(hub_server.url, device.key) as sender:
        await produce(sender, 5)
        newest = await hub.subscribe(f"devices/{device.id}/telemetry", last=2)
        assert [(await newest.get()).data["metrics"]["n"] for _ in range(2)] == [4, 5]
        # A position from another history (another epoch): the hub cannot replay, and says so.
        stale = await hub.subscribe(
            "devices/+/telemetry", since={"offset": "1-0", "epoch": "1.00000000"}, on_gap=gaps.append
        )
        assert stale.recovered is False and stale.gaps == 1 and gaps == [stale]
        await sender.send({"n": 6})
        message = await asyncio.wait_for(stale.get(), WAIT)
        assert message.gap_before and message.data["metrics"]["n"] == 6
        assert (await asyncio.wait_for(newest.get(), WAIT)).gap_before is False
        # Kept positions resume later, on another connection.
        since = newest.since()
        await newest.unsubscribe()
    async with HubClient(hub_server.url, rest.token) as hub, DeviceClient(hub_server.url, device.key) as sender:
        await sender.send({"n": 7})
        await sender.flush()
        resumed = await hub.subscribe(f"devices/{device.id}/telemetry", since=since)
        assert resumed.recovered and (await asyncio.wait_for(resumed.get(), WAIT)).data["metrics"]["n"] == 7


async def test_refused_subscriptions_raise_the_contract_code(hub_server: ServeProcess) -> None:
    async with admin_rest(hub_server) as rest:
        assert rest.token is not None
        async with HubClient(hub_server.url, rest.token) as hub:
            with pytest.raises(SubscriptionError) as refused:
                await hub.subscribe("devices/+/nonsense")
            assert refused.value.code == "invalid_channel"
            await hub.ping()


async def test_a_token_callable_is_asked_again_after_4001_and_the_subscription_resumes(
    hub_server: ServeProcess, rest: RestClient
) -> None:
    device = await new_device(rest)
    keys: list[str] = []

    async def fresh_key() -> str:
        created = await rest.create_api_key(f"dashboard {len(keys)}", "viewer")
        keys.append(created["id"])
        return str(created["key"])

    received: list[float] = []
    async with HubClient(hub_server.url, fresh_key, backoff=fast_backoff()) as hub:
        async with DeviceClient(hub_server.url, device.key) as sender:
            subscription = await hub.subscribe(f"devices/{device.id}/telemetry")
            await produce(sender, 10)
            await asyncio.wait_for(collect(subscription, 10, received), WAIT)
            await rest.delete_api_key(keys[0])  # its dashboards are closed with 4001
            await produce(sender, range(11, 21))
            await asyncio.wait_for(collect(subscription, 20, received), WAIT)
        assert hub.last_close_code == 4001 and len(keys) == 2 and subscription.gaps == 0
    assert received == [float(n) for n in range(1, 21)]


async def test_overlapping_subscriptions_resume_without_taking_each_others_replay_twice(
    hub_server: ServeProcess, rest: RestClient
) -> None:
    """Two subscriptions on one device's telemetry (exact and ``#``): after a cut, each resubscribe's replay is
    handed to both; each still gets every message once, points frames (several messages per entry) included."""
    device = await new_device(rest)
    assert rest.token is not None
    async with cuttable_proxy(hub_server.port) as proxy:
        hub = HubClient(proxy.url, rest.token, backoff=fast_backoff())
        async with hub, DeviceClient(hub_server.url, device.key) as sender:
            exact = await hub.subscribe(f"devices/{device.id}/telemetry")
            everything = await hub.subscribe(f"devices/{device.id}/#")
            got: tuple[list[float], list[float]] = ([], [])
            consumers = [
                asyncio.create_task(collect(s, 60, into)) for s, into in zip((exact, everything), got, strict=True)
            ]
            await produce(sender, 20)
            await eventually(lambda: len(got[0]) == len(got[1]) == 20, "the first 20 did not arrive")
            proxy.cut()
            for n in range(21, 61, 2):  # points frames: two messages each, one stream entry
                await sender.send_points([(NOW_MS + n, {"n": n}), (NOW_MS + n + 1, {"n": n + 1})])
            await sender.flush()
            await asyncio.wait_for(asyncio.gather(*consumers), WAIT)
            for subscription in (exact, everything):  # and nothing more: no duplicate after the last
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(anext(subscription), 0.5)
            assert exact.gaps == everything.gaps == 0
    assert got[0] == got[1] == [float(n) for n in range(1, 61)]
