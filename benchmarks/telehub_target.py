"""How the benchmark runs telehub: ``telehub serve`` on a free loopback port, provisioned through its REST API.

The server is the ``telehub`` console script next to this interpreter, with its embedded redis-server in a
temporary data directory and REST rate limits raised out of the way. Once ``GET /api/v1/health`` answers 200,
the bootstrap admin logs in and makes the devices and their keys (``POST /devices``, ``POST /devices/{id}/keys``)
from a small thread pool. The load then goes to ``/api/v1/ws/device`` as for the floor; the server's CPU is
counted for the hub process(es) and the redis-server separately. SIGTERM stops it all at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx

from benchmarks import procstat
from benchmarks.loadrun import Endpoint
from benchmarks.servers import RunningTarget, ServerProcess, free_port

__all__ = ["DEVICE_PATH", "TELEHUB", "started"]

TELEHUB = Path(sys.executable).parent / "telehub"
API = "/api/v1"
DEVICE_PATH = API + "/ws/device"
START_TIMEOUT_S = 60.0
PORT_ATTEMPTS = 3
# Concurrent REST requests while provisioning devices.
PROVISION_THREADS = 8
EMAIL = "bench@example.com"


def _environment(password: str) -> dict[str, str]:
    """This process's environment without any TELEHUB_* of the developer's, plus the benchmark's settings."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TELEHUB_")}
    env.update(
        PYTHONUNBUFFERED="1",
        TELEHUB_BOOTSTRAP_EMAIL=EMAIL,
        TELEHUB_BOOTSTRAP_PASSWORD=password,
        TELEHUB_RATE_LIMIT_PER_MINUTE="100000000",
        TELEHUB_RATE_LIMIT_BURST="10000000",
        TELEHUB_LOG_LEVEL="warning",
    )
    return env


def _wait_healthy(server: ServerProcess, base_url: str) -> bool:
    """True once health answers 200; False when the server exited first (e.g. its port was taken)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.exited():
            return False
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(base_url + API + "/health", timeout=2.0).status_code == 200:
                return True
        time.sleep(0.05)
    raise TimeoutError(f"telehub did not become healthy within {START_TIMEOUT_S:.0f} s:\n{server.output()}")


def _start(
    workdir: Path, workers: int, password: str, env: Mapping[str, str] | None = None
) -> tuple[ServerProcess, int, list[str]]:
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        command = [str(TELEHUB), "serve", "--port", str(port), "--data-dir", str(workdir / "telehub-data")]
        if workers > 1:
            command += ["--workers", str(workers)]
        server = ServerProcess(command, log_path=workdir / "telehub.log", env={**_environment(password), **(env or {})})
        if _wait_healthy(server, f"http://127.0.0.1:{port}"):
            return server, port, command
        output = server.output()
        server.stop()
        if "address already in use" not in output.lower() or attempt == PORT_ATTEMPTS - 1:
            raise RuntimeError(f"telehub serve exited during start:\n{output}")
    raise AssertionError("unreachable")


def _provision(client: httpx.Client, devices: int) -> list[str]:
    """Make ``devices`` devices and one key each; their keys in device order."""

    def make(number: int) -> str:
        device_id = f"bench-{number:05d}"
        created = client.post("/devices", json={"id": device_id, "name": f"bench {number}", "type": "bench"})
        if created.status_code != 201:
            raise RuntimeError(f"POST /devices answered {created.status_code}: {created.text[:300]}")
        keyed = client.post(f"/devices/{device_id}/keys")
        if keyed.status_code != 201:
            raise RuntimeError(f"POST /devices/{device_id}/keys answered {keyed.status_code}: {keyed.text[:300]}")
        key: str = keyed.json()["device_key"]
        return key

    with ThreadPoolExecutor(PROVISION_THREADS, thread_name_prefix="provision") as pool:
        return list(pool.map(make, range(devices)))


def _role(pid: int) -> str:
    return "redis" if procstat.exe_name(pid).startswith("redis-server") else "telehub"


@contextlib.contextmanager
def started(
    *,
    devices: int,
    workdir: Path,
    workers: int = 1,
    dashboard_role: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[RunningTarget]:
    """telehub serving on a free loopback port with ``devices`` devices made; stopped with SIGTERM on exit.

    With ``dashboard_role``, also an API key of that role for dashboards, in ``endpoint.options["dashboard_key"]``.
    ``env``: more ``TELEHUB_*`` settings for the server (a workload's limits), over the benchmark's own.
    """
    password = secrets.token_urlsafe(16)
    server, port, command = _start(workdir, workers, password, env or {})
    try:
        base_url = f"http://127.0.0.1:{port}{API}"
        limits = httpx.Limits(max_connections=PROVISION_THREADS)
        with httpx.Client(base_url=base_url, timeout=30.0, limits=limits) as client:
            login = client.post("/auth/login", json={"email": EMAIL, "password": password})
            if login.status_code != 200:
                raise RuntimeError(f"POST /auth/login answered {login.status_code}: {login.text[:300]}")
            client.headers["Authorization"] = f"Bearer {login.json()['token']}"
            keys = _provision(client, devices)
            options: dict[str, str] = {}
            if dashboard_role is not None:
                made = client.post("/api-keys", json={"name": "bench dashboards", "role": dashboard_role})
                if made.status_code != 201:
                    raise RuntimeError(f"POST /api-keys answered {made.status_code}: {made.text[:300]}")
                options["dashboard_key"] = made.json()["key"]
        yield RunningTarget(
            name="telehub",
            endpoint=Endpoint(
                protocol="telehub-ws",
                host="127.0.0.1",
                port=port,
                path=DEVICE_PATH,
                credentials=tuple(keys),
                options=options,
            ),
            server_processes=lambda: server.processes(_role),
            output=server.output,
            started_as=" ".join(["telehub", *command[1:]]),
        )
    finally:
        server.stop()
