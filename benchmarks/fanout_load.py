"""A ``fanout`` load generator process: either dashboards that count deliveries, or the publishing devices.

``python -m benchmarks.fanout_load ORDERS.json`` (under uvloop) opens its connections (dashboards subscribe
before they count as open), says ``ready`` on stdout, then obeys JSON lines on stdin, each answered by one
JSON line on stdout when done:

- ``{"op": "rate", "hz": R, "at": T}`` (publisher): from monotonic instant T, each device sends R frames/s;
  0 pauses. The frames are spread evenly in time and over the devices; each is stamped with its send time.
- ``{"op": "measure", "start": T0, "end": T1}`` -> ``measured``: the counts over [T0, T1) on the shared
  monotonic clock and the process's own CPU time over it (``/proc/self/stat``); dashboards add the latency
  samples taken in it (one delivery in ``sample_every``).
- ``{"op": "drain", "quiet_s": Q, "timeout_s": S}`` -> ``drained``: dashboards wait until nothing has arrived
  for Q seconds, then reopen any connection the server closed (a slow consumer); the publisher waits for the
  acks still owed.
- ``{"op": "stop"}`` -> ``stopped``: every connection closed, the totals.

Several processes share the dashboards so that counting them is never what limits a run; one process
publishes, as the devices are few and send little next to what comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from benchmarks import procstat
from benchmarks.fanout_clients import Dashboard, Tally, dashboard_factory
from benchmarks.fanout_publishers import Publisher, publisher_factory
from benchmarks.loadgen import OPEN_TIMEOUT_S, LoadSession, _say, raise_open_files_limit

__all__ = ["main"]

# The publisher's pacing: it wakes at most every MIN_TICK_S (uvloop's timers have millisecond resolution) and
# at least every MAX_TICK_S, so that a rate change takes effect at once.
MIN_TICK_S = 0.001
MAX_TICK_S = 0.01
POLL_S = 0.05
Connection = TypeVar("Connection", Dashboard, Publisher)


async def _open_all(
    make: Callable[[int], Connection], count: int, orders: dict[str, Any], gate: asyncio.Semaphore
) -> list[Connection]:
    """Connections ``make(0 .. count - 1)`` open and ready, in order; raises if any failed."""
    loop = asyncio.get_running_loop()

    async def open_one(index: int) -> Connection:
        async with gate:
            _, connection = await loop.create_connection(lambda: make(index), orders["host"], int(orders["port"]))
            await asyncio.wait_for(connection.ready, OPEN_TIMEOUT_S)
            return connection

    results = await asyncio.gather(*(open_one(i) for i in range(count)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        for connection in results:
            if not isinstance(connection, BaseException) and connection.transport is not None:
                connection.transport.abort()
        raise RuntimeError(f"{len(failures)} of {count} connections failed to open; first: {failures[0]!r}")
    return [r for r in results if not isinstance(r, BaseException)]


async def _sleep_until(instant: float) -> None:
    await asyncio.sleep(max(0.0, instant - time.monotonic()))


def _cpu_s() -> float:
    return procstat.cpu_seconds(os.getpid()) or 0.0


class _Worker:
    """What both kinds of worker do with a measured window; subclasses say what they count."""

    def __init__(self, orders: dict[str, Any]) -> None:
        self.orders = orders
        self.gate = asyncio.Semaphore(int(orders.get("connect_concurrency", 64)))

    def counts(self) -> dict[str, Any]:
        raise NotImplementedError

    def window_started(self) -> None:
        """The measured window begins (dashboards start keeping latency samples)."""

    def window_ended(self) -> dict[str, Any]:
        """What the window adds to the counts."""
        return {}

    async def measure(self, start: float, end: float) -> dict[str, Any]:
        await _sleep_until(start)
        before, cpu_before, began = self.counts(), _cpu_s(), time.monotonic()
        self.window_started()
        await _sleep_until(end)
        after, cpu_after, elapsed = self.counts(), _cpu_s(), time.monotonic() - began
        counts = {key: _minus(value, before[key]) for key, value in after.items()}
        return {"elapsed_s": elapsed, "cpu_s": cpu_after - cpu_before, **counts, **self.window_ended()}


def _minus(after: Any, before: Any) -> Any:
    """Per-key difference of counters (ints, or lists of ints per device)."""
    if isinstance(after, list):
        return [a - b for a, b in zip(after, before, strict=True)]
    return after - before


class DashboardWorker(_Worker):
    """A share of the dashboards, each subscribed to every device or to one."""

    def __init__(self, orders: dict[str, Any]) -> None:
        super().__init__(orders)
        self.tally = Tally(int(orders["sample_every"]))
        self._make = dashboard_factory(orders, self.tally)
        # (name, device followed or None for every device) per dashboard.
        self.specs: list[tuple[str, str | None]] = [(name, device) for name, device in orders["dashboards"]]
        self.dashboards: list[Dashboard] = []
        self.reopened = 0

    def _dashboard(self, index: int) -> Dashboard:
        return self._make(*self.specs[index])

    async def open(self) -> int:
        self.dashboards = await _open_all(self._dashboard, len(self.specs), self.orders, self.gate)
        return len(self.dashboards)

    def alive(self, wildcard: bool) -> int:
        return sum(1 for d in self.dashboards if d.wildcard is wildcard and not d.closed.done())

    def counts(self) -> dict[str, Any]:
        tally = self.tally
        return {"delivered": tally.delivered, "lost": tally.lost, "unparsed": tally.unparsed}

    def window_started(self) -> None:
        self.tally.latencies_us = []
        self.tally.sampling = True

    def window_ended(self) -> dict[str, Any]:
        self.tally.sampling = False
        return {
            "latency_us": self.tally.latencies_us,
            "alive_wildcard": self.alive(True),
            "alive_exact": self.alive(False),
        }

    async def drain(self, quiet_s: float, timeout_s: float) -> dict[str, Any]:
        """Until nothing arrived for ``quiet_s`` (or ``timeout_s``); then reopen the closed dashboards."""
        began = time.monotonic()
        last, quiet_since = self.tally.delivered, began
        while time.monotonic() - quiet_since < quiet_s and time.monotonic() - began < timeout_s:
            await asyncio.sleep(POLL_S)
            if self.tally.delivered != last:
                last, quiet_since = self.tally.delivered, time.monotonic()
        closed = [index for index, d in enumerate(self.dashboards) if d.closed.done()]
        if closed:
            fresh = await _open_all(lambda i: self._dashboard(closed[i]), len(closed), self.orders, self.gate)
            for index, dashboard in zip(closed, fresh, strict=True):
                self.dashboards[index] = dashboard
            self.reopened += len(closed)
        return {"waited_s": time.monotonic() - began, "reopened": len(closed), "delivered": self.tally.delivered}

    async def close(self) -> dict[str, Any]:
        per_kind = {
            kind: [d.delivered for d in self.dashboards if d.wildcard is wildcard and not d.closed.done()]
            for kind, wildcard in (("wildcard", True), ("exact", False))
        }
        await asyncio.gather(*(d.close() for d in self.dashboards))
        return {
            "dashboards": len(self.dashboards),
            "delivered": self.tally.delivered,
            "lost": self.tally.lost,
            "reopened": self.reopened,
            "close_codes": self.tally.close_codes,
            # Deliveries of the least and most served dashboard of each kind still open: a fair server serves
            # every dashboard of a kind alike (the ones reopened during the run started counting later).
            "delivered_per_dashboard": {
                kind: {"min": min(counts), "max": max(counts)} for kind, counts in per_kind.items() if counts
            },
        }


class PublisherWorker(_Worker):
    """The devices: each sends ``rate`` frames/s, the devices' sends interleaved evenly over each period."""

    def __init__(self, orders: dict[str, Any]) -> None:
        super().__init__(orders)
        self.session = LoadSession(window=int(orders["window"]))
        self._make = publisher_factory(orders, self.session)
        self.devices: list[tuple[str, str]] = [(device, credential) for device, credential in orders["devices"]]
        self.publishers: list[Publisher] = []
        self.rate = 0.0
        self._rate_since = 0.0
        # Frames due since the rate was set, per device (sent or skipped); frames written, per device, in all.
        self._due: list[int] = []
        self.published: list[int] = []
        # Frames due but not sent: the window of unacked frames was full, or the socket's buffer.
        self.skipped = 0
        self._pacing: asyncio.Task[None] | None = None

    async def open(self) -> int:
        self.publishers = await _open_all(
            lambda i: self._make(*self.devices[i]), len(self.devices), self.orders, self.gate
        )
        self._due = [0] * len(self.publishers)
        self.published = [0] * len(self.publishers)
        self._pacing = asyncio.create_task(self._pace())
        return len(self.publishers)

    async def set_rate(self, hz: float, at: float) -> dict[str, Any]:
        await _sleep_until(at)
        self.rate, self._rate_since = hz, at
        self._due = [0] * len(self.publishers)
        return {"hz": hz}

    async def _pace(self) -> None:
        devices = len(self.publishers)
        while True:
            rate = self.rate
            if rate <= 0:
                await asyncio.sleep(MAX_TICK_S)
                continue
            elapsed = time.monotonic() - self._rate_since
            sent_us = time.time() * 1e6
            for index, publisher in enumerate(self.publishers):
                owed = int(elapsed * rate + index / devices) - self._due[index]
                if owed > 0:
                    self._due[index] += owed
                    sent = publisher.publish(owed, sent_us)
                    self.published[index] += sent
                    self.skipped += owed - sent
            await asyncio.sleep(min(max(1.0 / (rate * devices), MIN_TICK_S), MAX_TICK_S))

    def counts(self) -> dict[str, Any]:
        session = self.session
        return {
            "published": list(self.published),
            "skipped": self.skipped,
            "acked": session.resolved_total,
            "lost": session.lost_connections,
        }

    async def drain(self, quiet_s: float, timeout_s: float) -> dict[str, Any]:
        """Until every frame written has been acked (targets that ack), or ``timeout_s``."""
        began = time.monotonic()
        session = self.session
        session.drained = asyncio.get_running_loop().create_future()
        if session.inflight > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.drained, timeout_s)
        return {"waited_s": time.monotonic() - began, "unacked": session.inflight}

    async def close(self) -> dict[str, Any]:
        if self._pacing is not None:
            self._pacing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacing
        unacked = self.session.inflight
        await asyncio.gather(*(p.close() for p in self.publishers))
        return {
            "devices": len(self.publishers),
            "published": sum(self.published),
            "skipped": self.skipped,
            "acked": self.session.resolved_total,
            "unacked": unacked,
            "lost": self.session.lost_connections,
            "close_codes": self.session.close_codes,
        }


