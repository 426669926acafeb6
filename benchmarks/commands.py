"""``commands``: a command from REST to the device and its result back, on an idle hub and at saturation.

Workload, against one ``telehub serve`` with ``--devices`` (100) devices connected (``/api/v1/ws/device``,
MessagePack) that answer every ``command`` frame at once with ``command_result`` ``completed``, and one dashboard
(``/api/v1/ws``, JSON) subscribed to ``devices/+/commands``. REST calls go over keep-alive HTTP/1.1 connections
with an operator API key. Per run:

1. **Idle round trip**: ``--idle-commands`` (500) commands one after another, round robin over the devices. Each
   is timed from writing ``POST /devices/{id}/commands`` (perf_counter) to: the 202; the command read by the
   device; the ``completed`` change read by the dashboard (*visible over WebSocket*); and the first
   ``GET /commands/{id}`` that answers ``completed`` with the device's result (*visible over REST*: a second
   connection polls back to back once the device has answered, the way a backend waits for a result).
2. **Throughput**: ``--concurrency`` (64) REST connections each post a command, wait for its ``completed`` on
   the dashboard, and post the next, for ``--settle`` (1 s, not counted) then ``--seconds`` (10). Commands/s:
   completions seen by the dashboard within the measured span, over its length; the round trip (POST to
   ``completed`` on the dashboard) of those commands, p50 and p99; server CPU (hub and redis-server, ``/proc``)
   and the client's over the same span.

Checked before anything is reported (``CommandMismatch`` otherwise, exit code 1): every 202 says ``queued``;
every command reached its device once; REST shows each idle command ``completed`` with the device's result; the
dashboard was sent every command's ``queued``, ``sent`` and ``completed`` changes, each once (a device may answer
before its command is marked ``sent``; the result then shows ``sent`` before it ends the command).

3. **REST floor** (after telehub, in the same run; ``benchmarks/rest_floor.py``): the same ``--concurrency``
   connections post the same requests back to back for ``--seconds`` to a Starlette app on uvicorn with
   ``telehub serve``'s options that only parses the body and answers 202 (no auth, no Redis, no device):
   requests/s and its CPU per request. What one process of the hub's HTTP stack answers at most; commands/s
   over it is the share of that ceiling telehub keeps while doing everything else a command is.

Every figure is the median with min-max over ``--runs`` (3). No reference is run: none of BENCHMARKS.md's
references has device commands with a durable lifecycle (MQTT request/response and NATS request/reply are
fire-and-forget round trips with nothing stored), so the table stands against the issue's targets and the
REST floor.

    python -m benchmarks commands [--runs 3] [--devices 100] [--idle-commands 500] [--seconds 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from benchmarks import rest_floor, telehub_target
from benchmarks.commands_clients import AnsweringDevice, CommandWatcher, RestConnection
from benchmarks.fanout_peers import device_ids
from benchmarks.harness import DEFAULT_RESULTS_DIR, summarize
from benchmarks.loadgen import LoadSession, raise_open_files_limit
from benchmarks.loadrun import _cpu_by_pid
from benchmarks.recovery_clients import open_connection
from benchmarks.report import benchmark_command, show_written
from benchmarks.servers import RunningTarget

__all__ = ["CommandMismatch", "CommandsOptions", "main", "percentile", "run"]

Progress = Callable[[str], None]
PHASE_TIMEOUT_S = 60.0
SUMMARIZED = (
    "idle_accepted_p50_ms",
    "idle_accepted_p99_ms",
    "idle_device_p50_ms",
    "idle_device_p99_ms",
    "idle_ws_p50_ms",
    "idle_ws_p99_ms",
    "idle_rest_p50_ms",
    "idle_rest_p99_ms",
    "commands_per_s",
    "load_ws_p50_ms",
    "load_ws_p99_ms",
    "server_cpu_us_per_command",
    "hub_cpu_us_per_command",
    "redis_cpu_us_per_command",
    "client_cpu_us_per_command",
    "server_cores",
    "floor_requests_per_s",
    "floor_server_cpu_us_per_request",
    "floor_client_cpu_us_per_request",
)


class CommandMismatch(Exception):
    """A command did not go the way the contract says: nothing is reported."""


@dataclass(frozen=True, kw_only=True)
class CommandsOptions:
    runs: int = 3
    devices: int = 100
    idle_commands: int = 500
    seconds: float = 10.0
    settle: float = 1.0
    concurrency: int = 64
    workers: int = 1


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (fraction in 0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@contextlib.asynccontextmanager
async def open_rest(host: str, port: int, token: str, count: int) -> AsyncIterator[list[RestConnection]]:
    """``count`` keep-alive REST connections for one phase, closed after it: uvicorn closes a connection left
    idle for 5 s (its keep-alive timeout), as one kept for the next phase through a long idle phase would be."""
    loop = asyncio.get_running_loop()
    connections: list[RestConnection] = []
    try:
        for _ in range(count):
            _, connection = await loop.create_connection(
                lambda: RestConnection(host=host, port=port, token=token), host, port
            )
            connections.append(connection)
        yield connections
    finally:
        for connection in connections:
            connection.close()


@dataclass
class _Hub:
    """What the measuring coroutines share: the devices, the dashboard, REST connections, the server's pids."""

    devices: list[AnsweringDevice]
    watcher: CommandWatcher
    host: str
    port: int
    key: str
    server_processes: Callable[[], Mapping[int, str]]

    def rest(self, count: int) -> contextlib.AbstractAsyncContextManager[list[RestConnection]]:
        return open_rest(self.host, self.port, self.key, count)

    def check_delivered(self, posted: int) -> None:
        """Every command posted so far was read by its device once."""
        read = sum(device.commands for device in self.devices)
        if read != posted:
            raise CommandMismatch(f"{posted} commands posted, the devices read {read} command frames")

    def forget(self, device: AnsweringDevice, command_id: str) -> None:
        device.received.forget(command_id)
        device.answered.forget(command_id)
        self.watcher.completed.forget(command_id)


