"""Aggregates against real processes: after a SIGKILL mid-stream, a restart and the device's resend, every
window equals aggregating the raw samples once (the open windows are rebuilt from the raw frames)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import msgpack

from hub.clock import parse_time_ms
from hub.redis_client import open_sync_client
from tests.aggregate_truth import RESOLUTIONS, Windows, assert_same, stored, truth
from tests.conftest import TIMEOUT
from tests.processes import ServeProcess, serve
from tests.test_ingest_durability import ADMIN, PASSWORD, Device, hub_env, provision_device, stored_seqs, wait_until


def sample_frame(t0: int, seq: int) -> bytes:
    return msgpack.packb(
        {"type": "telemetry", "seq": seq, "ts": t0 + seq * 3, "metrics": {"temp": float(seq % 17), "hum": 0.5 * seq}}
    )


def all_samples(t0: int, total: int) -> list[tuple[int, str, float]]:
    samples = []
    for seq in range(1, total + 1):
        body = msgpack.unpackb(sample_frame(t0, seq))
        samples += [(body["ts"], name, value) for name, value in body["metrics"].items()]
    return samples


class TimedDevice(Device):
    """Frames with sample times from ``t0`` (3 ms apart), so windows do not depend on the server's clock."""

    def __init__(self, key: str, t0: int) -> None:
        super().__init__(key)
        self.t0 = t0

    async def send_range(self, ws: object, first: int, last: int) -> None:
        for seq in range(first, last + 1):
            await ws.send(sample_frame(self.t0, seq))  # type: ignore[attr-defined]


def windows(redis_url: str, org_id: str) -> dict[str, Windows]:
    with open_sync_client(redis_url, decode_responses=True) as client:
        return {label: stored(client, org_id, "meter-1", label) for label in RESOLUTIONS}


def counts(by_label: dict[str, Windows]) -> dict[str, dict[tuple[int, str], int]]:
    return {label: {key: value[0] for key, value in found.items()} for label, found in by_label.items()}


async def test_sigkill_then_restart_and_resend_keeps_every_window_equal_to_the_raw_truth(
    redis_url: str, tmp_path: Path
) -> None:
    total = 3000
    env = {**hub_env(redis_url), "TELEHUB_AGGREGATE_IDLE_TIMEOUT_MS": "500"}
    with serve(data_dir=tmp_path / "hub", env=env) as hub:
        org_id, key = provision_device(hub)
        t0 = int(time.time() * 1000) - 2_000
        device = TimedDevice(key, t0)
        async with device.connect(hub) as ws:
            reader = asyncio.create_task(device.read_acks(ws))
            await device.send_range(ws, 1, total // 2)
            await wait_until(lambda: device.acked > total // 4, "acks for a first part")
            hub.send(signal.SIGKILL)
            await asyncio.wait_for(reader, 10 * TIMEOUT)
        assert 0 < device.acked < total
        hub.wait()
        hub.start()
        hub.wait_healthy()
        # Resend from the last ack: frames stored but not acked come again and must count once.
        async with device.connect(hub) as ws:
            reader = asyncio.create_task(device.read_acks(ws))
            await device.send_range(ws, device.acked + 1, total)
            await wait_until(lambda: device.acked >= total, "every frame acked")
            want = {label: truth(all_samples(t0, total), width) for label, width in RESOLUTIONS.items()}
            # The idle timeout closes the last windows; wait until the streams agree (or time out and show why).
            with contextlib.suppress(AssertionError):
                settled = lambda: counts(windows(redis_url, org_id)) == counts(want)  # noqa: E731
                await wait_until(settled, "the windows", 15 * TIMEOUT)
            reader.cancel()
        got = windows(redis_url, org_id)
        answers = {interval: query(hub, t0, total, interval) for interval in ("1s", "1m", "1h")}
    assert stored_seqs(redis_url, org_id) == list(range(1, total + 1))
    for label in RESOLUTIONS:
        assert_same(got[label], want[label])
        # readings/aggregate (stored windows where closed, raw samples where not) says the same.
        assert_same(answers[label], want[label])


def query(hub: ServeProcess, t0: int, total: int, interval: str) -> Windows:
    with hub.client() as http:
        login = http.post("/auth/login", json={"email": ADMIN, "password": PASSWORD}).json()
        params = {"from": t0, "to": t0 + 3 * total, "interval": interval, "fn": "count,sum,min,max"}
        headers = {"Authorization": f"Bearer {login['token']}"}
        response = http.get("/devices/meter-1/readings/aggregate", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return {
        (parse_time_ms(row["start"]), row["metric"]): (row["count"], row["sum"], row["min"], row["max"])
        for row in response.json()["data"]
    }
