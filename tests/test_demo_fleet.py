"""``telehub serve --demo``: the printed login and dashboard URL work, the simulated devices come online inside the
server's own process and their telemetry reads back over REST, they answer commands, the demo alert rule is
there, and a stop flushes them; with ``--workers 2`` they run once, in the supervisor."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from clients import RestClient
from hub.demo import DEMO_DEVICES
from tests.clients.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, hub_env
from tests.conftest import TIMEOUT
from tests.processes import ServeProcess, serve

DEMO_WAIT = 20 * TIMEOUT
DEMO_IDS = [device.device_id for device in DEMO_DEVICES]
STOPPED = re.compile(r"demo: devices stopped: (\d+) frames sent, (\d+) acked, (\d+) not acked")


def printed_login(hub: ServeProcess) -> tuple[str, str]:
    output = hub.output()
    assert f"dashboard  http://127.0.0.1:{hub.port}/\n" in output, output
    email = re.search(r"^\s+email\s+(\S+)$", output, re.MULTILINE)
    password = re.search(r"^\s+password\s+(\S+)$", output, re.MULTILINE)
    assert email and password, output
    return email[1], password[1]


async def until(condition: Callable[[], Awaitable[bool]], message: str) -> None:
    """Poll the async ``condition`` (bounded by DEMO_WAIT)."""
    deadline = asyncio.get_running_loop().time() + DEMO_WAIT
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{message} (waited {DEMO_WAIT:.0f} s)")
        await asyncio.sleep(0.1)


async def online_ids(rest: RestClient) -> list[str]:
    return [device["id"] for device in (await rest.list_devices(status="online"))["data"]]


async def test_demo_devices_stream_into_the_server_and_answer_commands(tmp_path: Path) -> None:
    with serve(data_dir=tmp_path / "data", env=hub_env(), args=["--demo"]) as hub:
        email, password = printed_login(hub)
        async with RestClient(hub.url) as rest:
            await rest.login(email, password)

            async def all_online() -> bool:
                return sorted(await online_ids(rest)) == sorted(DEMO_IDS)

            await until(all_online, "the demo devices did not come online")

            async def all_streaming() -> bool:
                latest = [(await rest.latest_readings(device))["data"] for device in DEMO_IDS]
                return all("temp" in readings for readings in latest)

            await until(all_streaming, "no telemetry from every demo device")
            assert set((await rest.latest_readings("demo-pump-1"))["data"]) == {"temp", "pressure", "rpm"}
            assert set((await rest.latest_readings("demo-sensor-1"))["data"]) == {"temp", "hum"}
            command = await rest.create_command("demo-pump-2", "ping")

            async def answered() -> bool:
                return (await rest.get_command(command["command_id"]))["status"] == "completed"

            await until(answered, "the demo device did not answer ping")
            assert (await rest.get_command(command["command_id"]))["result"]["device_id"] == "demo-pump-2"
            rules = (await rest.list_alert_rules())["data"]
            assert [(r["name"], r["metric"], r["op"], r["device_type"]) for r in rules] == [
                ("Pump overheating", "temp", "gt", "pump")
            ]
        async with RestClient(hub.url) as bootstrap:  # --demo leaves the bootstrap admin's organization to it
            await bootstrap.login(ADMIN_EMAIL, ADMIN_PASSWORD)
            assert (await bootstrap.list_devices())["data"] == []
        assert hub.stop() == 0
        stopped = STOPPED.search(hub.output())
        assert stopped and stopped[1] == stopped[2] and stopped[3] == "0", hub.output()


async def test_with_two_workers_the_demo_runs_once_in_the_supervisor(tmp_path: Path) -> None:
    with serve(data_dir=tmp_path / "data", env=hub_env(), args=["--demo", "--workers", "2"]) as hub:
        email, password = printed_login(hub)
        async with RestClient(hub.url) as rest:
            await rest.login(email, password)

            async def all_online() -> bool:
                return sorted(await online_ids(rest)) == sorted(DEMO_IDS)

            await until(all_online, "the demo devices did not come online")
            await asyncio.sleep(2 * TIMEOUT)  # a second fleet would be replacing these sessions (4003) by now
            events = [e async for e in rest.iter_events(type="device.online", device_id="demo-sensor-1")]
            assert len(events) == 1, events
            seqs = [m["seq"] async for m in rest.iter_messages("demo-sensor-1", type="telemetry")]
            assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 2, seqs
        assert hub.output().count("demo: 5 simulated devices stream") == 1, hub.output()