async def _post(rest: RestConnection, device: AnsweringDevice, number: int) -> tuple[str, float]:
    body = {"command": "ping", "params": {"n": number}, "timeout_s": 30}
    answer, accepted = await rest.call("POST", f"/devices/{device.device_id}/commands", body, expect=202)
    if answer.get("status") != "queued":
        raise CommandMismatch(f"POST /devices/{device.device_id}/commands answered {answer}, not status queued")
    command_id: str = answer["command_id"]
    return command_id, accepted


async def _rest_completed(poller: RestConnection, device: AnsweringDevice, command_id: str) -> float:
    """Poll ``GET /commands/{id}`` back to back from the device's answer on; the arrival of the first that
    shows the command completed with the device's result."""
    await asyncio.wait_for(device.answered.at(command_id), PHASE_TIMEOUT_S)
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while time.monotonic() < deadline:
        answer, at = await poller.call("GET", f"/commands/{command_id}")
        if answer["status"] == "completed":
            if answer.get("result") != {"ok": True}:
                raise CommandMismatch(f"GET /commands/{command_id} shows result {answer.get('result')!r}")
            return at
        if answer["status"] not in ("queued", "sent"):
            raise CommandMismatch(f"GET /commands/{command_id} shows status {answer['status']}")
    raise TimeoutError(f"{command_id} was not completed over REST within {PHASE_TIMEOUT_S:.0f} s")


