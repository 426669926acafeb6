"""The web dashboard and the JavaScript client in Debian's Chromium, driven by Playwright's async API, against a
live ``telehub serve`` (embedded Redis, bootstrap admin). Chromium is launched from /usr/bin/chromium (see
scripts/install-browser) with the flags that keep it off the network; Playwright never downloads a browser.
Every wait is a multiple of TIMEOUT."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from clients import RestClient
from tests.conftest import TIMEOUT
from tests.processes import ServeProcess, admin_hub_env, serve

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "change-me-now"
CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing of Chromium's own traffic (the network is closed here: it would flood it with retries).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT = 10 * TIMEOUT
WAIT_MS = WAIT * 1000
# Screenshots and other files a person may want to look at after a run (git-ignored).
ARTIFACTS = Path(os.environ.get("TELEHUB_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
_devices = itertools.count(1)


def web_env() -> dict[str, str]:
    return admin_hub_env("web-tests-secret", ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def web_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One server per test module (tests make their own devices, so they do not meet)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-browser (scripts/test does)")
    with serve(data_dir=tmp_path_factory.mktemp("web-hub") / "data", env=web_env()) as process:
        yield process


@pytest.fixture(scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrowserContext]:
    """Debian's Chromium with a fresh profile, for the module's tests (each opens its own page)."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            await context.close()


@dataclass
class PageLog:
    """What a page reported: console errors (CSP refusals among them) and uncaught exceptions."""

    errors: list[str]


@pytest.fixture
async def page(browser: BrowserContext) -> AsyncIterator[tuple[Page, PageLog]]:
    opened = await browser.new_page()
    log = PageLog(errors=[])
    opened.on("console", lambda message: log.errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: log.errors.append(f"uncaught: {error}"))
    opened.set_default_timeout(WAIT_MS)
    try:
        yield opened, log
    finally:
        await opened.close()


@pytest.fixture
async def rest(web_hub: ServeProcess) -> AsyncIterator[RestClient]:
    async with RestClient(web_hub.url, timeout=WAIT) as client:
        await client.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        yield client


@dataclass(frozen=True)
class NewDevice:
    id: str
    key: str


async def new_device(rest: RestClient, prefix: str, name: str | None = None) -> NewDevice:
    device_id = f"{prefix}-{next(_devices)}"
    await rest.create_device(id=device_id, name=name or device_id, type="boiler")
    return NewDevice(device_id, await rest.rotate_device_key(device_id))
