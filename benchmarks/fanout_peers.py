"""The targets of ``fanout``, started on loopback: telehub, the broadcast floor, Mosquitto, NATS, python-socketio.

Each is handed to the run as a ``FanoutTarget``: where its devices publish (a ``RunningTarget``, whose
processes are counted for the server's CPU by role), where its dashboards subscribe, and, for the table,
what it does with each frame. The references do less than telehub, which authenticates the device's
connection, validates the frame, stores it durably in Redis (AOF) and acks it, then reads it back from the
stream and fans it out per tenant with an offset and epoch for recovery:

- floor: ``fanout_floor.py``, a bare ``websockets`` server that relays the bytes (no auth, no storage).
- Mosquitto 2 (``peers.py`` starts it as for ingest-rows): QoS 0 publishes and subscriptions, in memory.
- NATS server 2.9 core pub/sub (Debian's ``nats-server``, ``install_peers.sh``): subjects
  ``devices.<id>.telemetry``, subscriptions ``devices.*.telemetry`` and exact; in memory.
- python-socketio (``fanout_socketio.py``) under uvicorn with ``AsyncRedisManager`` on a redis-server of its
  own (``hub.embedded_redis``, as telehub's): rooms ``all`` and ``device:<id>``; Redis only as pub/sub.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks import fanout_floor, telehub_target
from benchmarks.fanout_clients import DASHBOARD_PATH
from benchmarks.fanout_socketio import REDIS_URL_VARIABLE
from benchmarks.loadrun import PACKAGE_ROOT, Endpoint
from benchmarks.peers import _mosquitto, _program, _wait_for_port
from benchmarks.servers import RunningTarget, ServerProcess, free_port
from hub.embedded_redis import EmbeddedRedis

__all__ = ["LABELS", "TARGETS", "FanoutTarget", "device_ids", "started"]

TARGETS = ("telehub", "floor", "mosquitto", "nats", "socketio")
LABELS = {
    "telehub": "telehub",
    "floor": "floor (bare websockets broadcast)",
    "mosquitto": "Mosquitto 2, QoS 0",
    "nats": "NATS 2.9 core pub/sub",
    "socketio": "python-socketio + Redis manager",
}
# What each target does with a frame, for the table.
WORK = {
    "telehub": "auth'd device; validates, stores in Redis Streams (AOF), acks; fans out per tenant with offsets",
    "floor": "relays the bytes, one socket write per delivery (websockets.broadcast); no auth, no storage",
    "mosquitto": "routes QoS 0 in memory; no auth, no storage",
    "nats": "routes in memory; no auth, no storage",
    "socketio": "decodes JSON, one Redis PUBLISH per frame, emits to rooms; no auth, no storage",
}


def device_ids(devices: int) -> tuple[str, ...]:
    """The devices' ids on every target: the ids telehub_target's provisioning gives them."""
    return tuple(f"bench-{number:05d}" for number in range(devices))


@dataclass(frozen=True)
class FanoutTarget:
    """A target that is up: its devices' side (``running``), its dashboards' side, and how to read it."""

    name: str
    running: RunningTarget
    dashboards: Endpoint
    device_ids: tuple[str, ...]
    # The target acks every frame (telehub): the publishers keep a window of unacked frames.
    acks: bool

    @property
    def label(self) -> str:
        return LABELS[self.name]

    @property
    def work(self) -> str:
        return WORK[self.name]


@contextlib.contextmanager
def _telehub(devices: int, workdir: Path, workers: int) -> Iterator[FanoutTarget]:
    with telehub_target.started(devices=devices, workdir=workdir, workers=workers, dashboard_role="viewer") as running:
        endpoint = running.endpoint
        dashboards = Endpoint(
            protocol="telehub-ws",
            host=endpoint.host,
            port=endpoint.port,
            path=DASHBOARD_PATH,
            credentials=(str(endpoint.options["dashboard_key"]),),
        )
        yield FanoutTarget("telehub", running, dashboards, device_ids(devices), acks=True)


@contextlib.contextmanager
def _floor(devices: int, workdir: Path) -> Iterator[FanoutTarget]:
    with fanout_floor.started(device_ids=device_ids(devices), workdir=workdir) as running:
        dashboards = Endpoint("telehub-ws", "127.0.0.1", running.endpoint.port, DASHBOARD_PATH, ())
        yield FanoutTarget("floor", running, dashboards, device_ids(devices), acks=False)


@contextlib.contextmanager
def _mosquitto_qos0(devices: int, workdir: Path) -> Iterator[FanoutTarget]:
    with _mosquitto(devices, workdir) as running:
        dashboards = Endpoint("mqtt", "127.0.0.1", running.endpoint.port, "", ())
        yield FanoutTarget("mosquitto", running, dashboards, device_ids(devices), acks=False)


@contextlib.contextmanager
def _nats(devices: int, workdir: Path) -> Iterator[FanoutTarget]:
    port = free_port()
    server = ServerProcess(
        [_program("nats-server"), "--addr", "127.0.0.1", "--port", str(port)], log_path=workdir / "nats.log"
    )
    try:
        _wait_for_port(server, port)
        running = RunningTarget(
            name="nats",
            endpoint=Endpoint("nats", "127.0.0.1", port, "", device_ids(devices)),
            server_processes=lambda: server.processes(lambda pid: "nats-server"),
            output=server.output,
            started_as=f"nats-server --addr 127.0.0.1 --port {port}",
        )
        dashboards = Endpoint("nats", "127.0.0.1", port, "", ())
        yield FanoutTarget("nats", running, dashboards, device_ids(devices), acks=False)
    finally:
        server.stop()


@contextlib.contextmanager
def _socketio(devices: int, workdir: Path) -> Iterator[FanoutTarget]:
    port = free_port()
    with EmbeddedRedis(workdir / "redis") as redis:
        env = {**os.environ, REDIS_URL_VARIABLE: redis.url, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "benchmarks.fanout_socketio", "--port", str(port)]
        server = ServerProcess(command, log_path=workdir / "socketio.log", env=env, cwd=PACKAGE_ROOT)
        try:
            _wait_for_port(server, port)
            running = RunningTarget(
                name="socketio",
                endpoint=Endpoint("socketio", "127.0.0.1", port, "", device_ids(devices)),
                server_processes=lambda: {**server.processes(lambda pid: "socketio"), redis.pid: "redis"},
                output=server.output,
                started_as=f"python -m benchmarks.fanout_socketio --port {port} (uvicorn, uvloop; "
                "AsyncRedisManager on an embedded redis-server)",
            )
            dashboards = Endpoint("socketio", "127.0.0.1", port, "", ())
            yield FanoutTarget("socketio", running, dashboards, device_ids(devices), acks=False)
        finally:
            server.stop()


@contextlib.contextmanager
def started(name: str, *, devices: int, workdir: Path, telehub_workers: int = 1) -> Iterator[FanoutTarget]:
    """Target ``name`` running on loopback with ``devices`` devices; stopped on exit."""
    if name == "telehub":
        with _telehub(devices, workdir, telehub_workers) as target:
            yield target
    elif name == "floor":
        with _floor(devices, workdir) as target:
            yield target
    elif name == "mosquitto":
        with _mosquitto_qos0(devices, workdir) as target:
            yield target
    elif name == "nats":
        with _nats(devices, workdir) as target:
            yield target
    elif name == "socketio":
        with _socketio(devices, workdir) as target:
            yield target
    else:
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