async def _idle(hub: _Hub, options: CommandsOptions) -> dict[str, list[float]]:
    """One command at a time: the milliseconds from the POST to each moment, per command."""
    times: dict[str, list[float]] = {"accepted": [], "device": [], "ws": [], "rest": []}
    async with hub.rest(2) as (poster, poller):
        for number in range(options.idle_commands):
            device = hub.devices[number % len(hub.devices)]
            began = time.perf_counter()
            command_id, accepted = await _post(poster, device, number)
            rest_at = await _rest_completed(poller, device, command_id)
            ws_at = await asyncio.wait_for(hub.watcher.completed.at(command_id), PHASE_TIMEOUT_S)
            received = device.received.seen[command_id]
            for name, at in (("accepted", accepted), ("device", received), ("ws", ws_at), ("rest", rest_at)):
                times[name].append(1000 * (at - began))
            hub.forget(device, command_id)
    return times


async def _measure_span(
    posting: asyncio.Future[Any], pids: Mapping[int, str], counted_from: float, stop: float
) -> tuple[Counter[str], float]:
    """Wait for ``posting`` (one phase's posters) to end; the server's CPU by role and the client's between
    ``counted_from`` and ``stop`` (perf_counter), the measured span."""
    await asyncio.sleep(max(0.0, counted_from - time.perf_counter()))
    server_before, client_before = _cpu_by_pid(pids), time.process_time()
    await asyncio.sleep(max(0.0, stop - time.perf_counter()))
    server_after, client_after = _cpu_by_pid(pids), time.process_time()
    await asyncio.wait_for(posting, PHASE_TIMEOUT_S)
    by_role: Counter[str] = Counter()
    for pid, before in server_before.items():
        if pid in server_after:
            by_role[pids[pid]] += server_after[pid] - before
    return by_role, client_after - client_before


async def _load(hub: _Hub, options: CommandsOptions) -> dict[str, Any]:
    """``concurrency`` posters, each one command in flight, for settle + seconds: completions in the measured
    span and their round trips, and the CPU spent over it."""
    round_trips: list[float] = []
    posted = 0
    pids = dict(hub.server_processes())
    changes_before = hub.watcher.changes.copy()
    async with hub.rest(options.concurrency) as connections:
        began = time.perf_counter()
        counted_from = began + options.settle
        stop = counted_from + options.seconds

        async def poster(index: int, rest: RestConnection) -> None:
            nonlocal posted
            number = index
            while time.perf_counter() < stop:
                device = hub.devices[number % len(hub.devices)]
                number += len(connections)
                sent = time.perf_counter()
                command_id, _ = await _post(rest, device, number)
                posted += 1
                done = await asyncio.wait_for(hub.watcher.completed.at(command_id), PHASE_TIMEOUT_S)
                if counted_from <= done <= stop:
                    round_trips.append(1000 * (done - sent))
                hub.forget(device, command_id)

        posting = asyncio.gather(*(poster(i, rest) for i, rest in enumerate(connections)))
        by_role, client_cpu = await _measure_span(posting, pids, counted_from, stop)
    server_cpu = sum(by_role.values())
    completed = len(round_trips)
    # Every change of every command posted has reached the dashboard once the last completed did.
    await asyncio.sleep(0.2)
    changes = hub.watcher.changes - changes_before
    _check_changes(changes, posted)
    return {
        "completed": completed,
        "posted": posted,
        "commands_per_s": completed / options.seconds,
        "load_ws_p50_ms": statistics.median(round_trips),
        "load_ws_p99_ms": percentile(round_trips, 0.99),
        "sent_changes": changes["sent"],
        "server_cpu_us_per_command": 1e6 * server_cpu / completed,
        "hub_cpu_us_per_command": 1e6 * by_role["telehub"] / completed,
        "redis_cpu_us_per_command": 1e6 * by_role["redis"] / completed,
        "server_cores": server_cpu / options.seconds,
        "client_cpu_us_per_command": 1e6 * client_cpu / completed,
        "client_cores": client_cpu / options.seconds,
    }


