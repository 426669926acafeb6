"""docs/quickstart-browser.md kept working: each ``<!-- run: NAME -->`` block is served to the page as the module
``/quickstart/NAME`` (same origin, so under the hub's Content-Security-Policy like any page of the hub's) and
imported, in order, in Chromium, while ``boiler-7`` streams through the Python SDK. What each block logs to the
console must be what the page says it prints."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.async_api import Page, Route

from clients import DeviceClient, RestClient
from tests.processes import ServeProcess
from tests.web.conftest import WAIT, PageLog

PAGE = Path(__file__).resolve().parents[2] / "docs" / "quickstart-browser.md"
MARKED = re.compile(r"<!-- (run|shown): ([\w.-]+)[^>]*-->\n```(\w+)\n(.*?)\n```", re.S)
OPENING_FENCE = re.compile(r"^```(\w+)$", re.M)
DEVICE = "boiler-7"


def run_blocks() -> dict[str, str]:
    blocks: dict[str, str] = {}
    for mark in MARKED.finditer(PAGE.read_text()):
        assert mark[2] not in blocks, f"two blocks named {mark[2]}"
        if mark[1] == "run":
            blocks[mark[2]] = mark[4]
    return blocks


def test_every_code_block_is_marked() -> None:
    text = PAGE.read_text()
    fences = [lang for lang in OPENING_FENCE.findall(text) if lang in ("js", "html", "sh", "python")]
    marked = MARKED.findall(text)
    assert len(fences) == len(marked), "a code block without a run/shown marker"
    assert list(run_blocks()) == ["live.js", "resume.js", "command.js", "alerts.js"]


class Console:
    """The page's console lines, and a way to wait for one."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.lines: list[str] = []
        page.on("console", lambda message: self.lines.append(message.text))

    async def run(self, name: str) -> None:
        """Import block ``name`` (not waiting for it: a block may wait for the device)."""
        await self.page.evaluate(
            """name => {
                 import("/quickstart/" + name).then(
                   () => console.log("done " + name), (e) => console.log("failed " + name + ": " + e));
               }""",
            name,
        )

    async def wait_for(self, line: str) -> None:
        await eventually(lambda: line in self.lines, f"the page did not log {line!r}: {self.lines}")

    def telemetry(self, start: int) -> list[float]:
        """The temperatures of the ``telemetry`` lines logged from line ``start`` on."""
        prefix = f"telemetry {DEVICE} "
        return [json.loads(line[len(prefix) :])["temp"] for line in self.lines[start:] if line.startswith(prefix)]


async def eventually(condition: Callable[[], bool], message: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{message} (waited {WAIT:.0f} s)")
        await asyncio.sleep(0.02)


async def send_temps(device: DeviceClient, temps: list[float]) -> None:
    for temp in temps:
        await device.send({"temp": temp})
    await device.flush()


async def test_every_block_runs_in_the_browser_as_the_page_says(
    web_hub: ServeProcess, rest: RestClient, page: tuple[Page, PageLog], tmp_path: Path
) -> None:
    browser_page, log = page
    blocks = run_blocks()

    async def serve_block(route: Route) -> None:
        name = route.request.url.rsplit("/", 1)[1]
        await route.fulfill(status=200, content_type="text/javascript", body=blocks[name])

    await browser_page.route("**/quickstart/*.js", serve_block)
    await rest.create_device(id=DEVICE, name="Boiler 7", type="boiler")
    device = DeviceClient(web_hub.url, await rest.rotate_device_key(DEVICE), state_path=tmp_path / "seq.json")
    results: list[dict[str, Any]] = []

    @device.command("reboot")
    async def reboot(params: dict[str, Any]) -> dict[str, Any]:
        results.append(params)
        return {"rebooting_in_s": params["delay_s"]}

    async with device:
        await send_temps(device, [21.0, 21.5, 22.0, 22.5, 23.0, 23.5])
        await browser_page.goto(web_hub.url + "/")
        console = Console(browser_page)

        await console.run("live.js")
        await console.wait_for("done live.js")
        assert "logged in as admin@example.com (admin)" in console.lines
        assert f"devices: {DEVICE} online" in console.lines
        assert [line for line in console.lines if line.startswith("hub:")] == [
            "hub: connecting",
            "hub: open",
            "hub: closed",
        ]
        assert console.telemetry(0) == [21.5, 22.0, 22.5, 23.0, 23.5], "the newest five, oldest first"

        # While no page is subscribed the device goes on; resume.js gets exactly what it missed, then live.
        await send_temps(device, [24.0, 24.5])
        start = len(console.lines)
        await console.run("resume.js")
        await console.wait_for("resumed: true")
        await eventually(lambda: len(console.telemetry(start)) >= 2, "resume.js did not replay what it missed")
        await send_temps(device, [25.0])
        await eventually(lambda: len(console.telemetry(start)) >= 3, "resume.js did not go on live")
        assert console.telemetry(start) == [24.0, 24.5, 25.0]

        start = len(console.lines)
        await console.run("command.js")
        await console.wait_for("done command.js")
        statuses = [line for line in console.lines[start:] if line.startswith("command reboot")]
        assert statuses[-1] == 'command reboot completed {"rebooting_in_s":5}', statuses
        assert results == [{"delay_s": 5}]
        assert "refused: 404 not_found" in console.lines

        start = len(console.lines)
        await console.run("alerts.js")
        # The block subscribes, then makes its rule: the device crosses it once the rule is there.
        deadline = asyncio.get_running_loop().time() + WAIT
        while not (await rest.list_alert_rules())["data"]:
            assert asyncio.get_running_loop().time() < deadline, f"alerts.js made no rule: {console.lines}"
            await asyncio.sleep(0.05)
        await send_temps(device, [97.5])
        await console.wait_for("done alerts.js")
        assert console.lines[start:].count("alert.triggered boiler-7 temp 97.5 active") == 1
        assert "acknowledged: acknowledged" in console.lines[start:]
        assert "still active: 0" in console.lines[start:]
        assert (await rest.list_alert_rules())["data"] == [], "the block deleted its rule"

    assert not [line for line in console.lines if line.startswith("failed")], console.lines
    # Chromium logs the one refused request, command.js's 404 on purpose; nothing else.
    assert log.errors == ["Failed to load resource: the server responded with a status of 404 (Not Found)"]
