"""SIGTERM under load (marked ``fault``): twelve SDK devices stream and six dashboards follow them when
``telehub serve`` is told to stop. Before it exits it acks what it stored and closes every device and
dashboard with 1012: what Redis holds for each device is exactly what that device was told was stored.
Started again, the devices resend the rest and the dashboards resume: every frame stored once, seen once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import pytest

from clients import Backoff, DeviceClient, HubClient
from hub.redis_client import open_pool_client
from ingest import stream_keys
from tests.clients.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    WAIT,
    admin_rest,
    eventually,
    new_device,
    numbers_by_device,
    restart,
)
from tests.processes import admin_hub_env, serve

pytestmark = pytest.mark.fault

DEVICES = 12
DASHBOARDS = 6
FRAMES = 300
NOW_MS = int(time.time() * 1000)


def fast_backoff() -> Backoff:
    return Backoff(initial_s=0.05, maximum_s=0.5)


async def stored(redis_url: str, org_id: str, device_id: str) -> list[int]:
    async with open_pool_client(redis_url, decode_responses=False, max_connections=4) as store:
        entries = await store.xrange(stream_keys.device_frames(org_id, device_id))
    return [int(fields[b"s"]) for _, fields in entries]


async def test_sigterm_under_load_acks_what_it_stored_closes_1012_and_loses_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    env = admin_hub_env("sigterm", ADMIN_EMAIL, ADMIN_PASSWORD, TELEHUB_REDIS_URL=redis_url)
    with serve(data_dir=tmp_path / "data", env=env) as hub:
        async with admin_rest(hub) as rest:
            org_id = str((await rest.me())["org_id"])
            devices = [await new_device(rest, "term") for _ in range(DEVICES)]
            token = rest.token
        assert token is not None
        senders = [
            DeviceClient(hub.url, d.key, state_path=tmp_path / f"{d.id}.json", window=32, backoff=fast_backoff())
            for d in devices
        ]
        watchers = [HubClient(hub.url, token, backoff=fast_backoff()) for _ in range(DASHBOARDS)]
        stopped = asyncio.Event()

        async def produce(sender: DeviceClient) -> None:
            for n in range(1, FRAMES + 1):
                await sender.send({"n": n}, ts=NOW_MS + n)
                if n % 5 == 0:
                    await asyncio.sleep(0.01)  # a steady stream: the signal lands mid-stream
                if n == FRAMES // 2:
                    await stopped.wait()

        async with contextlib.AsyncExitStack() as stack:
            for sender in senders:
                await stack.enter_async_context(sender)
            for watcher in watchers:
                await stack.enter_async_context(watcher)
            seen: list[dict[str, list[float]]] = [{} for _ in watchers]
            followers = [
                asyncio.create_task(numbers_by_device(await w.subscribe("devices/+/telemetry"), into, DEVICES * FRAMES))
                for w, into in zip(watchers, seen, strict=True)
            ]
            producers = [asyncio.create_task(produce(sender)) for sender in senders]
            await eventually(lambda: all(s.acked_seq >= FRAMES // 4 for s in senders), "the devices are not acked")

            hub.send(signal.SIGTERM)
            assert await asyncio.to_thread(hub.wait) == 0, hub.output()
            assert [s.last_close_code for s in senders] == [1012] * DEVICES
            assert [w.last_close_code for w in watchers] == [1012] * DASHBOARDS
            for sender, device in zip(senders, devices, strict=True):
                # Nothing stored that its device was not told about; nothing it was told about missing.
                assert await stored(redis_url, org_id, device.id) == list(range(1, sender.acked_seq + 1)), device.id
            assert any(sender.pending for sender in senders), "the signal came after the stream: nothing was cut"

            restart(hub)
            stopped.set()
            await asyncio.wait_for(asyncio.gather(*producers), WAIT)
            await asyncio.wait_for(asyncio.gather(*(s.flush() for s in senders)), WAIT)
            await asyncio.wait_for(asyncio.gather(*followers), WAIT)
            assert all(s.connections == 2 for s in senders) and all(w.connections == 2 for w in watchers)

        everything = list(range(1, FRAMES + 1))
        for device in devices:
            assert await stored(redis_url, org_id, device.id) == everything, device.id
        for into in seen:
            assert into == {device.id: [float(n) for n in everything] for device in devices}
