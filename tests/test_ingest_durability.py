"""Exactly-once and never-lost, against real processes: SIGKILL mid-stream, Redis restarted, Redis paused,
and a graceful shutdown that acks what it stored before closing with 1012."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import msgpack
import pytest
import websockets

from hub.embedded_redis import EmbeddedRedis
from hub.redis_client import open_sync_client
from ingest import stream_keys
from tests.conftest import TIMEOUT
from tests.processes import ServeProcess, serve, telehub_env

PASSWORD = "correct-horse-battery"
ADMIN = "admin@durability.example"


def frame(seq: int) -> bytes:
    return msgpack.packb({"type": "telemetry", "seq": seq, "metrics": {"temp": float(seq), "hum": 40.0}})


def hub_env(redis_url: str) -> dict[str, str]:
    return telehub_env(
        TELEHUB_REDIS_URL=redis_url,
        TELEHUB_BOOTSTRAP_EMAIL=ADMIN,
        TELEHUB_BOOTSTRAP_PASSWORD=PASSWORD,
        TELEHUB_SECRET="durability-" + "s" * 40,
        TELEHUB_RATE_LIMIT_BURST="100000",
        TELEHUB_RATE_LIMIT_PER_MINUTE="1000000",
    )


def provision_device(hub: ServeProcess) -> tuple[str, str]:
    """(org id, device key) of a new device, made over REST."""
    with httpx.Client(base_url=hub.url + "/api/v1", timeout=10 * TIMEOUT) as http:
        login = http.post("/auth/login", json={"email": ADMIN, "password": PASSWORD}).json()
        auth = {"Authorization": f"Bearer {login['token']}"}
        http.post("/devices", json={"id": "meter-1", "name": "meter", "type": "meter"}, headers=auth)
        key = http.post("/devices/meter-1/keys", headers=auth).json()["device_key"]
        return login["user"]["org_id"], key


def stored_seqs(redis_url: str, org_id: str) -> list[int]:
    with open_sync_client(redis_url) as client:
        entries = client.xrange(stream_keys.device_frames(org_id, "meter-1"))
    return [int(fields[b"s"]) for _, fields in entries]


class Device:
    """A device that streams numbered frames and remembers the highest cumulative ack."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.acked = 0
        self.close_code: int | None = None

    @contextlib.asynccontextmanager
    async def connect(self, hub: ServeProcess) -> Any:
        url = hub.url.replace("http://", "ws://") + "/api/v1/ws/device"
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {self.key}"}, subprotocols=["telehub.v1"]
        ) as ws:
            hello = msgpack.unpackb(await ws.recv())
            assert hello["type"] == "hello"
            assert hello["last_seq"] >= self.acked
            yield ws

    async def read_acks(self, ws: Any) -> None:
        try:
            async for message in ws:
                reply = msgpack.unpackb(message)
                assert reply["type"] == "ack", reply
                self.acked = max(self.acked, reply["seq"])
        except websockets.ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd else None
        else:
            self.close_code = ws.close_code

    async def send_all(self, hub: ServeProcess, last: int) -> None:
        """Send every frame after the last acked one until ``last`` is acked (resending is the device's job)."""
        async with self.connect(hub) as ws:
            reader = asyncio.create_task(self.read_acks(ws))
            for seq in range(self.acked + 1, last + 1):
                await ws.send(frame(seq))
            await wait_until(lambda: self.acked >= last, "every frame acked")
            reader.cancel()


