"""docs/quickstart-device.md and docs/quickstart-backend.md kept working.

Each code block of the two pages is marked by an HTML comment before it: ``<!-- run: NAME -->`` (this test runs
it) or ``<!-- shown: NAME (why) -->`` (not run: installs packages). A Python block is saved as ``NAME`` in a
working directory of its own, as the page tells the reader, and run with this interpreter; a shell block runs
with bash. They get only what the page says they read: ``TELEHUB_URL`` (the live hub), and the credentials the
earlier blocks printed (a registration token, an API key, a webhook secret). Every block must do what the page
says it does: the test reads the hub back over REST. Every wait is a multiple of TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from clients import DeviceClient, RestClient
from tests.conftest import TIMEOUT
from tests.processes import ServeProcess, free_port, serve, telehub_env

ROOT = Path(__file__).resolve().parent.parent
DEVICE_PAGE = ROOT / "docs" / "quickstart-device.md"
BACKEND_PAGE = ROOT / "docs" / "quickstart-backend.md"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "change-me-now"
WAIT = 10 * TIMEOUT
MARKED = re.compile(r"<!-- (run|shown): ([\w.-]+)[^>]*-->\n```(\w+)\n(.*?)\n```", re.S)
OPENING_FENCE = re.compile(r"^```(\w+)$", re.M)


def code_blocks(page: Path) -> dict[str, tuple[str, str, str]]:
    """NAME -> (run|shown, language, code) of the page's marked blocks."""
    blocks: dict[str, tuple[str, str, str]] = {}
    for mark in MARKED.finditer(page.read_text()):
        assert mark[2] not in blocks, f"{page.name}: two blocks named {mark[2]}"
        blocks[mark[2]] = (mark[1], mark[3], mark[4])
    return blocks


@pytest.mark.parametrize("page", [DEVICE_PAGE, BACKEND_PAGE], ids=lambda p: p.name)
def test_every_code_block_is_marked_and_every_python_block_runs(page: Path) -> None:
    blocks = code_blocks(page)
    fences = [lang for lang in OPENING_FENCE.findall(page.read_text()) if lang in ("python", "sh")]
    assert len(fences) == len(blocks), f"{page.name}: a python or sh block without a run/shown marker"
    for name, (mark, lang, code) in blocks.items():
        if lang == "python":
            assert mark == "run", f"{page.name}: python block {name} is not run"
            assert code.startswith(f"# {name}:"), f"{page.name}: {name} does not start with '# {name}: ...'"
        assert mark == "run" or lang == "sh", name


# Running the blocks as a reader would.


def reader_env(hub: ServeProcess, **variables: str) -> dict[str, str]:
    env = telehub_env(TELEHUB_URL=hub.url, **variables)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # python3, curl
    return env


