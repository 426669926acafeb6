"""Faults under load (marked ``fault``): one of two ``telehub serve --workers 2`` processes SIGKILLed while eight
SDK devices stream; the devices it held reconnect to the other (the listening socket is shared), resend what
was not acked, and every frame is stored exactly once, counted in Redis (over REST) against what was sent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from clients import Backoff, DeviceClient
from tests.clients.conftest import WAIT, admin_rest, eventually, hub_env, new_device, stored_seqs
from tests.processes import serve

pytestmark = pytest.mark.fault

DEVICES = 8
FRAMES = 400
NOW_MS = int(time.time() * 1000)


def workers(pids: list[int]) -> list[int]:
    """The uvicorn worker processes among a server's descendants (spawned by multiprocessing)."""
    found = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections of ``pid`` on local ``port`` (from /proc: its socket inodes, /proc/net/tcp*)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


async def test_sigkill_of_one_of_two_workers_under_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    with serve(data_dir=tmp_path / "data", env=hub_env(), args=["--workers", "2"]) as hub:
        async with admin_rest(hub) as rest:
            devices = [await new_device(rest, "fault") for _ in range(DEVICES)]
        clients = [
            DeviceClient(
                hub.url,
                device.key,
                state_path=tmp_path / f"seq-{number}.json",
                window=32,
                backoff=Backoff(initial_s=0.05, maximum_s=0.5),
            )
            for number, device in enumerate(devices)
        ]
        killed = asyncio.Event()

        async def produce(client: DeviceClient) -> None:
            for n in range(1, FRAMES + 1):
                await client.send({"n": n}, ts=NOW_MS + n)
                if n % 10 == 0:
                    await asyncio.sleep(0.01)  # a steady stream, so the kill lands mid-stream
                if n == FRAMES // 2:
                    await killed.wait()

        async with contextlib.AsyncExitStack() as stack:
            for client in clients:
                await stack.enter_async_context(client)
            producers = [asyncio.create_task(produce(client)) for client in clients]
            await eventually(lambda: all(c.acked_seq >= FRAMES // 4 for c in clients), "the devices are not acked")
            # Kill the worker holding the most device connections, so devices surely have to move.
            pair = workers(hub.remember_family())
            assert len(pair) == 2, f"expected two workers, found {pair}"
            held = {pid: connections_to(pid, hub.port) for pid in pair}
            victim = max(held, key=held.__getitem__)
            assert held[victim] > 0, held
            os.kill(victim, signal.SIGKILL)
            killed.set()
            await asyncio.wait_for(asyncio.gather(*producers), WAIT)
            for client in clients:
                await asyncio.wait_for(client.flush(), WAIT)
            assert all(client.acked_seq == FRAMES for client in clients)
            moved = [client for client in clients if client.connections >= 2]
            assert len(moved) >= held[victim], (held, [c.connections for c in clients])
            with hub.client() as http:
                assert http.get("/health").status_code == 200

        async with admin_rest(hub) as rest:
            for device in devices:
                seqs = await stored_seqs(rest, device.id)
                values = [row["value"] async for row in rest.iter_readings(device.id, metric=["n"])]
                assert seqs == list(range(1, FRAMES + 1)), f"{device.id}: every seq stored once, in order"
                doubled = [n for n, count in Counter(values).items() if count > 1]
                assert sorted(values) == [float(n) for n in range(1, FRAMES + 1)], f"{device.id} doubled {doubled}"