async def wait_until(condition: Any, what: str, within: float = 30 * TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "hub"


async def test_sigkill_mid_stream_then_resend_stores_every_frame_once(redis_url: str, data_dir: Path) -> None:
    total = 3000
    with serve(data_dir=data_dir, env=hub_env(redis_url)) as hub:
        org_id, key = provision_device(hub)
        device = Device(key)
        async with device.connect(hub) as ws:
            reader = asyncio.create_task(device.read_acks(ws))
            for seq in range(1, total + 1):
                await ws.send(frame(seq))
                if seq == total // 2:
                    await wait_until(lambda: device.acked > 0, "a first ack")
                    hub.send(signal.SIGKILL)
                    break
            await asyncio.wait_for(reader, 10 * TIMEOUT)
        assert 0 < device.acked < total
        hub.wait()
        hub.start()
        hub.wait_healthy()
        # The device resends from its last ack: frames stored but not acked come again and must not double.
        await device.send_all(hub, total)
    assert stored_seqs(redis_url, org_id) == list(range(1, total + 1))


async def test_redis_restarted_mid_stream_loses_and_doubles_nothing(tmp_path: Path, data_dir: Path) -> None:
    total = 3000
    store = EmbeddedRedis(tmp_path / "redis", fsync="always")
    store.start()
    try:
        with serve(data_dir=data_dir, env=hub_env(store.url)) as hub:
            org_id, key = provision_device(hub)
            device = Device(key)
            async with device.connect(hub) as ws:
                reader = asyncio.create_task(device.read_acks(ws))
                for seq in range(1, total // 2 + 1):
                    await ws.send(frame(seq))
                await wait_until(lambda: device.acked > 0, "a first ack")
                port, password = int(store.url.rsplit(":", 1)[1].split("/")[0]), _password(store.url)
                store.stop()
                for seq in range(total // 2 + 1, total + 1):
                    await ws.send(frame(seq))
                await asyncio.sleep(0.5)
                # Redis down: unhealthy (503), the ingest loop degraded and retrying, its frames kept.
                down = await asyncio.to_thread(health, hub)
                assert (down[0], down[1]["status"]) == (503, "unhealthy"), down
                assert down[1]["checks"]["redis"]["status"] == "unhealthy"
                assert down[1]["checks"]["ingest"]["status"] == "degraded", down
                assert down[1]["checks"]["ingest"]["retrying"] and down[1]["checks"]["ingest"]["frames_waiting"] > 0
                store = EmbeddedRedis(tmp_path / "redis", fsync="always", port=port, password=password)
                store.start()
                await wait_until(lambda: device.acked >= total, "every frame acked after Redis came back")
                reader.cancel()
                up = await asyncio.to_thread(health, hub)
                assert (up[0], up[1]["status"]) == (200, "healthy"), up
                assert up[1]["checks"]["ingest"] == {
                    "status": "healthy",
                    "frames_waiting": 0,
                    "reading": True,
                    "retrying": False,
                }
        assert stored_seqs(store.url, org_id) == list(range(1, total + 1))
    finally:
        store.stop()


def health(hub: ServeProcess) -> tuple[int, dict[str, Any]]:
    with hub.client() as http:
        response = http.get("/health")
    return response.status_code, response.json()


def _password(url: str) -> str:
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(url).password or "")


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_paused_redis_stops_reading_and_everything_lands_after(tmp_path: Path, data_dir: Path) -> None:
    store = EmbeddedRedis(tmp_path / "redis")
    store.start()
    try:
        with serve(data_dir=data_dir, env=hub_env(store.url)) as hub:
            org_id, key = provision_device(hub)
            device = Device(key)
            async with device.connect(hub) as ws:
                reader = asyncio.create_task(device.read_acks(ws))
                await ws.send(frame(1))
                await wait_until(lambda: device.acked == 1, "the first ack")
                before = rss_kib(hub.pid)
                sent = 1
                blocked = False
                with paused(store.pid):
                    # Send until the server stops reading and the socket buffers fill: send() then blocks.
                    while sent < 300_000:
                        try:
                            await asyncio.wait_for(ws.send(frame(sent + 1)), 1.0)
                        except TimeoutError:
                            # The frame was handed to the transport; only the wait for room timed out.
                            sent += 1
                            blocked = True
                            break
                        sent += 1
                    grown = rss_kib(hub.pid) - before
                    acked_while_paused = device.acked
                assert blocked, "the server kept reading while Redis was paused"
                assert acked_while_paused == 1
                assert grown < 64 * 1024, f"server memory grew {grown} KiB while Redis was paused"
                await wait_until(lambda: device.acked >= sent, "every frame acked after Redis resumed")
                reader.cancel()
        assert stored_seqs(store.url, org_id) == list(range(1, sent + 1))
    finally:
        store.stop()


async def test_shutdown_acks_what_it_stored_then_closes_1012(redis_url: str, data_dir: Path) -> None:
    with serve(data_dir=data_dir, env=hub_env(redis_url)) as hub:
        org_id, key = provision_device(hub)
        device = Device(key)
        async with device.connect(hub) as ws:
            reader = asyncio.create_task(device.read_acks(ws))
            for seq in range(1, 2001):
                await ws.send(frame(seq))
                if seq == 1000:
                    hub.send(signal.SIGTERM)
            await asyncio.wait_for(reader, 15 * TIMEOUT)
        assert hub.wait() == 0
    assert device.close_code == 1012
    stored = stored_seqs(redis_url, org_id)
    # Nothing is stored that the device was not told about, and nothing it was told about is missing.
    assert stored == list(range(1, device.acked + 1))


async def test_two_processes_behave_as_one(redis_url: str, tmp_path: Path) -> None:
    env = hub_env(redis_url)
    with serve(data_dir=tmp_path / "a", env=env) as hub_a, serve(data_dir=tmp_path / "b", env=env) as hub_b:
        org_id, key = provision_device(hub_a)
        device = Device(key)
        async with device.connect(hub_a) as on_a:
            reader_a = asyncio.create_task(device.read_acks(on_a))
            for seq in range(1, 501):
                await on_a.send(frame(seq))
            await wait_until(lambda: device.acked == 500, "acks from A")
            # The same device on B: A closes its connection with 4003 wherever it is.
            async with device.connect(hub_b) as on_b:
                await asyncio.wait_for(reader_a, 10 * TIMEOUT)
                assert device.close_code == 4003
                reader_b = asyncio.create_task(device.read_acks(on_b))
                for seq in range(450, 1001):  # overlapping resend: duplicates are acked, not stored
                    await on_b.send(frame(seq))
                await wait_until(lambda: device.acked == 1000, "acks from B")
                with httpx.Client(base_url=hub_a.url + "/api/v1", timeout=10 * TIMEOUT) as http:
                    login = http.post("/auth/login", json={"email": ADMIN, "password": PASSWORD}).json()
                    record = http.get("/devices/meter-1", headers={"Authorization": f"Bearer {login['token']}"})
                    assert record.json()["status"] == "online"
                reader_b.cancel()
    assert stored_seqs(redis_url, org_id) == list(range(1, 1001))
