"""``GET /devices/{id}/readings/aggregate``: equal to aggregating the raw samples, at fixed and calendar
intervals, from stored windows and from samples whose windows are still open; its 400s and its tenancy."""

from __future__ import annotations

import random
import time
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import numpy as np
import orjson
import pytest
import redis

from hub.clock import iso_ms, parse_time_ms
from hub.config import HubConfig
from ingest import stream_keys
from tests.aggregate_truth import stored
from tests.conftest import TIMEOUT
from tests.support import HubClient, Tenant, assert_error, bearer
from tests.test_device_gateway import connect, device_key, receive

DEVICE = "boiler-7"
IDLE_MS = 300
FUNCTIONS = "count,sum,min,max,avg"
# (ts, metric, value)
Sample = tuple[int, str, float]


@pytest.fixture
def config(config: HubConfig) -> HubConfig:
    # Long retention, so that windows of the weeks around DST changes are kept.
    return config.replace(
        aggregate_idle_timeout_ms=IDLE_MS, aggregate_lateness_ms=200, aggregate_retention="2d,400d,400d"
    )


@pytest.fixture
def tenant(client: HubClient) -> Tenant:
    return client.new_tenant()


def columns_frame(seq: int, samples: list[Sample]) -> bytes:
    """One columns frame with bin columns: every metric at every ts of ``samples`` (one value per pair)."""
    stamps = sorted({ts for ts, _, _ in samples})
    names = sorted({name for _, name, _ in samples})
    table = {(ts, name): value for ts, name, value in samples}
    assert len(table) == len(stamps) * len(names), "columns need every metric at every ts"
    return msgpack.packb(
        {
            "type": "columns",
            "seq": seq,
            "ts": np.array(stamps, "<i8").tobytes(),
            "metrics": {n: np.array([table[(t, n)] for t in stamps], "<f8").tobytes() for n in names},
        }
    )


def grid(start_ms: int, step_ms: int, count: int, names: tuple[str, ...], seed: int) -> list[Sample]:
    rng = random.Random(seed)
    return [(start_ms + i * step_ms, n, round(rng.uniform(-50, 50), 3)) for i in range(count) for n in names]


def send(client: HubClient, key: str, frames: list[bytes]) -> None:
    with connect(client, key) as ws:
        receive(ws)
        for frame in frames:
            ws.send_bytes(frame)
        last = msgpack.unpackb(frames[-1])["seq"]
        while receive(ws) != {"type": "ack", "seq": last}:
            pass


def wait_until_closed(sync_redis: redis.Redis, org_id: str, newest_ts: int) -> None:
    """Until the idle timeout has closed the device's 1 h window holding ``newest_ts``."""
    hour = newest_ts - newest_ts % 3_600_000
    deadline = time.monotonic() + 10 * TIMEOUT
    while time.monotonic() < deadline:
        if any(start == hour for start, _ in stored(sync_redis, org_id, DEVICE, "1h")):
            return
        time.sleep(0.05)
    raise AssertionError("the device's windows were not closed")


def bucket_start(ts: int, interval: str, tz: str) -> tuple[int, int]:
    """(start, end) of the bucket holding ``ts``, computed with datetime alone."""
    fixed = {"s": 1_000, "m": 60_000, "h": 3_600_000}
    if interval[-1] in fixed and interval[:-1].isdigit():
        width = int(interval[:-1]) * fixed[interval[-1]]
        return ts - ts % width, ts - ts % width + width
    zone = ZoneInfo(tz)
    day = datetime.fromtimestamp(ts / 1000, zone).date()
    if interval == "1d":
        first, after = day, day + timedelta(days=1)
    elif interval == "1w":
        first = day - timedelta(days=day.weekday())
        after = first + timedelta(days=7)
    else:
        first = day.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    return _midnight(first, zone), _midnight(after, zone)


def _midnight(day: date, zone: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp() * 1000)


