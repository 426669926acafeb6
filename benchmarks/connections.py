"""``connections``: server memory per idle connection and connects/s, telehub against python-socketio (BENCHMARKS.md).

Workload, per target and run, each run on a freshly started server (memory a process has once taken is not
given back, so a second run on the same server would measure less):

1. The server starts; telehub on a copy of a data dir provisioned once per invocation, before its first run
   (``connections_servers``: ``--connections`` devices made over REST by ``telehub_target`` and one viewer API
   key for every dashboard, on a server then stopped), its limit of dashboard connections per credential (1,000
   by default) raised with ``TELEHUB_DASHBOARD_MAX_CONNECTIONS``; python-socketio as for ``fanout``
   (``fanout_peers``: uvicorn, uvloop, ``AsyncRedisManager`` on its own redis-server).
2. ``--processes`` client processes (``connections_load``) start; once the RSS of the server's processes
   (``/proc/<pid>/status``) holds steady (within 256 KiB over 1 s, read every 0.25 s; at most ``--settle``
   seconds) it is the baseline.
3. For each kind (telehub: devices, then dashboards; python-socketio: dashboards), every client process opens
   its share from one instant on the shared monotonic clock, at most ``--connect-concurrency`` at once each.
   A device is open once its ``hello`` came (the device key checked, the device marked online); a dashboard
   once its subscription to one device's channel (``devices/<id>/telemetry``; Socket.IO: room
   ``device:<id>``) is acked. connects/s = connections / seconds until the last was open.
4. Once the RSS holds steady again (at most ``--settle`` seconds after the last was open): (RSS - RSS before
   the kind) / connections is the memory per idle connection of that kind, for the hub (or uvicorn) process
   and its redis-server separately. Then the server's CPU while everything idles, over ``--idle`` seconds (25:
   a whole heartbeat period of both servers; telehub pings a connection after 20 s of silence, Engine.IO
   every 25 s).
5. The clients report how many connections the server dropped while idle (none may be), then drop them
   (no closing handshakes: nothing is measured any more) and exit.

Every figure is the median with min-max over ``--runs`` (3). ARCHITECTURE.md's budget: at most 20 KiB of server
memory (hub process + redis-server) per idle device or dashboard connection.

The default is 9,000 + 9,000 connections, not BENCHMARKS.md's 10,000 + 10,000: the machine's hard limit of open
files is 20,000 per process, and telehub's one process would need 20,000 sockets plus its listening socket,
Redis connections and files. Socket memory in the kernel (buffers) is in no process's RSS.

    python -m benchmarks connections [--runs 3] [--connections 9000] [--target telehub,socketio]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from benchmarks import procstat
from benchmarks.connections_report import write_results
from benchmarks.connections_servers import (
    STEADY_EVERY_S,
    STEADY_KIB,
    STEADY_S,
    ProvisionedTelehub,
    Server,
    by_role,
    provision_telehub,
    rss_kib,
    server,
    steady_rss,
)
from benchmarks.harness import CPUS, DEFAULT_RESULTS_DIR, summarize
from benchmarks.loadgen import raise_open_files_limit
from benchmarks.loadrun import PACKAGE_ROOT
from benchmarks.report import benchmark_command, show_written

__all__ = ["KINDS", "TARGETS", "ConnectionsOptions", "main", "run"]

Progress = Callable[[str], None]
TARGETS = ("telehub", "socketio")
LABELS = {"telehub": "telehub", "socketio": "python-socketio + Redis manager (uvicorn)"}
KINDS = {"telehub": ("devices", "dashboards"), "socketio": ("dashboards",)}
# Seconds for the client processes to start, to answer a command, and between a command and its instant.
READY_TIMEOUT_S = 60.0
ANSWER_TIMEOUT_S = 300.0
START_DELAY_S = 0.3
# Figures of a kind, summarized over the runs as "<kind>_<figure>".
KIND_FIGURES = (
    "connects_per_s",
    "kib_per_connection",
    "server_kib_per_connection",
    "redis_kib_per_connection",
    "server_cpu_us_per_connect",
    "client_cpu_us_per_connect",
    "connect_s",
)


class DroppedConnections(Exception):
    """The server closed idle connections, or some could not open: the run is not a measurement."""


@dataclass(frozen=True, kw_only=True)
class ConnectionsOptions:
    runs: int = 3
    connections: int = 9_000
    processes: int = 4
    connect_concurrency: int = 64
    settle_s: float = 5.0
    idle_s: float = 25.0
    targets: tuple[str, ...] = TARGETS


class _Clients:
    """The client processes, their answers (JSON lines) read in turn; every one ended on exit."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, orders: list[dict[str, Any]], workdir: Path) -> None:
        for number, order in enumerate(orders):
            path = workdir / f"connections-{number}.json"
            path.write_text(json.dumps(order))
            with (workdir / f"connections-{number}.log").open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "benchmarks.connections_load",
                    str(path),
                    cwd=PACKAGE_ROOT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                )
            self.processes.append(process)
        await asyncio.gather(*(self._expect(p, "ready", READY_TIMEOUT_S) for p in self.processes))

    async def command(self, command: dict[str, Any], event: str) -> list[dict[str, Any]]:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(json.dumps(command).encode() + b"\n")
        return list(await asyncio.gather(*(self._expect(p, event, ANSWER_TIMEOUT_S) for p in self.processes)))

    @staticmethod
    async def _expect(process: asyncio.subprocess.Process, event: str, within_s: float) -> dict[str, Any]:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), within_s)
        if not line:
            raise RuntimeError(f"client process {process.pid} exited early (code {await process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        if answer["event"] != event:
            raise RuntimeError(f"client process {process.pid} answered {answer}, not {event!r}")
        return answer

    async def stop(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 30.0)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _measure(
    server: Server, kinds: tuple[str, ...], options: ConnectionsOptions, workdir: Path, say: Progress
) -> dict[str, Any]:
    """One run on a started server: the baseline, then each kind opened and left idle; the run's figures."""
    count, parts = options.connections, options.processes
    orders = [
        {
            **{key: value[part::parts] if isinstance(value, list) else value for key, value in server.orders.items()},
            "host": server.host,
            "port": server.port,
            "connect_concurrency": options.connect_concurrency,
        }
        for part in range(parts)
    ]
    clients = _Clients()
    figures: dict[str, Any] = {"kinds": {}}
    try:
        await clients.start(orders, workdir)
        pids = dict(server.processes())

        def read_rss() -> dict[str, float]:
            return by_role(pids, rss_kib)

        rss, figures["baseline_steady_s"] = await steady_rss(read_rss, options.settle_s)
        figures["baseline_rss_kib"] = rss
        for kind in kinds:
            at = time.monotonic() + START_DELAY_S
            cpu_before = by_role(pids, procstat.cpu_seconds)
            answers = await clients.command({"op": "open", "kind": kind, "at": at}, "opened")
            cpu_after = by_role(pids, procstat.cpu_seconds)
            failed = sum(a["failed"] for a in answers)
            if failed:
                first = next(a["first_error"] for a in answers if a["failed"])
                raise DroppedConnections(f"{failed} of {count} {kind} failed to open; first: {first}")
            seconds = max(a["elapsed_s"] for a in answers)
            after, steady_s = await steady_rss(read_rss, options.settle_s)
            rate = f"{count / seconds:,.0f}/s"
            say(f"  {kind}: {count:,} open in {seconds:.1f} s ({rate}); RSS steady after {steady_s:.1f} s")
            server_cpu = sum(cpu_after.values()) - sum(cpu_before.values())
            figures["kinds"][kind] = {
                "connections": count,
                "connect_s": seconds,
                "connects_per_s": count / seconds,
                "rss_before_kib": rss,
                "rss_after_kib": after,
                "steady_s": steady_s,
                "server_kib_per_connection": (after["server"] - rss["server"]) / count,
                "redis_kib_per_connection": (after["redis"] - rss["redis"]) / count,
                "kib_per_connection": (sum(after.values()) - sum(rss.values())) / count,
                "server_cpu_s_by_role": {role: cpu_after[role] - cpu_before[role] for role in cpu_after},
                "server_cpu_us_per_connect": 1e6 * server_cpu / count,
                "client_cpu_us_per_connect": 1e6 * sum(a["cpu_s"] for a in answers) / count,
            }
            rss = after
        idle_before, machine_before = by_role(pids, procstat.cpu_seconds), procstat.machine_times()
        await asyncio.sleep(options.idle_s)
        idle_after, machine_after = by_role(pids, procstat.cpu_seconds), procstat.machine_times()
        figures["idle_server_cores_by_role"] = {
            role: (idle_after[role] - idle_before[role]) / options.idle_s for role in idle_after
        }
        figures["idle_server_cores"] = sum(figures["idle_server_cores_by_role"].values())
        figures["idle_busy_cores"] = machine_after.busy_share_since(machine_before) * CPUS
        closed = await clients.command({"op": "close"}, "closed")
        dropped = {kind: sum(c["dropped"][kind] for c in closed) for kind in ("devices", "dashboards")}
        figures["dropped"] = dropped
        if any(dropped.values()):
            codes = [c["close_codes"] for c in closed]
            raise DroppedConnections(f"the server dropped idle connections: {dropped}; close codes {codes}")
    finally:
        await clients.stop()
    for kind, described in figures["kinds"].items():
        figures.update({f"{kind}_{key}": described[key] for key in KIND_FIGURES})
    return figures


def _measure_target(name: str, options: ConnectionsOptions, tmp: Path, say: Progress) -> dict[str, Any]:
    """Every run of one target, each on a fresh server; a failure ends the target's runs and is reported."""
    result: dict[str, Any] = {"target": name, "label": LABELS[name], "kinds": list(KINDS[name]), "runs": []}
    try:
        provisioned: ProvisionedTelehub | None = None
        if name == "telehub":
            say(f"connections: telehub: provisioning {options.connections:,} devices once, for every run")
            provisioned = provision_telehub(options.connections, tmp / "telehub-provisioned")
            result["provisioned"] = {"devices": provisioned.devices, "seconds": provisioned.seconds}
            say(f"connections: telehub: provisioned in {provisioned.seconds:.1f} s")
        for number in range(1, options.runs + 1):
            workdir = tmp / f"{name}-{number}"
            workdir.mkdir()
            say(f"connections: {name} run {number}/{options.runs}: starting the server")
            with server(name, options.connections, workdir, provisioned) as started:
                result["started_as"] = started.started_as
                result["runs"].append(uvloop.run(_measure(started, KINDS[name], options, workdir, say)))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc(limit=8)
        say(f"connections: {name} failed: {result['error'].splitlines()[0]}")
    keys = [f"{kind}_{key}" for kind in KINDS[name] for key in KIND_FIGURES] + ["idle_server_cores", "idle_busy_cores"]
    result["summary"] = summarize(result["runs"], keys)
    return result


def run(options: ConnectionsOptions, *, say: Progress = print) -> dict[str, Any]:
    """Measure every target; the results writer's dict."""
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    with tempfile.TemporaryDirectory(prefix="telehub-connections-") as tmp:
        targets = [_measure_target(name, options, Path(tmp), say) for name in options.targets]
    parameters = {
        "runs": options.runs,
        "connections": options.connections,
        "processes": options.processes,
        "connect_concurrency": options.connect_concurrency,
        "settle_s": options.settle_s,
        "steady_kib": STEADY_KIB,
        "steady_s": STEADY_S,
        "steady_every_s": STEADY_EVERY_S,
        "idle_s": options.idle_s,
    }
    return {"workload": "connections", "started_at": started_at, "parameters": parameters, "targets": targets}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks connections", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per target, each on a fresh server (default 3)")
    parser.add_argument(
        "--connections", type=int, default=9_000, help="idle connections of each kind (default 9,000; see above)"
    )
    parser.add_argument("--processes", type=int, default=4, help="client processes (default 4)")
    parser.add_argument(
        "--connect-concurrency", type=int, default=64, help="connections each process opens at once (default 64)"
    )
    parser.add_argument(
        "--settle", type=float, default=5.0, help="at most this many seconds before each memory reading (default 5)"
    )
    parser.add_argument(
        "--idle", type=float, default=25.0, help="seconds over which the idle server's CPU is read (default 25)"
    )
    parser.add_argument(
        "--target", default=",".join(TARGETS), help=f"comma list of {', '.join(TARGETS)} (default both)"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help=f"where to write (default {DEFAULT_RESULTS_DIR})"
    )
    args = parser.parse_args(argv)
    targets = tuple(dict.fromkeys(name.strip() for name in args.target.split(",") if name.strip()))
    if not targets or any(name not in TARGETS for name in targets):
        parser.error(f"--target takes a comma list of {', '.join(TARGETS)}")
    if min(args.runs, args.connections, args.processes, args.connect_concurrency, args.idle) <= 0 or args.settle < 0:
        parser.error("--runs, --connections, --processes and --connect-concurrency must be positive")
    options = ConnectionsOptions(
        runs=args.runs,
        connections=args.connections,
        processes=min(args.processes, args.connections),
        connect_concurrency=args.connect_concurrency,
        settle_s=args.settle,
        idle_s=args.idle,
        targets=targets,
    )
    # The servers started from here inherit the limit (telehub serve does not raise its own).
    raise_open_files_limit()
    result = run(options)
    command = benchmark_command("connections", argv)
    files = write_results(result, args.results_dir, command)
    show_written(files)
    return 0 if all(t["runs"] and "error" not in t for t in result["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
