"""``telehub tail`` against a live ``telehub serve``: JSON lines of exactly the frames a device streams, ``--last``
replaying what was sent before, the pretty format with wildcards, and clear errors for a bad token or channel."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from clients import Backoff, DeviceClient
from tests.cli_support import background, new_api_key
from tests.clients.conftest import NewDevice, admin_rest, eventually, hub_env, new_device, restart
from tests.conftest import TIMEOUT
from tests.processes import ServeProcess, run_telehub, serve, telehub_env

PRETTY = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}  devices/(?P<device>[\w.-]+)/telemetry  n=(?P<n>\d+) temp=21\.5$")
TAIL_TIMEOUT = 20 * TIMEOUT


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with serve(data_dir=tmp_path_factory.mktemp("tail-hub") / "data", env=hub_env()) as process:
        yield process


@pytest.fixture(scope="module")
async def viewer_key(hub: ServeProcess) -> str:
    return await new_api_key(hub, "viewer")


async def device_for(hub: ServeProcess, prefix: str) -> NewDevice:
    async with admin_rest(hub) as rest:
        return await new_device(rest, prefix)


def tail(hub: ServeProcess, *args: str, token: str | None) -> tuple[int, str, str]:
    env = telehub_env(TELEHUB_TOKEN=token) if token else telehub_env()
    result = run_telehub("tail", *args, "--url", hub.url, env=env, timeout=TAIL_TIMEOUT)
    return result.returncode, result.stdout, result.stderr


@contextlib.asynccontextmanager
async def streaming(hub: ServeProcess, device: NewDevice) -> AsyncIterator[list[int]]:
    """The device sends ``{"n": 1, 2, ...}`` every 20 ms while the block runs; the list holds what was acked."""
    acked: list[int] = []
    async with DeviceClient(hub.url, device.key, backoff=Backoff(initial_s=0.05, maximum_s=0.5)) as client:

        async def send() -> None:
            for n in range(1, 100_000):
                future = await client.send({"n": n, "temp": 21.5})
                future.add_done_callback(lambda f, n=n: acked.append(n) if not f.exception() else None)
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(send())
        try:
            yield acked
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender


async def test_json_lines_are_the_frames_a_device_streams_in_order(hub: ServeProcess, viewer_key: str) -> None:
    device = await device_for(hub, "tail-json")
    channel = f"devices/{device.id}/telemetry"
    async with streaming(hub, device) as acked:
        code, out, err = await asyncio.to_thread(tail, hub, channel, "--json", "--count", "5", token=viewer_key)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 5, out
    messages = [orjson.loads(line) for line in lines]
    assert all(set(m) == {"channel", "offset", "epoch", "data", "gap_before"} for m in messages)
    assert all(m["channel"] == channel and m["data"]["device_id"] == device.id for m in messages)
    assert all(m["gap_before"] is False for m in messages)
    sent = [int(m["data"]["metrics"]["n"]) for m in messages]
    assert sent == list(range(sent[0], sent[0] + 5)), sent  # live, in order, nothing missed or repeated
    assert set(sent) <= set(acked)  # and each of them stored
    offsets = [tuple(int(part) for part in m["offset"].split("-")) for m in messages]
    assert offsets == sorted(set(offsets))


async def test_after_the_hub_restarts_tail_says_so_and_resumes_with_nothing_missed_or_repeated(
    tmp_path: Path,
) -> None:
    with serve(data_dir=tmp_path / "data", env=hub_env()) as hub:
        token = await new_api_key(hub, "viewer")
        device = await device_for(hub, "tail-resume")
        args = ("tail", f"devices/{device.id}/telemetry", "--json", "--count", "150", "--url", hub.url)
        with background(*args, "--token", token, env=telehub_env(), directory=tmp_path) as tail_process:
            async with streaming(hub, device):
                await eventually(lambda: tail_process.stdout.count("\n") >= 10, "tail printed nothing")
                hub.stop()
                restart(hub)
                code = await asyncio.to_thread(tail_process.wait, TAIL_TIMEOUT)
            out, err = tail_process.stdout, tail_process.stderr
    assert code == 0, err
    assert "-- connection lost" in err and "-- reconnected; resuming where it stopped" in err, err
    sent = [int(orjson.loads(line)["data"]["metrics"]["n"]) for line in out.splitlines()]
    assert sent == list(range(sent[0], sent[0] + 150)), sent


async def test_last_replays_what_was_sent_before_and_pretty_lines_show_time_channel_and_metrics(
    hub: ServeProcess, viewer_key: str
) -> None:
    device = await device_for(hub, "tail-last")
    async with DeviceClient(hub.url, device.key) as client:
        for n in range(1, 6):
            await client.send({"n": n, "temp": 21.5})
        await client.flush()
    started = time.monotonic()
    code, out, err = await asyncio.to_thread(
        tail, hub, "devices/+/telemetry", "--last", "3", "--count", "3", token=viewer_key
    )
    assert code == 0, err
    assert time.monotonic() - started < TAIL_TIMEOUT
    lines = [PRETTY.match(line) for line in out.splitlines()]
    assert all(lines) and len(lines) == 3, out
    assert [(m["device"], int(m["n"])) for m in lines if m] == [(device.id, 3), (device.id, 4), (device.id, 5)]


async def test_a_bad_token_or_channel_is_a_clear_error(hub: ServeProcess, viewer_key: str) -> None:
    code, out, err = await asyncio.to_thread(tail, hub, "alerts", token=None)
    assert code == 2 and "needs a token" in err and "--token" in err and "TELEHUB_TOKEN" in err, err
    code, out, err = await asyncio.to_thread(tail, hub, "alerts", token="sk_live_not-a-key")
    assert code == 1 and "refused the token (401 unauthenticated" in err and "check --token" in err, err
    assert out == ""
    code, out, err = await asyncio.to_thread(tail, hub, "devices/x/temperature", token=viewer_key)
    assert code == 1 and "cannot subscribe to 'devices/x/temperature'" in err and "invalid_channel" in err, err
    assert "devices/{id}/telemetry" in err  # the channels there are
    device = await device_for(hub, "tail-key")
    code, out, err = await asyncio.to_thread(tail, hub, "alerts", token=device.key)
    assert code == 1 and "a device key cannot subscribe" in err, err
