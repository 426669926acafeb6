"""Alerts across two real ``telehub serve`` processes on one Redis: the same devices' readings posted to both
at once still make exactly one open alert per (rule, device); a rule made on one process applies on the other
within about a second; a dashboard on either process sees every alert."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.conftest import TIMEOUT
from tests.fanout_process_clients import WAIT, Hub, dashboard, hubs, provision
from tests.support import bearer

DEVICES = [f"boiler-{n}" for n in range(6)]
# Readings an hour old, on a whole minute: within the accepted range of timestamps (ingest/limits.py) whenever
# the tests run (a fixed instant fell out of it a year after it was written).
T0 = (int(time.time()) // 60 - 60) * 60_000
READINGS = 40


def post(http: httpx.Client, token: str, path: str, body: dict[str, Any], status: int = 201) -> Any:
    response = http.post(path, json=body, headers=bearer(token))
    assert response.status_code == status, response.text
    return response.json()


def read(http: httpx.Client, token: str, ts: int, device_id: str, **metrics: float) -> None:
    post(http, token, f"/devices/{device_id}/readings", {"ts": ts, "metrics": metrics}, status=202)


def alerts(hub: Hub, token: str, rule_id: str) -> list[dict[str, Any]]:
    response = hub.http.get("/alerts?limit=100", headers=bearer(token))
    assert response.status_code == 200, response.text
    return [a for a in response.json()["data"] if a["rule_id"] == rule_id]


def wait_until(what: str, condition: Any, within_s: float = WAIT) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within_s, f"waited {within_s:.1f} s for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


@contextmanager
def clients(pair: list[Hub], count: int) -> Iterator[list[httpx.Client]]:
    """``count`` HTTP clients, alternately on each process (one per worker thread)."""
    with ExitStack() as stack:
        yield [stack.enter_context(pair[n % 2].process.client()) for n in range(count)]


def concurrently(pair: list[Hub], token: str, value: float, start_ms: int, seed: int) -> None:
    """Every device gets READINGS readings of ``value``, posted in a random order by 8 threads, half of them
    to each process (a device's readings go to both)."""
    jobs = [(device, start_ms + i * 50) for device in DEVICES for i in range(READINGS)]
    random.Random(seed).shuffle(jobs)
    with clients(pair, 8) as https, ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(read, https[n % 8], token, ts, device, temp=value) for n, (device, ts) in enumerate(jobs)
        ]
        for future in futures:
            future.result()


class Markers:
    """A rule on metric ``mark`` and one device per process: a new marker alert from a process means its alert
    loop has applied everything stored on it before (the loop applies in order)."""

    def __init__(self, pair: list[Hub], token: str) -> None:
        self.pair, self.token = pair, token
        self.rule = post(pair[0].http, token, "/alert-rules", rule_body(metric="mark", threshold=0.5))
        self.rounds = 0

    def settle(self) -> None:
        self.rounds += 1
        for n, hub in enumerate(self.pair):
            read(hub.http, self.token, T0 + self.rounds * 10_000, f"marker-{n}", mark=0)
            read(hub.http, self.token, T0 + self.rounds * 10_000 + 1, f"marker-{n}", mark=1)
        wait_until(
            "both processes' marker alerts",
            lambda: len(alerts(self.pair[0], self.token, self.rule["id"])) == 2 * self.rounds,
        )


def rule_body(**fields: Any) -> dict[str, Any]:
    return {"name": "hot", "metric": "temp", "op": "gt", "threshold": 50, "severity": "major", **fields}


def one_open_alert_each(found: list[dict[str, Any]]) -> None:
    """Per device, alerts never overlap in time and at most one is open."""
    for device in DEVICES:
        mine = sorted((a for a in found if a["device_id"] == device), key=lambda a: a["triggered_at"])
        assert sum(a["status"] != "resolved" for a in mine) <= 1, mine
        for earlier, later in itertools.pairwise(mine):
            assert earlier["resolved_at"] is not None and earlier["resolved_at"] <= later["triggered_at"], mine


async def test_readings_to_both_processes_make_one_open_alert_per_rule_and_device(
    redis_url: str, tmp_path: Path
) -> None:
    with hubs(redis_url, tmp_path, 2) as pair:
        a, b = pair
        token = provision(a.http).admin_token
        for device in [*DEVICES, "marker-0", "marker-1"]:
            post(a.http, token, "/devices", {"id": device, "name": device, "type": "boiler"})
        async with dashboard(b, token) as board:
            await board.subscribe("alerts")
            markers = Markers(pair, token)
            # B reads the organization's rules (the marker rule only) before the rule exists, keeps its copy ...
            await asyncio.to_thread(read, b.http, token, T0, DEVICES[0], temp=1)
            rule = post(a.http, token, "/alert-rules", rule_body(device_type="boiler"))
            made = time.monotonic()

            # ... for about a second: readings posted to B trigger the rule made on A soon after.
            def hot_on_b() -> bool:
                read(b.http, token, T0 + int((time.monotonic() - made) * 1000) + 1, DEVICES[0], temp=99)
                return bool(alerts(b, token, rule["id"]))

            took = await asyncio.to_thread(wait_until, "the rule to apply on B", hot_on_b)
            assert took < 2 + TIMEOUT, took

            # All hot, through both processes at once: one alert per device, however the readings interleave.
            await asyncio.to_thread(concurrently, pair, token, 99.0, T0 + 10_000, seed=1)
            await asyncio.to_thread(markers.settle)
            found = alerts(a, token, rule["id"])
            assert sorted(a["device_id"] for a in found) == DEVICES
            assert {a["status"] for a in found} == {"active"}
            # Cold, then hot again: each device's alert resolves and a second one opens.
            await asyncio.to_thread(concurrently, pair, token, 1.0, T0 + 20_000, seed=2)
            await asyncio.to_thread(concurrently, pair, token, 99.0, T0 + 30_000, seed=3)
            await asyncio.to_thread(markers.settle)
            found = alerts(b, token, rule["id"])
            one_open_alert_each(found)
            assert Counter((a["device_id"], a["status"]) for a in found) == Counter(
                {**{(d, "resolved"): 1 for d in DEVICES}, **{(d, "active"): 1 for d in DEVICES}}
            )
            # The event log and the dashboard on B saw each change once, whichever process made it.
            response = a.http.get("/events?limit=100", headers=bearer(token))
            events = [e for e in response.json()["data"] if e["data"].get("rule_id") == rule["id"]]
            assert Counter(e["type"] for e in events) == {"alert.triggered": 12, "alert.resolved": 6}
            seen: Counter[str] = Counter()
            while sum(seen.values()) < 18:
                message = await board.message()
                if message["data"]["rule_id"] == rule["id"]:
                    seen[message["data"]["type"]] += 1
            assert seen == {"alert.triggered": 12, "alert.resolved": 6}