async def _answer(event: str, work: Awaitable[dict[str, Any]]) -> None:
    try:
        _say(event, pid=os.getpid(), **await work)
    except Exception as exc:
        _say("error", pid=os.getpid(), message=f"{event}: {type(exc).__name__}: {exc}")


async def _obey(worker: DashboardWorker | PublisherWorker, stdin: asyncio.StreamReader) -> None:
    """Commands from stdin until ``stop`` (or the controller going away); each answered by a task."""
    tasks: set[asyncio.Task[None]] = set()
    while True:
        line = await stdin.readline()
        if not line:
            break
        command = json.loads(line)
        op = command["op"]
        work: Awaitable[dict[str, Any]]
        if op == "stop":
            break
        if op == "measure":
            work, event = worker.measure(float(command["start"]), float(command["end"])), "measured"
        elif op == "drain":
            work, event = worker.drain(float(command["quiet_s"]), float(command["timeout_s"])), "drained"
        elif op == "rate" and isinstance(worker, PublisherWorker):
            work, event = worker.set_rate(float(command["hz"]), float(command["at"])), "rate"
        else:
            _say("error", pid=os.getpid(), message=f"unknown command {command!r}")
            continue
        task = asyncio.create_task(_answer(event, work))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in tasks:
        task.cancel()


async def _run(orders: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    worker = DashboardWorker(orders) if orders["role"] == "dashboards" else PublisherWorker(orders)
    connections: Sequence[Dashboard | Publisher] = ()
    try:
        opened = await worker.open()
        connections = worker.dashboards if isinstance(worker, DashboardWorker) else worker.publishers
        _say("ready", pid=os.getpid(), connections=opened)
        await _obey(worker, stdin)
        _say("stopped", pid=os.getpid(), **await worker.close())
    finally:
        for connection in connections:
            if connection.transport is not None:
                connection.transport.abort()


def main() -> int:
    """A worker process: ``python -m benchmarks.fanout_load ORDERS.json``; commands come on stdin."""
    raise_open_files_limit()
    orders = json.loads(Path(sys.argv[1]).read_text())
    try:
        uvloop.run(_run(orders))
    except Exception as exc:
        _say("error", pid=os.getpid(), message=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