def truth(samples: list[Sample], interval: str, tz: str, low: int, high: int) -> list[dict[str, Any]]:
    """The expected rows: every bucket meeting [low, high] taken whole, per metric, sorted like the API."""
    first, last = bucket_start(low, interval, tz)[0], bucket_start(high, interval, tz)[1]
    groups: dict[tuple[int, int, str], list[float]] = {}
    for ts, name, value in samples:
        if first <= ts < last:
            start, end = bucket_start(ts, interval, tz)
            groups.setdefault((start, end, name), []).append(value)
    return [
        {"start": s, "end": e, "metric": n, "count": len(v), "sum": sum(v), "min": min(v), "max": max(v)}
        for (s, e, n), v in sorted(groups.items())
    ]


def query(client: HubClient, headers: dict[str, str], **params: Any) -> Any:
    response = client.get(f"/devices/{DEVICE}/readings/aggregate", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def assert_rows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Same buckets; count, min and max exactly, sum and avg within rounding."""
    assert [(parse_time_ms(r["start"]), parse_time_ms(r["end"]), r["metric"]) for r in got] == [
        (r["start"], r["end"], r["metric"]) for r in want
    ]
    for row, expected in zip(got, want, strict=True):
        assert (row["count"], row["min"], row["max"]) == (expected["count"], expected["min"], expected["max"]), row
        assert row["sum"] == pytest.approx(expected["sum"], rel=1e-9, abs=1e-9)
        assert row["avg"] == pytest.approx(expected["sum"] / expected["count"], rel=1e-9, abs=1e-9)


INTERVALS = ["1s", "10s", "1m", "5m", "1h", "3h", "1d", "1w", "1mo"]


def test_every_interval_equals_the_raw_samples(client: HubClient, tenant: Tenant, sync_redis: redis.Redis) -> None:
    key = device_key(client, tenant)
    now = int(time.time() * 1000)
    # Two days every 50 s, then a burst at 10 Hz over the last 20 s, then samples late within the horizon.
    history = grid(now - 2 * 86_400_000, 50_000, 3450, ("temp", "hum"), seed=1)
    burst = grid(now - 20_000, 100, 200, ("temp", "hum", "rpm"), seed=2)
    late = grid(now - 21_050, 7, 30, ("temp",), seed=3)
    samples = history + burst + late
    send(client, key, [columns_frame(1, history), columns_frame(2, burst), columns_frame(3, late)])
    wait_until_closed(sync_redis, tenant.org_id, now)
    high = now + 1_000
    for interval in INTERVALS:
        # Each range within the 10,000 buckets a request may return.
        low = high - {"1s": 7_200_000, "10s": 86_400_000}.get(interval, 2 * 86_400_000 + 3_600_000)
        for tz in ("UTC", "Asia/Kolkata") if interval in ("1d", "1w", "1mo") else ("UTC",):
            body = query(client, tenant.admin, interval=interval, tz=tz, fn=FUNCTIONS, **{"from": low, "to": high})
            assert body["meta"] == {"interval": interval, "tz": tz}
            assert_rows(body["data"], truth(samples, interval, tz, low, high))


def test_windows_still_open_are_read_from_the_raw_samples(client: HubClient, tenant: Tenant) -> None:
    """Asked right after the ack, before any window closed by idleness: the answer is already whole."""
    key = device_key(client, tenant)
    now = int(time.time() * 1000)
    samples = grid(now - 3_000, 10, 300, ("temp", "hum"), seed=4)
    send(client, key, [columns_frame(1, samples)])
    for interval in ("1s", "1m", "1h", "1d"):
        body = query(client, tenant.admin, interval=interval, fn=FUNCTIONS, **{"from": now - 5_000, "to": now})
        assert_rows(body["data"], truth(samples, interval, "UTC", now - 5_000, now))


def test_closed_windows_are_served_from_the_aggregate_streams(
    client: HubClient, tenant: Tenant, sync_redis: redis.Redis
) -> None:
    """With the raw frames trimmed to the newest one, the hours before it still read whole: they come from
    the stored windows. The newest frame's own (open-at-query-time) part still comes from raw samples."""
    key = device_key(client, tenant)
    now = int(time.time() * 1000)
    old = grid(now - 6 * 3_600_000, 60_000, 300, ("temp",), seed=5)
    recent = grid(now - 30_000, 1_000, 25, ("temp",), seed=6)
    send(client, key, [columns_frame(1, old), columns_frame(2, recent)])
    wait_until_closed(sync_redis, tenant.org_id, now)
    sync_redis.xtrim(stream_keys.device_frames(tenant.org_id, DEVICE), maxlen=1)
    body = query(client, tenant.admin, interval="1h", fn=FUNCTIONS, **{"from": now - 7 * 3_600_000, "to": now})
    assert_rows(body["data"], truth(old + recent, "1h", "UTC", now - 7 * 3_600_000, now))


def test_a_partial_window_from_another_process_does_not_win(
    client: HubClient, tenant: Tenant, sync_redis: redis.Redis
) -> None:
    """A process the device has left may still close its part of a window later: fewer samples, ignored."""
    key = device_key(client, tenant)
    now = int(time.time() * 1000)
    samples = grid(now - 3 * 3_600_000, 30_000, 200, ("temp",), seed=7)
    send(client, key, [columns_frame(1, samples)])
    wait_until_closed(sync_redis, tenant.org_id, samples[-1][0])
    # The hour before the newest: the newest hour itself is read from finer windows (it may reopen).
    hour = samples[-1][0] - samples[-1][0] % 3_600_000 - 3_600_000
    partial: dict[str, Any] = {"device_id": DEVICE, "start": iso_ms(hour), "end": iso_ms(hour + 3_600_000)}
    partial["metrics"] = {"temp": {"count": 1, "sum": 1e6, "min": 1e6, "max": 1e6, "avg": 1e6}}
    stream = stream_keys.device_aggregates(tenant.org_id, DEVICE, "1h")
    # Appended the way the store script appends a window older than the newest: right after it.
    ((newest, _),) = sync_redis.xrevrange(stream, count=1)  # type: ignore[misc]
    ms, serial = str(newest).split("-")
    sync_redis.xadd(
        stream, {"d": DEVICE, "s": hour, "c": "1", "p": orjson.dumps(partial)}, id=f"{ms}-{int(serial) + 1}"
    )
    low, high = samples[0][0], samples[-1][0]
    body = query(client, tenant.admin, interval="1h", fn=FUNCTIONS, **{"from": low, "to": high})
    assert_rows(body["data"], truth(samples, "1h", "UTC", low, high))


@pytest.mark.parametrize(
    ("tz", "day"),
    [
        ("Europe/Rome", date(2026, 10, 25)),
        ("America/New_York", date(2026, 11, 1)),
        ("Australia/Lord_Howe", date(2026, 10, 4)),
        ("Asia/Kolkata", date(2026, 10, 25)),
    ],
)
def test_local_days_across_a_dst_change(
    client: HubClient, tenant: Tenant, sync_redis: redis.Redis, tz: str, day: date
) -> None:
    key = device_key(client, tenant)
    zone = ZoneInfo(tz)
    start = _midnight(day - timedelta(days=2), zone) + 1_234
    samples = grid(start, 600_000, 5 * 144, ("temp", "hum"), seed=8)
    send(client, key, [columns_frame(1, samples)])
    wait_until_closed(sync_redis, tenant.org_id, samples[-1][0])
    low, high = start, samples[-1][0]
    body = query(client, tenant.admin, interval="1d", tz=tz, fn=FUNCTIONS, **{"from": low, "to": high})
    assert_rows(body["data"], truth(samples, "1d", tz, low, high))
    lengths = {parse_time_ms(r["start"]): parse_time_ms(r["end"]) - parse_time_ms(r["start"]) for r in body["data"]}
    change = _midnight(day, zone)
    expected = {"Europe/Rome": 25, "America/New_York": 25, "Australia/Lord_Howe": 23.5, "Asia/Kolkata": 24}[tz]
    assert lengths[change] == expected * 3_600_000
    monthly = query(client, tenant.admin, interval="1mo", tz=tz, fn="count", **{"from": low, "to": high})
    assert sum(r["count"] for r in monthly["data"]) == len(samples)
    assert set(monthly["data"][0]) == {"start", "end", "metric", "count"}


def test_default_function_is_avg_and_metrics_filter(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    now = int(time.time() * 1000)
    samples = grid(now - 120_000, 1_000, 100, ("temp", "hum", "rpm"), seed=9)
    send(client, key, [columns_frame(1, samples)])
    body = query(client, tenant.admin, interval="1m", metric="temp,rpm", **{"from": now - 120_000, "to": now})
    assert {r["metric"] for r in body["data"]} == {"temp", "rpm"}
    assert all(set(r) == {"start", "end", "metric", "avg"} for r in body["data"])
    # ISO 8601 bounds work as well as milliseconds.
    iso = query(
        client, tenant.admin, interval="1m", metric="temp,rpm", **{"from": iso_ms(now - 120_000), "to": iso_ms(now)}
    )
    assert iso == body


def test_bad_parameters_answer_400_with_details(client: HubClient, tenant: Tenant) -> None:
    device_key(client, tenant)
    path = f"/devices/{DEVICE}/readings/aggregate"
    now = int(time.time() * 1000)
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({}, {"from", "to", "interval"}),
        ({"from": now, "to": now, "interval": "2d"}, {"interval"}),
        ({"from": now, "to": now, "interval": "1.5h"}, {"interval"}),
        ({"from": now, "to": now, "interval": "0s"}, {"interval"}),
        ({"from": now, "to": now - 1, "interval": "1m"}, {"from"}),
        ({"from": "yesterday", "to": now, "interval": "1m"}, {"from"}),
        ({"from": now - 86_400_000, "to": now, "interval": "1s"}, {"interval"}),
        ({"from": 0, "to": now, "interval": "1d"}, {"interval"}),
        ({"from": now, "to": now, "interval": "1d", "tz": "Mars/Olympus"}, {"tz"}),
        ({"from": now, "to": now, "interval": "1m", "fn": "avg,median"}, {"fn"}),
        ({"from": now, "to": now, "interval": "1m", "metric": ",".join(f"m{i}" for i in range(101))}, {"metric"}),
    ]
    for params, fields in cases:
        error = assert_error(client.get(path, params=params, headers=tenant.admin), 400, "validation_error")
        assert set(error["details"]) == fields, (params, error)
    too_many = client.get(path, params={"from": now - 86_400_000, "to": now, "interval": "1s"}, headers=tenant.admin)
    assert "10,000" in too_many.json()["error"]["details"]["interval"]


def test_other_tenants_and_other_devices_get_404(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    other_key = device_key(client, tenant, "boiler-8")
    now = int(time.time() * 1000)
    send(client, key, [columns_frame(1, grid(now - 10_000, 1_000, 5, ("temp",), seed=10))])
    params = {"from": now - 60_000, "to": now, "interval": "1m", "fn": "count"}
    path = f"/devices/{DEVICE}/readings/aggregate"
    stranger = client.new_tenant("globex")
    assert_error(client.get(path, params=params, headers=stranger.admin), 404, "not_found")
    assert_error(client.get(path, params=params, headers=bearer(other_key)), 404, "not_found")
    assert_error(client.get(path, params=params), 401, "unauthenticated")
    viewer = client.new_user(tenant, "viewer")
    for headers in (bearer(viewer), bearer(key)):
        assert sum(r["count"] for r in query(client, headers, **params)["data"]) == 5