async def _floor_run(floor: rest_floor.RestFloor, options: CommandsOptions) -> dict[str, float]:
    """The REST floor under the throughput phase's load: ``concurrency`` connections posting back to back for
    settle + seconds; the 202s read within the measured span per second, and the CPU spent over it."""
    # A header the size of the hub's operator key; the floor reads no credential.
    token = "sk_live_" + secrets.token_urlsafe(32)
    answered = 0
    pids = floor.server.processes(lambda pid: "floor")
    async with open_rest("127.0.0.1", floor.port, token, options.concurrency) as connections:
        began = time.perf_counter()
        counted_from, stop = began + options.settle, began + options.settle + options.seconds

        async def poster(index: int, rest: RestConnection) -> None:
            nonlocal answered
            number = index
            while time.perf_counter() < stop:
                body = {"command": "ping", "params": {"n": number}, "timeout_s": 30}
                path = f"/devices/floor-{number % options.devices}/commands"
                _, at = await rest.call("POST", path, body, expect=202)
                answered += counted_from <= at <= stop
                number += len(connections)

        posting = asyncio.gather(*(poster(i, rest) for i, rest in enumerate(connections)))
        by_role, client_cpu = await _measure_span(posting, pids, counted_from, stop)
    server_cpu = sum(by_role.values())
    return {
        "floor_requests_per_s": answered / options.seconds,
        "floor_server_cpu_us_per_request": 1e6 * server_cpu / answered,
        "floor_client_cpu_us_per_request": 1e6 * client_cpu / answered,
        "floor_server_cores": server_cpu / options.seconds,
    }


def _check_changes(changes: Counter[str], posted: int) -> None:
    """The dashboard was sent every command's ``queued``, ``sent`` and ``completed`` changes, each once (a
    device that answers before its command is marked sent has the result show ``sent`` first)."""
    if any(changes[status] != posted for status in ("queued", "sent", "completed")) or (
        set(changes) - {"queued", "sent", "completed"}
    ):
        raise CommandMismatch(f"{posted} commands posted, the dashboard was sent these changes: {dict(changes)}")


async def _connect(running: RunningTarget, options: CommandsOptions) -> _Hub:
    endpoint = running.endpoint
    key = str(endpoint.options["dashboard_key"])
    session = LoadSession(window=1)
    devices: list[AnsweringDevice] = []
    for device_id, credential in zip(device_ids(options.devices), endpoint.credentials, strict=True):
        make = functools.partial(
            AnsweringDevice,
            session,
            device_id=device_id,
            host=endpoint.host,
            port=endpoint.port,
            path=endpoint.path,
            credential=credential,
        )
        devices.append((await open_connection(endpoint.host, endpoint.port, make))[1])
    _, watcher = await open_connection(
        endpoint.host,
        endpoint.port,
        lambda: CommandWatcher(host=endpoint.host, port=endpoint.port, key=key, binary=False),
    )
    _, reply = watcher.send({"op": "subscribe", "channel": "devices/+/commands"})
    await asyncio.wait_for(reply, PHASE_TIMEOUT_S)
    return _Hub(devices, watcher, endpoint.host, endpoint.port, key, running.server_processes)


async def _measure_all(running: RunningTarget, options: CommandsOptions, say: Progress) -> list[dict[str, Any]]:
    hub = await _connect(running, options)
    runs: list[dict[str, Any]] = []
    posted = 0
    try:
        for number in range(1, options.runs + 1):
            say(f"commands: run {number}/{options.runs}: {options.idle_commands} commands one at a time")
            times = await _idle(hub, options)
            posted += options.idle_commands
            hub.check_delivered(posted)
            figures: dict[str, Any] = {}
            for name, values in times.items():
                figures[f"idle_{name}_p50_ms"] = statistics.median(values)
                figures[f"idle_{name}_p99_ms"] = percentile(values, 0.99)
            say(
                f"  idle: visible over WebSocket p50 {figures['idle_ws_p50_ms']:.2f} ms, "
                f"p99 {figures['idle_ws_p99_ms']:.2f} ms; over REST p50 {figures['idle_rest_p50_ms']:.2f} ms, "
                f"p99 {figures['idle_rest_p99_ms']:.2f} ms"
            )
            say(f"  throughput: {options.concurrency} commands in flight for {options.seconds:g} s")
            figures.update(await _load(hub, options))
            posted += figures["posted"]
            hub.check_delivered(posted)
            say(
                f"  {figures['commands_per_s']:,.0f} commands/s; round trip p50 {figures['load_ws_p50_ms']:.1f} ms, "
                f"p99 {figures['load_ws_p99_ms']:.1f} ms; server {figures['server_cpu_us_per_command']:.0f} µs "
                "CPU per command"
            )
            runs.append(figures)
    finally:
        await hub.watcher.close()
        await asyncio.gather(*(device.close() for device in hub.devices))
    return runs


