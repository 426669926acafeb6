"""``DeviceClient`` command handlers against a live hub: return values complete, exceptions fail, unknown
commands fail with a clear error, and commands queued while the device was away run once it is back; all seen
over REST through ``RestClient``."""

from __future__ import annotations

import asyncio
from typing import Any

from clients import DeviceClient, RestClient
from tests.clients.conftest import WAIT, new_device
from tests.processes import ServeProcess

ENDED = {"completed", "failed", "timed_out", "expired", "canceled"}


async def ended(rest: RestClient, command_id: str) -> dict[str, Any]:
    """The command once it has ended (polled over REST, bounded)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        command: dict[str, Any] = await rest.get_command(command_id)
        if command["status"] in ENDED or asyncio.get_running_loop().time() > deadline:
            return command
        await asyncio.sleep(0.05)


async def test_handlers_complete_with_their_value_and_fail_with_their_exception(
    hub_server: ServeProcess, rest: RestClient
) -> None:
    device = await new_device(rest)
    calls: list[dict[str, Any]] = []
    async with DeviceClient(hub_server.url, device.key) as client:

        @client.command("reboot")
        async def reboot(params: dict[str, Any]) -> dict[str, Any]:
            calls.append(params)
            await asyncio.sleep(0.01)
            return {"rebooting_in_s": params["delay_s"]}

        @client.command("calibrate")
        def calibrate(params: dict[str, Any]) -> None:
            raise RuntimeError("sensor is not ready")

        await asyncio.wait_for(client.wait_connected(), WAIT)
        rebooted = await rest.create_command(device.id, "reboot", {"delay_s": 5})
        calibrated = await rest.create_command(device.id, "calibrate")
        unknown = await rest.create_command(device.id, "self_destruct")

        done = await ended(rest, rebooted["command_id"])
        assert done["status"] == "completed" and done["result"] == {"rebooting_in_s": 5}, done
        failed = await ended(rest, calibrated["command_id"])
        assert failed["status"] == "failed" and failed["error"] == "sensor is not ready", failed
        refused = await ended(rest, unknown["command_id"])
        assert refused["status"] == "failed", refused
        assert "unknown command 'self_destruct'" in refused["error"] and "calibrate, reboot" in refused["error"]
    assert calls == [{"delay_s": 5}]
    results = (await rest.list_messages(device.id, type="command_result"))["data"]
    assert len(results) == 3


async def test_commands_queued_while_offline_run_once_the_device_connects(
    hub_server: ServeProcess, rest: RestClient
) -> None:
    device = await new_device(rest)
    queued = [await rest.create_command(device.id, "add", {"a": n, "b": 1}) for n in range(3)]
    seen: list[int] = []
    # Handlers are registered before connecting: queued commands arrive right after the hello.
    client = DeviceClient(hub_server.url, device.key)

    @client.command("add")
    def add(params: dict[str, Any]) -> int:
        seen.append(params["a"])
        return int(params["a"]) + int(params["b"])

    async with client:
        results = [await ended(rest, command["command_id"]) for command in queued]
    assert [r["result"] for r in results] == [1, 2, 3] and seen == [0, 1, 2]
    listed = await rest.list_commands(device.id, status="completed")
    assert {c["command_id"] for c in listed["data"]} == {c["command_id"] for c in queued}