@dataclass
class Reader:
    """A reader's directory, with the blocks of one page."""

    page: Path
    cwd: Path
    hub: ServeProcess

    def command(self, name: str) -> list[str]:
        mark, lang, code = code_blocks(self.page)[name]
        assert mark == "run"
        if lang == "python":
            (self.cwd / name).write_text(code + "\n")
            return [sys.executable, name]
        return ["bash", "-c", "set -euo pipefail\n" + code]

    async def run(self, name: str, **variables: str) -> str:
        """Run a block to its end; its standard output (it must succeed). In a thread: the test's own event loop
        (a device answering commands) goes on meanwhile."""
        result = await asyncio.to_thread(
            subprocess.run,
            self.command(name),
            cwd=self.cwd,
            env=reader_env(self.hub, **variables),
            capture_output=True,
            text=True,
            timeout=3 * WAIT,
            check=False,
        )
        assert result.returncode == 0, f"{name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        return result.stdout

    @contextlib.contextmanager
    def start(self, name: str, **variables: str) -> Iterator[Running]:
        """A block that runs until stopped; its output goes to a file read while it runs."""
        log = self.cwd / f"{name}.out"
        with log.open("w") as out:
            process = subprocess.Popen(
                self.command(name),
                cwd=self.cwd,
                env=reader_env(self.hub, **variables),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        try:
            yield Running(process, log)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


@dataclass
class Running:
    process: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    async def wait_for_output(self, text: str) -> None:
        await eventually(lambda: text in self.output() or self.process.poll() is not None, f"{text!r} printed")
        assert text in self.output(), self.output()

    def interrupt(self) -> int:
        """Ctrl-C; the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=WAIT)


async def eventually(condition: Callable[[], bool], what: str, within_s: float = WAIT) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {within_s:.0f} s: {what}"
        await asyncio.sleep(0.05)


async def until_ended(rest: RestClient, command_id: str) -> dict[str, Any]:
    """The command once it is no longer queued or sent (bounded)."""
    deadline = time.monotonic() + WAIT
    while True:
        command: dict[str, Any] = await rest.get_command(command_id)
        if command["status"] not in ("queued", "sent"):
            return command
        assert time.monotonic() < deadline, f"{command_id} still {command['status']}"
        await asyncio.sleep(0.05)


def documented_keys(page: Path, name: str) -> list[str]:
    """The keys of the answer a shell block shows in its ``# {...}`` comment."""
    comment = next(line for line in code_blocks(page)[name][2].splitlines() if line.startswith("# {"))
    return re.findall(r'"(\w+)":', comment)


def json_lines(output: str) -> list[Any]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


# The hub.


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    env = telehub_env(
        TELEHUB_SECRET="quickstart-tests-" + "x" * 40,
        TELEHUB_BOOTSTRAP_EMAIL=ADMIN_EMAIL,
        TELEHUB_BOOTSTRAP_PASSWORD=ADMIN_PASSWORD,
        TELEHUB_WEBHOOK_ALLOW_PRIVATE="1",  # the page's advice for a receiver on your own network
    )
    with serve(data_dir=tmp_path_factory.mktemp("quickstarts") / "data", env=env) as process:
        yield process


@pytest.fixture
async def admin(hub: ServeProcess) -> AsyncIterator[RestClient]:
    async with RestClient(hub.url, timeout=WAIT) as rest:
        await rest.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        yield rest


# docs/quickstart-device.md


async def test_the_device_quickstart(hub: ServeProcess, admin: RestClient, tmp_path: Path) -> None:
    reader = Reader(DEVICE_PAGE, tmp_path, hub)
    token = json.loads(await reader.run("registration-token.sh"))
    assert list(token) == documented_keys(DEVICE_PAGE, "registration-token.sh")
    assert token["token"].startswith("rtk_") and token["device_name"] == "pump-3"

    # 2. Provisioning: once, then the saved credentials are kept.
    assert (
        await reader.run("provision.py", TELEHUB_REGISTRATION_TOKEN=token["token"])
        == f"provisioned as {token['device_id']}\n"
    )
    credentials = json.loads((tmp_path / "telehub-device.json").read_text())
    assert credentials["device_key"].startswith("dk_") and credentials["ws_url"].startswith("ws://")
    assert (tmp_path / "telehub-device.json").stat().st_mode & 0o777 == 0o600
    again = await reader.run("provision.py", TELEHUB_REGISTRATION_TOKEN=token["token"])
    assert again == f"already provisioned as {token['device_id']}\n"
    device_id = credentials["device_id"]

    # 3. Telemetry: 10 readings and an event per run; the second run continues the seq.
    assert await reader.run("telemetry.py") == "stored up to seq 11\n"
    assert await reader.run("telemetry.py") == "stored up to seq 22\n"
    messages = [m async for m in admin.iter_messages(device_id)]
    assert [m["seq"] for m in messages] == list(range(1, 23))
    assert [m["frame"]["name"] for m in messages if m["type"] == "event"] == ["door_opened", "door_opened"]
    readings = [r async for r in admin.iter_readings(device_id, metric=["temp", "pump_on"])]
    assert sum(r["metric"] == "temp" for r in readings) == 20
    assert [r["value"] for r in readings if r["metric"] == "pump_on"] == [1.0] * 20

    # 4. Columns: one frame, 2,000 samples.
    assert await reader.run("columns.py") == "2000 samples stored as seq 23\n"
    now = time.time_ns() // 1_000_000
    counts = await admin.aggregate_readings(
        device_id, metric=["vib_x", "vib_y"], from_=now - 60_000, to=now, interval="1h", fn=["count"]
    )
    per_metric: dict[str, int] = {}
    for bucket in counts["data"]:
        per_metric[bucket["metric"]] = per_metric.get(bucket["metric"], 0) + bucket["count"]
    assert per_metric == {"vib_x": 1000, "vib_y": 1000}

    # 5. Commands: one queued while the device is offline arrives once it connects; then live ones.
    queued = await admin.create_command(device_id, "reboot", {"delay_s": 5})
    with reader.start("commands.py") as device:
        await device.wait_for_output(f"connected as {device_id}\n")
        ended = await until_ended(admin, queued["command_id"])
        assert (ended["status"], ended["result"]) == ("completed", "rebooting in 5 s")
        interval = await admin.create_command(device_id, "set_interval", {"seconds": 0.2})
        ended = await until_ended(admin, interval["command_id"])
        assert (ended["status"], ended["result"]) == ("completed", {"interval_s": 0.2})
        bad = await admin.create_command(device_id, "set_interval", {})
        ended = await until_ended(admin, bad["command_id"])
        assert (ended["status"], ended["error"]) == ("failed", "'seconds'")
        unknown = await admin.create_command(device_id, "self_destruct")
        ended = await until_ended(admin, unknown["command_id"])
        assert ended["status"] == "failed"
        assert ended["error"] == "unknown command 'self_destruct' (this device handles: reboot, set_interval)"
        assert device.interrupt() == 0, device.output()
    readings = [r async for r in admin.iter_readings(device_id, metric=["temp"])]
    assert len(readings) > 20, "commands.py sent no readings"

    # 6. The key: it works, then, rotated, the hub refuses it.
    assert await reader.run("check_key.py") == "the key works\n"
    await admin.rotate_device_key(device_id)
    assert await reader.run("check_key.py") == "the hub refused the key: 401\n"


# docs/quickstart-backend.md


@contextlib.asynccontextmanager
async def boiler(hub: ServeProcess, admin: RestClient, reboots: list[str]) -> AsyncIterator[DeviceClient]:
    """boiler-7 connected, answering reboot like the device quickstart's commands.py."""
    key = await admin.rotate_device_key("boiler-7")
    device = DeviceClient(hub.url, key)

    @device.command("reboot")
    async def reboot(params: dict[str, Any]) -> str:
        reboots.append(json.dumps(params))
        return f"rebooting in {params.get('delay_s', 0)} s"

    async with device:
        await asyncio.wait_for(device.wait_connected(), WAIT)
        yield device


async def test_the_backend_quickstart(hub: ServeProcess, admin: RestClient, tmp_path: Path) -> None:
    reader = Reader(BACKEND_PAGE, tmp_path, hub)
    created = json.loads(await reader.run("api-key.sh"))
    assert list(created) == documented_keys(BACKEND_PAGE, "api-key.sh")
    assert created["key"].startswith("sk_live_") and created["role"] == "admin"
    key = {"TELEHUB_API_KEY": created["key"]}

    # 2. curl, before boiler-7 exists: it is created, has no data yet, and the command waits for it.
    device, boilers, latest, raw, buckets, command = json_lines(await reader.run("tour.sh", **key))
    assert (device["id"], device["type"], device["tags"]) == ("boiler-7", "boiler", ["basement"])
    assert [d["id"] for d in boilers["data"]] == ["boiler-7"] and boilers["meta"]["total"] == 1
    assert latest == {"data": {}} and raw["data"] == [] and buckets["data"] == []
    assert command["status"] == "queued" and command["command_id"].startswith("cmd_")

    reboots: list[str] = []
    async with boiler(hub, admin, reboots) as device_client:
        # The command queued by the tour reaches the device as soon as it connects.
        assert (await until_ended(admin, command["command_id"]))["status"] == "completed"
        now = time.time_ns() // 1_000_000
        for i in range(12):  # a reading a second over the last 12 s
            await device_client.send({"temp": 20.0 + i}, ts=now - 11_000 + 1000 * i)
        await device_client.flush()

        # The tour again: the same device and the same command, replayed; now with readings.
        device2, boilers2, latest2, raw2, buckets2, command2 = json_lines(await reader.run("tour.sh", **key))
        assert device2 == device and command2 == command and boilers2["meta"]["total"] == 1
        assert latest2["data"]["temp"]["value"] == 31.0
        assert [r["value"] for r in raw2["data"]] == [31.0, 30.0, 29.0, 28.0, 27.0]
        assert sum(b["count"] for b in buckets2["data"]) == 12
        assert buckets2["meta"] == {"interval": "1h", "tz": "UTC"}

        # 3. RestClient: devices and readings.
        lines = (await reader.run("devices.py", **key)).splitlines()
        assert len(lines) == 1 and lines[0].startswith("boiler-7 online {'temp': {'ts': ")
        out = await reader.run("readings.py", **key)
        assert "raw samples: 12\n" in out and out.endswith("aggregated samples: 12\n")

        # 4. Commands: created once, whatever the number of runs.
        first = await reader.run("send_command.py", **key)
        assert re.fullmatch(r"cmd_\S+ completed rebooting in 5 s None\n", first)
        assert await reader.run("send_command.py", **key) == first
        assert reboots == ['{"delay_s": 5}', '{"delay_s": 5}']  # the tour's command and this one, once each

        # 5. Alerts: the rule, 36 s of a hot boiler, the alert, acknowledged.
        assert re.fullmatch(r"rule rul_\S+\n", await reader.run("alert_rule.py", **key))
        now = time.time_ns() // 1_000_000
        await (await device_client.send_points([(now - 35_000 + 1000 * i, {"temp": 85.0}) for i in range(36)]))
        await eventually_async(lambda: admin.list_alerts(status="active"), "an active alert")
        out = (await reader.run("alerts.py", **key)).splitlines()
        assert out[0].startswith("boiler-7 temp 85.0 critical ") and out[1:] == ["1 acknowledged"]
        assert len((await admin.list_alerts(status="acknowledged"))["data"]) == 1

        # 6. Webhooks: created, received and verified; forged or replayed deliveries refused.
        port = free_port()
        out = await reader.run("create_webhook.py", WEBHOOK_URL=f"http://127.0.0.1:{port}/telehub", **key)
        webhook_id, secret = (line.split(" ", 1)[1] for line in out.splitlines())
        assert webhook_id.startswith("whk_") and secret.startswith("whsec_")
        with reader.start("webhook_receiver.py", PORT=str(port), TELEHUB_WEBHOOK_SECRET=secret) as receiver:
            await eventually(lambda: _listening(port), "the receiver listening")
            done = await admin.create_command("boiler-7", "reboot", {"delay_s": 1})
            await receiver.wait_for_output("verified command.completed ")
            line = next(x for x in receiver.output().splitlines() if x.startswith("verified command.completed"))
            assert json.loads(line.split(" ", 3)[3])["command_id"] == done["command_id"]
            await _refused_forgeries(port, secret, receiver)
        attempts = (await admin.list_webhook_deliveries(webhook_id))["data"]
        assert any(a["outcome"] == "delivered" and a["status_code"] == 204 for a in attempts), attempts


async def eventually_async(fetch: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not (await fetch())["data"]:
        assert time.monotonic() < deadline, f"not within {WAIT:.0f} s: {what}"
        await asyncio.sleep(0.05)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _refused_forgeries(port: int, secret: str, receiver: Running) -> None:
    """A delivery signed with another secret, one without a signature, and a correctly signed one from 10
    minutes ago (a replay) are all refused with 400; a fresh, correctly signed one is taken."""
    body = json.dumps({"id": "evt_test", "type": "device.online", "created_at": "", "org_id": "", "data": {}}).encode()

    def signed(key: str, t: int) -> str:
        return f"t={t},v1={hmac.new(key.encode(), f'{t}.'.encode() + body, hashlib.sha256).hexdigest()}"

    now = int(time.time())
    async with httpx.AsyncClient(timeout=WAIT) as http:
        for signature, status in [
            (signed("whsec_other", now), 400),
            ("", 400),
            (signed(secret, now - 600), 400),
            (signed(secret, now), 204),
        ]:
            headers = {"Telehub-Signature": signature, "Telehub-Delivery": "dlv_test"}
            reply = await http.post(f"http://127.0.0.1:{port}/telehub", content=body, headers=headers)
            assert reply.status_code == status, (signature, reply.status_code)
    assert receiver.output().count("rejected: bad signature") == 3
