"""Aggregation in the ingest loop, in-process: frames over the device WebSocket become closed windows in the
aggregate streams that equal aggregating the samples sent; duplicates never count; idle devices close."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
import redis

from hub.config import HubConfig
from ingest import stream_keys
from tests.aggregate_truth import RESOLUTIONS, assert_same, entries, stored, truth
from tests.conftest import TIMEOUT
from tests.support import HubClient, Tenant
from tests.test_device_gateway import connect, device_key, receive

IDLE_MS = 300


@pytest.fixture
def config(config: HubConfig) -> HubConfig:
    return config.replace(aggregate_idle_timeout_ms=IDLE_MS, aggregate_lateness_ms=200)


@pytest.fixture
def tenant(client: HubClient) -> Tenant:
    return client.new_tenant()


def frames(start_ms: int) -> tuple[list[bytes], list[tuple[int, str, float]]]:
    """Point, points and columns frames over a few seconds from ``start_ms``, and their samples."""
    wire, samples = [], []
    seq = 0
    for i in range(40):
        seq += 1
        ts = start_ms + i * 97
        values = {"temp": 20.0 + (i % 7) * 0.25, "hum": float(40 - i % 5)}
        wire.append(msgpack.packb({"type": "telemetry", "seq": seq, "ts": ts, "metrics": values}))
        samples += [(ts, name, value) for name, value in values.items()]
    seq += 1
    points = [{"ts": start_ms + 4000 + j * 150, "metrics": {"temp": 30.0 - j, "rpm": float(j * j)}} for j in range(9)]
    wire.append(msgpack.packb({"type": "telemetry", "seq": seq, "points": points}))
    samples += [(p["ts"], name, value) for p in points for name, value in p["metrics"].items()]
    seq += 1
    ts_column = [start_ms + 5500 + k * 10 for k in range(200)]
    column = [float(k % 13) - 6.5 for k in range(200)]
    wire.append(msgpack.packb({"type": "columns", "seq": seq, "ts": ts_column, "metrics": {"amps": column}}))
    samples += [(ts, "amps", value) for ts, value in zip(ts_column, column, strict=True)]
    return wire, samples


def send_all(ws: Any, wire: list[bytes]) -> None:
    for frame in wire:
        ws.send_bytes(frame)
    last = msgpack.unpackb(wire[-1])["seq"]
    while receive(ws) != {"type": "ack", "seq": last}:
        pass


def wait_for_windows(sync_redis: redis.Redis, org_id: str, want: dict[str, Any]) -> None:
    """Until every resolution's stream holds as many windows as expected (bounded by TIMEOUT)."""
    deadline = time.monotonic() + 10 * TIMEOUT
    while time.monotonic() < deadline:
        if all(len(stored(sync_redis, org_id, "boiler-7", label)) >= len(want[label]) for label in RESOLUTIONS):
            return
        time.sleep(0.05)


def test_streamed_frames_become_windows_equal_to_the_samples(
    client: HubClient, tenant: Tenant, sync_redis: redis.Redis
) -> None:
    key = device_key(client, tenant)
    wire, samples = frames(int(time.time() * 1000) - 10_000)
    with connect(client, key) as ws:
        receive(ws)
        send_all(ws, wire)
        want = {label: truth(samples, width) for label, width in RESOLUTIONS.items()}
        # Event time passed most 1 s windows; the idle timeout closes the rest (1 min, 1 h included).
        wait_for_windows(sync_redis, tenant.org_id, want)
        for label in RESOLUTIONS:
            assert_same(stored(sync_redis, tenant.org_id, "boiler-7", label), want[label])
    metrics = client.http.get("/metrics").text
    assert "telehub_aggregation_late_dropped_total" in metrics


def test_a_resent_frame_changes_no_aggregate(client: HubClient, tenant: Tenant, sync_redis: redis.Redis) -> None:
    key = device_key(client, tenant)
    wire, samples = frames(int(time.time() * 1000) - 10_000)
    want = {label: truth(samples, width) for label, width in RESOLUTIONS.items()}
    with connect(client, key) as ws:
        receive(ws)
        send_all(ws, wire)
        wait_for_windows(sync_redis, tenant.org_id, want)
        before = {
            label: entries(sync_redis, stream_keys.device_aggregates(tenant.org_id, "boiler-7", label))
            for label in RESOLUTIONS
        }
        # Every frame again (a device resending after a lost ack): acked, not stored, not aggregated. Were they
        # aggregated, the closed windows would reopen and be emitted again, corrected, with doubled counts.
        send_all(ws, wire)
        time.sleep((IDLE_MS / 1000 + 1.5) * TIMEOUT)
    for label in RESOLUTIONS:
        assert entries(sync_redis, stream_keys.device_aggregates(tenant.org_id, "boiler-7", label)) == before[label]
        assert_same(stored(sync_redis, tenant.org_id, "boiler-7", label), want[label])


def test_an_idle_device_gets_its_open_windows_closed(
    client: HubClient, tenant: Tenant, sync_redis: redis.Redis
) -> None:
    key = device_key(client, tenant)
    now = int(time.time() * 1000)
    with connect(client, key) as ws:
        receive(ws)
        send_all(ws, [msgpack.packb({"type": "telemetry", "seq": 1, "ts": now, "metrics": {"temp": 3.5}})])
        # No later sample moves the watermark: only the idle timeout can close these windows.
        deadline = time.monotonic() + 10 * TIMEOUT
        while time.monotonic() < deadline and not stored(sync_redis, tenant.org_id, "boiler-7", "1h"):
            time.sleep(0.05)
        for label, width in RESOLUTIONS.items():
            assert stored(sync_redis, tenant.org_id, "boiler-7", label) == {
                (now - now % width, "temp"): (1, 3.5, 3.5, 3.5)
            }
