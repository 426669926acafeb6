"""``telehub simulate`` against a live ``telehub serve``: the progress it prints, the frames it reports acked are
exactly the frames stored, a rerun continues each device's seq, its devices answer commands sent over REST,
SIGTERM flushes before the summary, and each way of failing says what to do next."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients import RestClient
from tests.cli_support import background, new_api_key, summary_of
from tests.clients.conftest import WAIT, admin_rest, eventually, hub_env
from tests.processes import ServeProcess, free_port, run_telehub, serve, telehub_env

# Progress lines when stdout is not a terminal: one per --interval.
PROGRESS = re.compile(
    r"^\s+\d+\.\ds  (?P<online>\d+)/(?P<devices>\d+) online  [\d,.]+ frames/s  acked (?P<acked>[\d,]+)  "
    r"lag [\d,]+ frames?.*  reconnects (?P<reconnects>\d+)  errors (?P<errors>\d+)",
    re.MULTILINE,
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with serve(data_dir=tmp_path_factory.mktemp("simulate-hub") / "data", env=hub_env()) as process:
        yield process


@pytest.fixture(scope="module")
async def operator_key(hub: ServeProcess) -> str:
    return await new_api_key(hub, "operator")


async def stored(rest: RestClient, device_id: str) -> list[dict[str, Any]]:
    """Every frame the device sent with a seq (telemetry and events), oldest first."""
    return [m async for m in rest.iter_messages(device_id, type="all") if m["seq"] is not None]


def simulate(hub: ServeProcess, *args: str, token: str) -> tuple[int, str, str]:
    result = run_telehub("simulate", "--url", hub.url, *args, env=telehub_env(TELEHUB_TOKEN=token))
    return result.returncode, result.stdout, result.stderr


async def test_every_frame_reported_acked_is_stored_once_and_a_rerun_continues_the_seqs(
    hub: ServeProcess, operator_key: str, tmp_path: Path
) -> None:
    args = ("--devices", "3", "--rate", "10", "--prefix", "seqs", "--state-dir", str(tmp_path), "--interval", "0.5")
    code, out, err = await asyncio.to_thread(simulate, hub, *args, "--duration", "2", token=operator_key)
    assert code == 0, out + err
    assert "3 devices seqs-0001..seqs-0003 ready" in out and "(3 created, 0 reused" in out, out
    progress = [m.groupdict() for m in PROGRESS.finditer(out)]
    assert len(progress) >= 3, out
    assert progress[-1]["online"] == progress[-1]["devices"] == "3", out
    assert all(p["reconnects"] == "0" and p["errors"] == "0" for p in progress), out
    first = summary_of(out)
    assert first.acked == first.sent >= 3 * 10, out  # 10 frames/s each for 2 s, give or take a tick
    assert first.rejected == first.not_acked == 0, out

    code, out, err = await asyncio.to_thread(simulate, hub, *args, "--duration", "1", token=operator_key)
    assert code == 0, out + err
    assert "(0 created, 3 reused" in out, out
    second = summary_of(out)
    assert second.acked == second.sent > 0 and second.rejected == second.not_acked == 0, out

    async with admin_rest(hub) as rest:
        frames = {device: await stored(rest, device) for device in ("seqs-0001", "seqs-0002", "seqs-0003")}
    # Exactly what was acked is stored: a frame taken for a duplicate would be acked and not stored.
    assert sum(len(f) for f in frames.values()) == first.acked + second.acked
    for device, messages in frames.items():
        seqs = [m["seq"] for m in messages]
        assert seqs == list(range(1, len(seqs) + 1)), (device, seqs)  # one run after the other, no gap, no repeat
        assert all(m["type"] == "telemetry" and set(m["frame"]["metrics"]) == {"temp", "hum"} for m in messages)
        assert (tmp_path / f"{device}.json").exists()


async def test_devices_answer_commands_and_sigterm_flushes_before_the_summary(
    hub: ServeProcess, operator_key: str, tmp_path: Path
) -> None:
    args = ("simulate", "--url", hub.url, "--token", operator_key, "--devices", "2", "--type", "pump")
    with background(*args, "--prefix", "cmd", "--rate", "5", env=telehub_env(), directory=tmp_path) as sim:
        async with admin_rest(hub) as rest:
            await eventually(lambda: "streaming" in sim.stdout, f"simulate did not start:\n{sim.stderr}")
            for device in ("cmd-0001", "cmd-0002"):
                assert await until_online(rest, device), sim.stdout + sim.stderr
            ping = await rest.create_command("cmd-0001", "ping")
            rate = await rest.create_command("cmd-0001", "set_rate", {"rate_hz": 20})
            wrong = await rest.create_command("cmd-0001", "set_rate", {"rate_hz": "fast"})
            reboot = await rest.create_command("cmd-0002", "reboot")
            results = [await ended(rest, c["command_id"]) for c in (ping, rate, wrong, reboot)]
        code = sim.stop()
        out, err = sim.stdout, sim.stderr
    assert code == 0, out + err
    assert [r["status"] for r in results] == ["completed", "completed", "failed", "completed"], results
    assert results[0]["result"]["pong"] is True and results[0]["result"]["device_id"] == "cmd-0001"
    assert results[1]["result"] == {"rate_hz": 20.0}
    assert "params.rate_hz must be a number" in results[2]["error"]
    assert results[3]["result"] == {"rebooted": True, "boots": 2}
    summary = summary_of(out)
    assert summary.commands == 4 and summary.acked == summary.sent and summary.not_acked == 0, out
    async with admin_rest(hub) as rest:
        frames = [m for device in ("cmd-0001", "cmd-0002") for m in await stored(rest, device)]
    assert len(frames) == summary.acked
    assert [m["frame"]["name"] for m in frames if m["type"] == "event"] == ["boot"]
    assert {tuple(sorted(m["frame"]["metrics"])) for m in frames if m["type"] == "telemetry"} == {
        ("pressure", "rpm", "temp")
    }


async def ended(rest: RestClient, command_id: str) -> dict[str, Any]:
    """The command once it has ended (polled over REST, bounded)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        command: dict[str, Any] = await rest.get_command(command_id)
        if command["status"] not in ("queued", "sent") or asyncio.get_running_loop().time() > deadline:
            return command
        await asyncio.sleep(0.05)


async def until_online(rest: RestClient, device_id: str) -> bool:
    deadline = asyncio.get_running_loop().time() + WAIT
    while (await rest.get_device(device_id))["status"] != "online":
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_each_failure_says_what_to_do_next(hub: ServeProcess) -> None:
    viewer = await new_api_key(hub, "viewer")

    def run(*args: str, token: str | None) -> tuple[int, str]:
        env = telehub_env(TELEHUB_TOKEN=token) if token else telehub_env()
        result = run_telehub("simulate", "--duration", "1", *args, env=env)
        return result.returncode, result.stderr

    code, err = await asyncio.to_thread(run, "--url", hub.url, token=None)
    assert code == 2 and "needs a token" in err and "TELEHUB_TOKEN" in err and "create-api-key" in err, err
    code, err = await asyncio.to_thread(run, "--url", hub.url, token="sk_live_not-a-key")
    assert code == 1 and "refused the token (401" in err and "check --token" in err, err
    code, err = await asyncio.to_thread(run, "--url", hub.url, token=viewer)
    assert code == 1 and "role is viewer" in err and "needs role operator" in err, err
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, err = await asyncio.to_thread(run, "--url", nowhere, token=viewer)
    assert code == 1 and f"cannot reach the hub at {nowhere}" in err and "`telehub serve`" in err, err
