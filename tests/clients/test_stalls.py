"""A stalled network path (marked ``fault``): a device and a dashboard reach ``telehub serve`` through a TCP proxy
that goes silent both ways for a few seconds, without a reset, while another device and dashboard on direct
connections go on. The hub's heartbeat drops the stalled ones (the device is marked offline) and the others
lose nothing meanwhile; once the path flows again the SDKs reconnect, the device resends what was not acked and
the dashboard resumes: every frame stored once and seen once by each dashboard, in order."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from clients import Backoff, DeviceClient, HubClient, RestClient
from tests.clients.conftest import WAIT, admin_rest, eventually, hub_env, new_device, numbers_by_device, stored_seqs
from tests.clients.proxy import cuttable_proxy
from tests.processes import serve

pytestmark = pytest.mark.fault

HEARTBEAT_MS = 500
STALL_S = 4.0
BEFORE, DURING, AFTER = 50, 150, 50
NOW_MS = int(time.time() * 1000)


def fast_backoff() -> Backoff:
    return Backoff(initial_s=0.05, maximum_s=0.5)


async def status(rest: RestClient, device_id: str) -> str:
    return str((await rest.get_device(device_id))["status"])


async def stream(device: DeviceClient, numbers: range, every_s: float = 0.0) -> None:
    """Frames with ``n`` in ``numbers``, queued (not awaited for their acks), ``every_s`` apart."""
    for n in numbers:
        await device.send({"n": n}, ts=NOW_MS + n)
        if every_s:
            await asyncio.sleep(every_s)


async def test_a_stalled_device_and_dashboard_cost_the_others_nothing_and_lose_nothing(tmp_path: Path) -> None:
    env = {**hub_env(), "TELEHUB_WS_HEARTBEAT_MS": str(HEARTBEAT_MS)}
    heartbeat_s = HEARTBEAT_MS / 1000
    with serve(data_dir=tmp_path / "data", env=env) as hub:
        async with admin_rest(hub) as rest, contextlib.AsyncExitStack() as stack:
            assert rest.token is not None
            far_device, near_device = await new_device(rest, "stall"), await new_device(rest, "stall")
            device_path = await stack.enter_async_context(cuttable_proxy(hub.port))
            dashboard_path = await stack.enter_async_context(cuttable_proxy(hub.port))
            beat = heartbeat_s
            far = DeviceClient(
                device_path.url,
                far_device.key,
                state_path=tmp_path / "far.json",
                ping_interval=beat,
                backoff=fast_backoff(),
            )
            near = DeviceClient(
                hub.url, near_device.key, state_path=tmp_path / "near.json", ping_interval=beat, backoff=fast_backoff()
            )
            far_watcher = HubClient(dashboard_path.url, rest.token, ping_interval=beat, backoff=fast_backoff())
            near_watcher = HubClient(hub.url, rest.token, ping_interval=beat, backoff=fast_backoff())
            for client in (far, near, far_watcher, near_watcher):
                await stack.enter_async_context(client)
            total = 2 * (BEFORE + DURING + AFTER)
            received: dict[str, dict[str, list[float]]] = {"far": {}, "near": {}}
            watchers = []
            for name, watcher in (("far", far_watcher), ("near", near_watcher)):
                subscription = await watcher.subscribe("devices/+/telemetry")
                watchers.append(asyncio.create_task(numbers_by_device(subscription, received[name], total)))

            await asyncio.gather(stream(far, range(1, BEFORE + 1)), stream(near, range(1, BEFORE + 1)))
            await asyncio.wait_for(asyncio.gather(far.flush(), near.flush()), WAIT)
            assert await status(rest, far_device.id) == "online"

            device_path.stall()
            dashboard_path.stall()
            stalled_at = time.monotonic()
            near_acked, near_seen = near.acked_seq, len(received["near"].get(near_device.id, []))
            during = range(BEFORE + 1, BEFORE + DURING + 1)
            await asyncio.gather(stream(far, during), stream(near, during, every_s=STALL_S / 2 / DURING))
            # The direct device is acked, and its dashboard fed, while the other path is silent.
            await asyncio.wait_for(near.flush(), WAIT)
            assert near.acked_seq == near_acked + DURING
            await eventually(
                lambda: len(received["near"].get(near_device.id, [])) == near_seen + DURING,
                "the direct dashboard did not get the direct device's frames during the stall",
            )
            # The hub's heartbeat found the stalled device gone.
            deadline = asyncio.get_running_loop().time() + WAIT
            while await status(rest, far_device.id) != "offline":
                assert asyncio.get_running_loop().time() < deadline, "the stalled device is still online"
                await asyncio.sleep(0.05)
            assert far.acked_seq == BEFORE, "nothing can be acked through a silent path"
            assert time.monotonic() - stalled_at < STALL_S, "the stall ended before its effects were checked"
            await asyncio.sleep(STALL_S - (time.monotonic() - stalled_at))
            device_path.release()
            dashboard_path.release()

            after = range(BEFORE + DURING + 1, BEFORE + DURING + AFTER + 1)
            await asyncio.gather(stream(far, after), stream(near, after))
            await asyncio.wait_for(asyncio.gather(far.flush(), near.flush()), WAIT)
            await asyncio.wait_for(asyncio.gather(*watchers), WAIT)
            assert await status(rest, far_device.id) == "online"
            assert far.connections >= 2 and far_watcher.connections >= 2, "the stalled clients never reconnected"
            assert near.connections == 1 and near_watcher.connections == 1, "the direct clients were disturbed"

        everything = [float(n) for n in range(1, BEFORE + DURING + AFTER + 1)]
        async with admin_rest(hub) as rest:
            for device in (far_device, near_device):
                assert await stored_seqs(rest, device.id) == list(range(1, len(everything) + 1)), device.id
        for name in ("far", "near"):
            assert received[name] == {far_device.id: everything, near_device.id: everything}, name
