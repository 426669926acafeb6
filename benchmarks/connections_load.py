"""A ``connections`` client process: opens its share of idle devices or dashboards when told, and holds them.

``python -m benchmarks.connections_load ORDERS.json`` (under uvloop, its open files limit raised to the hard
one) says ``ready``, then obeys JSON lines on stdin, each answered by one JSON line on stdout:

- ``{"op": "open", "kind": "devices" | "dashboards", "at": T}`` -> ``opened``: from monotonic instant T, opens
  its connections of that kind, at most ``connect_concurrency`` at once; a device is open once its ``hello``
  has come, a dashboard once its subscription is acked. The seconds from T until the last one was open, its
  own CPU time over them, and how many failed (with the first error).
- ``{"op": "close"}`` -> ``closed``: how many connections the server dropped while they were idle and with
  which close codes; then every connection is dropped (its transport aborted: no closing handshake, which
  with thousands of connections took seconds of both sides' CPU after everything was measured) and the
  process exits.

The clients are the other workloads': devices are the ingest load generator's ``WebSocketDevice`` (it answers
pings and never sends a frame here), dashboards are ``fanout``'s (``TelehubDashboard``: subscribe op and reply;
``SocketIODashboard``: Engine.IO open, namespace connect, ``subscribe`` event with its ack), each subscribed to
one device's channel (``devices/<id>/telemetry``) or room (``device:<id>``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from benchmarks import procstat
from benchmarks.fanout_clients import Dashboard, Tally, dashboard_factory
from benchmarks.loadgen import (
    OPEN_TIMEOUT_S,
    LoadConnection,
    LoadSession,
    WebSocketDevice,
    _say,
    raise_open_files_limit,
)

__all__ = ["main"]

# Dashboards here never sample latency.
NO_SAMPLES = 1 << 62
Connection = TypeVar("Connection", Dashboard, LoadConnection)


class Holder:
    """This process's share of the connections, opened by kind on command."""

    def __init__(self, orders: dict[str, Any]) -> None:
        self.orders = orders
        self.session = LoadSession(window=1)
        self.tally = Tally(NO_SAMPLES)
        self.devices: list[LoadConnection] = []
        self.dashboards: list[Dashboard] = []

    async def open(self, kind: str, at: float) -> dict[str, Any]:
        orders, host, port = self.orders, self.orders["host"], int(self.orders["port"])
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        cpu_before, began = procstat.cpu_seconds(os.getpid()) or 0.0, time.monotonic()
        if kind == "devices":
            session, path = self.session, orders["device_path"]

            def device(index: int) -> LoadConnection:
                key = orders["device_keys"][index]
                return WebSocketDevice(session, host=host, port=port, path=path, credential=key)

            opened, failures = await _open_all(device, len(orders["device_keys"]), orders)
            self.devices += opened
        else:
            make = dashboard_factory({**orders, "protocol": orders["dashboard_protocol"]}, self.tally)
            channels: list[str] = orders["dashboard_devices"]
            opened_dashboards, failures = await _open_all(
                lambda index: make(f"dashboard-{index}", channels[index]), len(channels), orders
            )
            self.dashboards += opened_dashboards
        elapsed = time.monotonic() - began
        cpu = (procstat.cpu_seconds(os.getpid()) or 0.0) - cpu_before
        return {
            "kind": kind,
            "opened": len(self.devices if kind == "devices" else self.dashboards),
            "failed": len(failures),
            "first_error": repr(failures[0]) if failures else None,
            "elapsed_s": elapsed,
            "cpu_s": cpu,
        }

    def tally_drops(self) -> dict[str, Any]:
        """How many connections the server dropped so far, and with which close codes."""
        dropped = {"devices": self.session.lost_connections, "dashboards": self.tally.lost}
        codes = {"devices": dict(self.session.close_codes), "dashboards": dict(self.tally.close_codes)}
        return {"dropped": dropped, "close_codes": codes}

    def abort(self) -> None:
        """Drop every connection at once (no closing handshake)."""
        held: Sequence[LoadConnection | Dashboard] = [*self.devices, *self.dashboards]
        for connection in held:
            if connection.transport is not None:
                connection.transport.abort()


async def _open_all(
    make: Callable[[int], Connection], count: int, orders: dict[str, Any]
) -> tuple[list[Connection], list[BaseException]]:
    """Connections ``make(0 .. count - 1)``, at most ``connect_concurrency`` opening at once: the open ones and
    the failures."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(int(orders["connect_concurrency"]))
    host, port = orders["host"], int(orders["port"])

    async def open_one(index: int) -> Connection:
        async with gate:
            _, connection = await loop.create_connection(lambda: make(index), host, port)
            try:
                await asyncio.wait_for(connection.ready, OPEN_TIMEOUT_S)
            except BaseException:
                if connection.transport is not None:
                    connection.transport.abort()
                raise
            return connection

    results = await asyncio.gather(*(open_one(index) for index in range(count)), return_exceptions=True)
    return [r for r in results if not isinstance(r, BaseException)], [
        r for r in results if isinstance(r, BaseException)
    ]


async def _run(orders: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    holder = Holder(orders)
    try:
        _say("ready", pid=os.getpid())
        while line := await stdin.readline():
            command = json.loads(line)
            if command["op"] == "open":
                _say("opened", pid=os.getpid(), **await holder.open(command["kind"], float(command["at"])))
            elif command["op"] == "close":
                _say("closed", pid=os.getpid(), **holder.tally_drops())
                break
            else:
                _say("error", pid=os.getpid(), message=f"unknown command {command!r}")
    finally:
        holder.abort()


def main() -> int:
    """A client process: ``python -m benchmarks.connections_load ORDERS.json``; commands come on stdin."""
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