def run(options: CommandsOptions, *, say: Progress = print) -> dict[str, Any]:
    """Start telehub and measure ``options.runs`` runs; the results writer's dict."""
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    with tempfile.TemporaryDirectory(prefix="telehub-commands-") as tmp:
        say(f"commands: starting telehub with {options.devices} devices")
        with telehub_target.started(
            devices=options.devices, workdir=Path(tmp), workers=options.workers, dashboard_role="operator"
        ) as running:
            runs = uvloop.run(_measure_all(running, options, say))
            started_as = running.started_as
        with rest_floor.started(Path(tmp)) as floor:
            for number, figures in enumerate(runs, 1):
                say(
                    f"commands: REST floor run {number}/{options.runs}: {options.concurrency} posters for "
                    f"{options.seconds:g} s"
                )
                figures.update(uvloop.run(_floor_run(floor, options)))
                say(
                    f"  {figures['floor_requests_per_s']:,.0f} requests/s; "
                    f"{figures['floor_server_cpu_us_per_request']:.0f} µs server CPU per request"
                )
            floor_started_as = floor.started_as
    parameters = {
        "runs": options.runs,
        "devices": options.devices,
        "idle_commands": options.idle_commands,
        "seconds": options.seconds,
        "settle": options.settle,
        "concurrency": options.concurrency,
        "workers": options.workers,
    }
    return {
        "workload": "commands",
        "started_at": started_at,
        "parameters": parameters,
        "started_as": started_as,
        "floor_started_as": floor_started_as,
        "runs": runs,
        "summary": summarize(runs, SUMMARIZED),
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.commands_report import write_results

    parser = argparse.ArgumentParser(prog="python -m benchmarks commands", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--devices", type=int, default=100, help="connected devices (default 100)")
    parser.add_argument("--idle-commands", type=int, default=500, help="commands timed one at a time (default 500)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured throughput span (default 10)")
    parser.add_argument("--settle", type=float, default=1.0, help="throughput warm-up, not counted (default 1)")
    parser.add_argument("--concurrency", type=int, default=64, help="commands in flight at saturation (default 64)")
    parser.add_argument("--telehub-workers", type=int, default=1, help="telehub serve --workers (default 1)")
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help=f"where to write (default {DEFAULT_RESULTS_DIR})"
    )
    args = parser.parse_args(argv)
    if min(args.runs, args.devices, args.idle_commands, args.concurrency, args.telehub_workers) <= 0:
        parser.error("--runs, --devices, --idle-commands, --concurrency and --telehub-workers must be positive")
    if args.seconds <= 0 or args.settle < 0:
        parser.error("--seconds must be positive and --settle not negative")
    options = CommandsOptions(
        runs=args.runs,
        devices=args.devices,
        idle_commands=args.idle_commands,
        seconds=args.seconds,
        settle=args.settle,
        concurrency=args.concurrency,
        workers=args.telehub_workers,
    )
    raise_open_files_limit()
    try:
        result = run(options)
    except CommandMismatch as exc:
        print(f"commands: a command did not go as the contract says, nothing reported: {exc}", file=sys.stderr)
        return 1
    command = benchmark_command("commands", argv)
    files = write_results(result, args.results_dir, command)
    show_written(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
