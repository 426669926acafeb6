"""The ``connections`` workload's servers, and how their memory is read.

telehub is provisioned once per invocation (``provision_telehub``): a server makes the devices and the
dashboards' viewer API key over REST, as ``telehub_target`` does for every workload, and is stopped, which
flushes its embedded Redis's AOF. Every run then starts a fresh ``telehub serve`` on a copy of that data dir
(``server``): the same devices, keys and state in every run, without the REST provisioning (9,000 devices take
about 40 s here) in each. python-socketio starts as for ``fanout`` (``fanout_peers``).

``steady_rss`` reads the RSS of the server's processes until it holds steady: its total moved by at most
``STEADY_KIB`` over the last ``STEADY_S`` seconds (read every ``STEADY_EVERY_S``), or ``most_s`` seconds have
passed, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import fanout_peers, telehub_target
from benchmarks.fanout_peers import device_ids

__all__ = [
    "STEADY_EVERY_S",
    "STEADY_KIB",
    "STEADY_S",
    "ProvisionedTelehub",
    "Server",
    "by_role",
    "provision_telehub",
    "rss_kib",
    "server",
    "steady_rss",
]

# The RSS is steady once its total (server process + redis-server) moved by at most this much over STEADY_S:
# 256 KiB is under 0.03 KiB per connection at 9,000 connections, below the table's precision.
STEADY_KIB = 256.0
STEADY_S = 1.0
STEADY_EVERY_S = 0.25
DATA_DIR = "telehub-data"


@dataclass(frozen=True)
class Server:
    """A started target: where the clients go, with what, and its processes (pid -> role)."""

    host: str
    port: int
    started_as: str
    processes: Callable[[], Mapping[int, str]]
    orders: dict[str, Any]


@dataclass(frozen=True)
class ProvisionedTelehub:
    """A stopped telehub's data dir with ``devices`` devices and a viewer API key, and the keys to use them."""

    data_dir: Path
    devices: int
    device_keys: tuple[str, ...]
    dashboard_key: str
    # Seconds from starting the server to its stop, provisioning included.
    seconds: float


def _telehub_env(connections: int) -> dict[str, str]:
    return {"TELEHUB_DASHBOARD_MAX_CONNECTIONS": str(connections)}


def provision_telehub(connections: int, workdir: Path) -> ProvisionedTelehub:
    """``connections`` devices with a key each and a viewer API key, made over REST on a server then stopped."""
    began = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    with telehub_target.started(
        devices=connections, workdir=workdir, dashboard_role="viewer", env=_telehub_env(connections)
    ) as running:
        keys, dashboard_key = running.endpoint.credentials, running.endpoint.options["dashboard_key"]
    return ProvisionedTelehub(workdir / DATA_DIR, connections, keys, dashboard_key, time.monotonic() - began)


@contextlib.contextmanager
def server(name: str, connections: int, workdir: Path, provisioned: ProvisionedTelehub | None) -> Iterator[Server]:
    """Target ``name`` freshly started; telehub on a copy of ``provisioned``'s data dir. Stopped on exit."""
    ids = list(device_ids(connections))
    if name == "telehub":
        if provisioned is None or provisioned.devices != connections:
            raise ValueError(f"telehub needs a data dir provisioned with {connections} devices")
        shutil.copytree(provisioned.data_dir, workdir / DATA_DIR)
        # The organization exists: the bootstrap admin (and so this password) is not used again.
        process, port, command = telehub_target._start(workdir, 1, secrets.token_urlsafe(16), _telehub_env(connections))
        try:
            orders = {
                "device_path": telehub_target.DEVICE_PATH,
                "device_keys": list(provisioned.device_keys),
                "dashboard_protocol": "telehub-ws",
                "credential": provisioned.dashboard_key,
                "encoding": "json",
                "dashboard_devices": ids,
            }
            started_as = f"TELEHUB_DASHBOARD_MAX_CONNECTIONS={connections} " + " ".join(["telehub", *command[1:]])
            yield Server("127.0.0.1", port, started_as, lambda: process.processes(telehub_target._role), orders)
        finally:
            process.stop()
    else:
        with fanout_peers.started("socketio", devices=1, workdir=workdir) as target:
            orders = {"dashboard_protocol": "socketio", "dashboard_devices": ids}
            running = target.running
            yield Server(
                target.dashboards.host, target.dashboards.port, running.started_as, running.server_processes, orders
            )


def rss_kib(pid: int) -> int | None:
    """The resident set of ``pid`` in KiB (``VmRSS``); None when it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), None)


def by_role(pids: Mapping[int, str], read: Callable[[int], float | int | None]) -> dict[str, float]:
    """``read`` of every process, summed by role: ``redis`` for redis-server, ``server`` for the rest."""
    totals: dict[str, float] = {"server": 0.0, "redis": 0.0}
    for pid, role in pids.items():
        value = read(pid)
        if value is not None:
            totals["redis" if role == "redis" else "server"] += value
    return totals


async def steady_rss(
    read: Callable[[], dict[str, float]],
    most_s: float,
    *,
    steady_kib: float = STEADY_KIB,
    steady_s: float = STEADY_S,
    every_s: float = STEADY_EVERY_S,
) -> tuple[dict[str, float], float]:
    """``read()`` (RSS by role, KiB) once its total has held within ``steady_kib`` for ``steady_s``, or when
    ``most_s`` have passed; that reading and the seconds waited."""
    began = time.monotonic()
    readings: list[tuple[float, float]] = []
    while True:
        now, rss = time.monotonic(), read()
        readings.append((now, sum(rss.values())))
        if now - began >= most_s:
            return rss, now - began
        # The readings over at least the last steady_s: from the latest one taken steady_s or more ago.
        start = max((index for index, (at, _) in enumerate(readings) if at <= now - steady_s), default=None)
        if start is not None:
            totals = [total for _, total in readings[start:]]
            if max(totals) - min(totals) <= steady_kib:
                return rss, now - began
        await asyncio.sleep(min(every_s, max(0.0, began + most_s - time.monotonic())))
