"""The SDK against live ``telehub serve`` processes: each with its embedded Redis in a fresh data directory and
the bootstrap admin, reached over real sockets by the SDK's own clients. Every wait is a multiple of TIMEOUT."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients import RestClient, Subscription
from tests.conftest import TIMEOUT
from tests.processes import ServeProcess, admin_hub_env, serve

ADMIN_EMAIL = "sdk-admin@example.com"
ADMIN_PASSWORD = "correct-horse-battery"
WAIT = 10 * TIMEOUT
_devices = itertools.count(1)


def hub_env() -> dict[str, str]:
    # Webhooks to loopback (nothing listens there: the SDK tests only manage them).
    return admin_hub_env("sdk-tests-secret", ADMIN_EMAIL, ADMIN_PASSWORD, TELEHUB_WEBHOOK_ALLOW_PRIVATE="1")


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One server for a test module (tests make their own devices, so they do not meet)."""
    with serve(data_dir=tmp_path_factory.mktemp("sdk-hub") / "data", env=hub_env()) as process:
        yield process


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServeProcess]:
    """A server of the test's own, which it may kill and start again (``restart``)."""
    with serve(data_dir=tmp_path / "data", env=hub_env()) as process:
        yield process


def restart(process: ServeProcess) -> None:
    """Start a stopped server again on the port it had, so clients reconnect to the URL they know (a later
    ``--port`` wins over the free one ``ServeProcess.start`` picks)."""
    port = process.port
    process.args = [*process.args, "--port", str(port)]
    process.start()
    process.port = port
    process.wait_healthy()


@contextlib.asynccontextmanager
async def admin_rest(process: ServeProcess) -> AsyncIterator[RestClient]:
    """A RestClient logged in as the bootstrap admin."""
    async with RestClient(process.url, timeout=WAIT) as client:
        await client.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        yield client


@pytest.fixture
async def rest(hub_server: ServeProcess) -> AsyncIterator[RestClient]:
    async with admin_rest(hub_server) as client:
        yield client


async def numbers_by_device(subscription: Subscription, into: dict[str, list[float]], total: int) -> None:
    """Each device's ``n`` values from a telemetry subscription, until ``total`` messages arrived."""
    count = 0
    async for message in subscription:
        into.setdefault(message.channel.split("/")[1], []).append(float(message.data["metrics"]["n"]))
        count += 1
        if count == total:
            return


async def eventually(condition: Callable[[], bool], message: str, within_s: float = WAIT) -> None:
    """Wait (polling, bounded) until ``condition`` holds."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{message} (waited {within_s:.0f} s)")
        await asyncio.sleep(0.02)


@dataclass(frozen=True)
class NewDevice:
    id: str
    key: str


async def new_device(rest: RestClient, prefix: str = "sdk") -> NewDevice:
    """A device with a fresh id and its key."""
    device_id = f"{prefix}-{next(_devices)}"
    await rest.create_device(id=device_id, name=device_id, type="sensor")
    return NewDevice(device_id, await rest.rotate_device_key(device_id))


async def stored_seqs(rest: RestClient, device_id: str) -> list[int]:
    """The seq of every frame stored for the device, oldest first, read over REST (every page)."""
    return [message["seq"] async for message in rest.iter_messages(device_id) if message["seq"] is not None]
