"""The web dashboard end to end: a person logs in at ``/`` and sees a device streaming through the Python SDK come
online, its chart and latest values move, a command's result arrive, an alert trigger (and acknowledges it), and
the device go offline; a screenshot is kept. The page must log no console error (a CSP refusal is one)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from clients import DeviceClient, RestClient
from tests.processes import ServeProcess
from tests.web.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, ARTIFACTS, WAIT_MS, PageLog, new_device

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALERT_THRESHOLD = 100.0


@contextlib.asynccontextmanager
async def streaming(device: DeviceClient, hot: asyncio.Event) -> AsyncIterator[None]:
    """The device sends a sample every 100 ms: temperatures around 20, above the alert threshold once ``hot``."""

    async def produce() -> None:
        for n in itertools.count():
            temp = ALERT_THRESHOLD + 50 + n if hot.is_set() else 20.0 + (n % 50) / 10
            await device.send({"temp": temp, "hum": 40.0 + n % 7})
            await asyncio.sleep(0.1)

    task = asyncio.create_task(produce())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def log_in(page: Page, hub: ServeProcess) -> None:
    await page.goto(hub.url + "/")
    await expect(page.locator("#login-view")).to_be_visible()
    await page.fill("#login-form input[name=email]", ADMIN_EMAIL)
    await page.fill("#login-form input[name=password]", ADMIN_PASSWORD)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#dashboard-view")).to_be_visible()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")


async def chart_points(page: Page, selector: str) -> int:
    return int(await page.get_attribute(selector, "data-points") or 0)


async def test_the_dashboard_shows_a_live_device_runs_a_command_and_acknowledges_an_alert(
    web_hub: ServeProcess, rest: RestClient, page: tuple[Page, PageLog], tmp_path: Path
) -> None:
    browser_page, log = page
    device = await new_device(rest, "boiler", name="Boiler house 7")
    rule = await rest.create_alert_rule(
        name="boiler too hot", metric="temp", op="gt", threshold=ALERT_THRESHOLD, severity="major", device_id=device.id
    )
    client = DeviceClient(web_hub.url, device.key, state_path=tmp_path / "seq.json")
    reboots: list[dict[str, Any]] = []

    @client.command("reboot")
    async def reboot(params: dict[str, Any]) -> dict[str, Any]:
        reboots.append(params)
        return {"rebooted": True, "delay_s": params.get("delay_s")}

    hot = asyncio.Event()
    async with client, streaming(client, hot):
        await client.wait_connected()
        await log_in(browser_page, web_hub)
        session = await browser_page.evaluate("sessionStorage.getItem('telehub.session')")
        assert session is not None and '"token"' in session, "the JWT is kept in sessionStorage"

        # The device list: the device, online.
        row = browser_page.locator(f'li[data-device-id="{device.id}"]')
        await expect(row).to_have_attribute("data-status", "online")
        await expect(row).to_contain_text("Boiler house 7")

        # Its panel: the raw telemetry chart grows and the latest value changes, live.
        await row.locator("button").click()
        await expect(browser_page.locator("#device-detail")).to_have_attribute("data-device-id", device.id)
        chart = "#telemetry-chart"
        await browser_page.wait_for_function(
            "s => Number(document.querySelector(s).dataset.points) > 0", arg=chart, timeout=WAIT_MS
        )
        first_points = await chart_points(browser_page, chart)
        assert await browser_page.locator(f"{chart} canvas").count() == 1, "uPlot drew the chart"
        latest = browser_page.locator('#latest [data-metric="temp"]')
        first_value = await latest.get_attribute("data-value")
        await browser_page.wait_for_function(
            "([s, n]) => Number(document.querySelector(s).dataset.points) >= n + 5", arg=[chart, first_points]
        )
        await expect(latest).not_to_have_attribute("data-value", first_value or "")
        assert set((await browser_page.get_attribute(chart, "data-metrics") or "").split(",")) == {"temp", "hum"}
        # The 1-minute aggregates chart has its history from REST (the current minute's window at least).
        await browser_page.wait_for_function(
            "s => Number(document.querySelector(s).dataset.points) >= 1", arg="#aggregate-chart"
        )

        # The command console: sent from the page, run by the device, its result shown as it arrives.
        await browser_page.fill("#command-form input[name=command]", "reboot")
        await browser_page.fill("#command-form input[name=params]", '{"delay_s": 3}')
        await browser_page.click("#command-form button[type=submit]")
        command_row = browser_page.locator("#command-rows tr").first
        await expect(command_row).to_have_attribute("data-status", "completed")
        await expect(command_row.locator(".command-result")).to_have_text('{"rebooted":true,"delay_s":3}')
        assert reboots == [{"delay_s": 3}]

        # An alert: the device crosses the rule's threshold; the alert appears live and is acknowledged here.
        hot.set()
        alert_row = browser_page.locator("#alert-list li.alert").first
        await expect(alert_row).to_have_attribute("data-status", "active")
        await expect(alert_row).to_contain_text(f"{device.id} · temp")
        await expect(browser_page.locator("#alert-count")).to_have_text("1 active")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await browser_page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)
        await alert_row.locator("button.ack").click()
        await expect(alert_row).to_have_attribute("data-status", "acknowledged")
        alerts = await rest.list_alerts()
        assert [(a["rule_id"], a["status"]) for a in alerts["data"]] == [(rule["id"], "acknowledged")]

    # The device disconnected: the list says so without a reload.
    await expect(browser_page.locator(f'li[data-device-id="{device.id}"]')).to_have_attribute("data-status", "offline")

    # A reload keeps the session (sessionStorage) and the selected device (the URL).
    await browser_page.reload()
    await expect(browser_page.locator("#dashboard-view")).to_be_visible()
    await expect(browser_page.locator("#device-detail")).to_have_attribute("data-device-id", device.id)
    await expect(browser_page.locator("#login-view")).to_be_hidden()

    assert log.errors == [], f"the page logged errors: {log.errors}"
    screenshot = (ARTIFACTS / "dashboard.png").read_bytes()
    assert screenshot.startswith(PNG_SIGNATURE) and len(screenshot) > 10_000, "a real PNG screenshot"


async def test_wrong_credentials_are_refused_on_the_login_form(
    web_hub: ServeProcess, page: tuple[Page, PageLog]
) -> None:
    browser_page, _ = page
    await browser_page.goto(web_hub.url + "/")
    await browser_page.fill("#login-form input[name=email]", ADMIN_EMAIL)
    await browser_page.fill("#login-form input[name=password]", "not-the-password")
    await browser_page.click("#login-form button[type=submit]")
    await expect(browser_page.locator("#login-error")).to_have_text("Wrong email or password.")
    await expect(browser_page.locator("#dashboard-view")).to_be_hidden()
    assert await browser_page.evaluate("sessionStorage.getItem('telehub.session')") is None


async def test_logging_out_forgets_the_token(web_hub: ServeProcess, page: tuple[Page, PageLog]) -> None:
    browser_page, log = page
    await log_in(browser_page, web_hub)
    await browser_page.click("#logout")
    await expect(browser_page.locator("#login-view")).to_be_visible()
    assert await browser_page.evaluate("sessionStorage.getItem('telehub.session')") is None
    await browser_page.reload()
    await expect(browser_page.locator("#login-view")).to_be_visible()
    assert log.errors == [], f"the page logged errors: {log.errors}"
