"""``telehub serve`` and ``telehub admin`` as real processes: start, stop, crash, restart, attach (API.md §7)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from hub import embedded_redis, keys
from hub.embedded_redis import EmbeddedRedis, redis_server_binary
from hub.redis_client import open_sync_client
from tests.conftest import TIMEOUT
from tests.processes import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    ServeProcess,
    admin_json,
    cmdline,
    free_port,
    is_running,
    redis_servers_in,
    run_telehub,
    serve,
    socket_owners,
    telehub_env,
    wait_for,
)
from tests.support import PASSWORD, bearer

ADMIN_EMAIL = "root@acme.example"
# Starts a redis-server in its own session and exits at once: the server is nobody's child, like one left
# behind by a crashed telehub whose death signal never came.
ORPHAN_LAUNCHER = (
    "import subprocess, sys\n"
    "server = subprocess.Popen(sys.argv[1:], start_new_session=True, stdin=subprocess.DEVNULL,\n"
    "                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "print(server.pid)\n"
)


@pytest.fixture
def bootstrap_env() -> dict[str, str]:
    return telehub_env(TELEHUB_BOOTSTRAP_EMAIL=ADMIN_EMAIL, TELEHUB_BOOTSTRAP_PASSWORD=PASSWORD)


def login(hub: ServeProcess, email: str, password: str = PASSWORD) -> dict[str, str]:
    """Log in over HTTP; the login reply's user, with the token under ``token``."""
    with hub.client() as http:
        response = http.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    return {**body["user"], "token": body["token"]}


def me(hub: ServeProcess, token: str) -> dict[str, str]:
    with hub.client() as http:
        response = http.get("/auth/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


def embedded_redis_client(data_dir: Path) -> redis.Redis:
    """A client of the data dir's running redis-server, through the connection file its owner wrote."""
    info = json.loads((data_dir / "redis.json").read_text())
    return redis.Redis(host=info["host"], port=info["port"], password=info["password"], decode_responses=True)


def redis_answers(data_dir: Path) -> bool:
    """The server named in the data dir's redis.json answers PING."""
    info = json.loads((data_dir / "redis.json").read_text())
    return embedded_redis.redis_answers(info["host"], info["port"], info["password"], timeout=TIMEOUT)


def assert_stopped_cleanly(hub: ServeProcess, data_dir: Path) -> None:
    """Nothing of the server runs any more, and its embedded Redis was stopped by it (files removed)."""
    assert redis_servers_in(data_dir) == [], hub.output()
    # Helpers such as multiprocessing's resource tracker leave when they see their parent's pipe close.
    wait_for(lambda: not hub.survivors(), timeout=5 * TIMEOUT, message=f"left running: {hub.survivors()}")
    assert not (data_dir / "redis.json").exists()
    assert not (data_dir / "redis.pid").exists()


@contextlib.contextmanager
def orphan_redis(data_dir: Path) -> Iterator[int]:
    """A redis-server on the data dir's redis.conf that is not a child of anyone here; its pid in redis.pid."""
    launched = subprocess.run(
        [sys.executable, "-c", ORPHAN_LAUNCHER, str(redis_server_binary()), str(data_dir / "redis.conf")],
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=True,
    )
    pid = int(launched.stdout)
    try:
        wait_for(lambda: redis_answers(data_dir), timeout=5 * TIMEOUT, message="the orphan did not start")
        (data_dir / "redis.pid").write_text(f"{pid}\n")
        yield pid
    finally:
        if pid in redis_servers_in(data_dir):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("stop", ["sigterm", "ctrl_c"])
def test_serve_stops_cleanly_and_keeps_its_data(tmp_path: Path, bootstrap_env: dict[str, str], stop: str) -> None:
    data_dir = tmp_path / "data"
    with serve(data_dir=data_dir, env=bootstrap_env) as hub:
        with hub.client() as http:
            health = http.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "healthy"
        assert health.json()["checks"]["redis"]["status"] == "healthy"
        admin = login(hub, ADMIN_EMAIL)
        assert admin["role"] == "admin"
        assert len(redis_servers_in(data_dir)) == 1
        assert (data_dir / "redis.json").exists()
        hub.remember_family()

        if stop == "sigterm":
            hub.send(signal.SIGTERM)
        else:
            # A terminal's Ctrl-C reaches the whole foreground process group.
            hub.send(signal.SIGINT, group=True)
        assert hub.wait() == 0, hub.output()
        assert_stopped_cleanly(hub, data_dir)
        # Redis was stopped by its owner after the HTTP server, not by the Ctrl-C itself.
        signals = [line for line in (data_dir / "redis.log").read_text().splitlines() if "Received SIG" in line]
        assert "Received SIGTERM" in signals[-1], signals

    with serve(data_dir=data_dir, env=bootstrap_env) as hub:
        again = login(hub, ADMIN_EMAIL)
        assert (again["id"], again["org_id"]) == (admin["id"], admin["org_id"])
        with embedded_redis_client(data_dir) as client:
            assert client.smembers(keys.ORGS) == {admin["org_id"]}
        assert "created organization" not in hub.output()


def test_redis_server_dies_with_a_killed_serve_and_an_orphan_is_reclaimed(
    tmp_path: Path, bootstrap_env: dict[str, str]
) -> None:
    data_dir = tmp_path / "data"
    with serve(data_dir=data_dir, env=bootstrap_env) as hub:
        admin = login(hub, ADMIN_EMAIL)
        [first_redis] = redis_servers_in(data_dir)
        hub.send(signal.SIGKILL)
        assert hub.wait() == -signal.SIGKILL
        wait_for(
            lambda: not is_running(first_redis),
            timeout=5 * TIMEOUT,
            message="the redis-server outlived its SIGKILLed owner",
        )

    with orphan_redis(data_dir) as orphan:
        assert redis_servers_in(data_dir) == [orphan]

        with serve(data_dir=data_dir, env=bootstrap_env) as hub:
            [new_redis] = redis_servers_in(data_dir)
            assert new_redis != orphan
            assert not is_running(orphan)
            assert login(hub, ADMIN_EMAIL)["org_id"] == admin["org_id"]


def test_serve_with_redis_url_uses_it_and_leaves_it_running(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_url: str
) -> None:
    data_dir = tmp_path / "data"
    with serve(data_dir=data_dir, env=telehub_env(), args=["--redis-url", redis_url]) as hub:
        with hub.client() as http:
            assert http.get("/health").json()["checks"]["redis"]["status"] == "healthy"
        assert redis_servers_in(data_dir) == []
        assert not (data_dir / "redis.json").exists()
        hub.remember_family()
        assert hub.stop(signal.SIGTERM) == 0, hub.output()
        wait_for(lambda: not hub.survivors(), timeout=5 * TIMEOUT, message=f"left running: {hub.survivors()}")
    assert is_running(redis_server.pid)
    with open_sync_client(redis_url) as client:
        assert client.ping()


def test_second_serve_on_a_data_dir_in_use_fails_fast(tmp_path: Path, bootstrap_env: dict[str, str]) -> None:
    data_dir = tmp_path / "data"
    with serve(data_dir=data_dir, env=bootstrap_env) as hub:
        started = time.monotonic()
        second = run_telehub(
            "serve", "--port", str(free_port()), "--data-dir", str(data_dir), env=bootstrap_env, timeout=STOP_TIMEOUT
        )
        assert time.monotonic() - started < 5 * TIMEOUT
        assert second.returncode == 2, second.stderr
        assert "already serving" in second.stderr
        assert "--data-dir" in second.stderr
        # The first one is untouched.
        assert (data_dir / "redis.json").exists()
        assert login(hub, ADMIN_EMAIL)["role"] == "admin"


def test_serve_with_two_workers(tmp_path: Path, bootstrap_env: dict[str, str]) -> None:
    data_dir = tmp_path / "data"
    with serve(data_dir=data_dir, env=bootstrap_env, args=["--workers", "2"]) as hub:
        family = hub.remember_family()
        workers = [pid for pid in family if "multiprocessing.spawn" in cmdline(pid)]
        assert len(workers) == 2, [cmdline(pid) for pid in family]
        assert len(redis_servers_in(data_dir)) == 1

        # New connections until each worker has accepted one; every request on them succeeds.
        with contextlib.ExitStack() as connections:
            for _ in range(100):
                http = connections.enter_context(hub.client())
                assert http.get("/health").status_code == 200
                if socket_owners(hub.port, workers) == set(workers):
                    break
            assert socket_owners(hub.port, workers) == set(workers)
        token = login(hub, ADMIN_EMAIL)["token"]
        with hub.client() as http:
            for _ in range(20):
                assert http.get("/auth/me", headers=bearer(token)).status_code == 200

        assert hub.stop(signal.SIGTERM) == 0, hub.output()
        assert_stopped_cleanly(hub, data_dir)


def test_workers_and_redis_end_with_a_killed_serve(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with serve(data_dir=data_dir, env=telehub_env(), args=["--workers", "2"]) as hub:
        family = hub.remember_family()
        assert len(family) >= 3  # two workers and redis-server
        hub.send(signal.SIGKILL)
        hub.wait()
        wait_for(lambda: not hub.survivors(), timeout=5 * TIMEOUT, message="processes outlived their SIGKILLed owner")
        assert redis_servers_in(data_dir) == []
        with pytest.raises(httpx.ConnectError):
            httpx.get(hub.url + "/api/v1/health", timeout=TIMEOUT)


def test_admin_commands_print_json_with_and_without_a_running_server(
    tmp_path: Path, bootstrap_env: dict[str, str]
) -> None:
    data_dir = tmp_path / "data"
    env = telehub_env()
    store = ("--data-dir", str(data_dir))

    # No server: each command starts the embedded Redis and stops it again.
    org = admin_json("create-org", "--name", "acme", *store, env=env)
    assert org["id"].startswith("org_")
    assert org["name"] == "acme"
    user = admin_json(
        "create-user",
        "--org",
        org["id"],
        "--email",
        "ops@acme.example",
        "--password",
        PASSWORD,
        "--role",
        "operator",
        *store,
        env=env,
    )
    assert (user["email"], user["role"], user["org_id"]) == ("ops@acme.example", "operator", org["id"])
    key = admin_json("create-api-key", "--org", org["id"], "--role", "viewer", "--name", "ci", *store, env=env)
    assert key["key"].startswith("sk_live_")
    assert redis_servers_in(data_dir) == []
    assert not (data_dir / "redis.json").exists()

    with serve(data_dir=data_dir, env=env) as hub:
        assert login(hub, "ops@acme.example")["id"] == user["id"]
        assert me(hub, key["key"]) == {"kind": "api_key", "id": key["id"], "org_id": org["id"], "role": "viewer"}
        [server_redis] = redis_servers_in(data_dir)

        # While it serves: the commands attach to its Redis and leave it running.
        other = admin_json("create-org", "--name", "globex", *store, env=env)
        admin_json(
            "create-user",
            "--org",
            other["id"],
            "--email",
            "boss@globex.example",
            "--password",
            PASSWORD,
            "--role",
            "admin",
            *store,
            env=env,
        )
        other_key = admin_json(
            "create-api-key", "--org", other["id"], "--role", "admin", "--name", "b", *store, env=env
        )
        assert login(hub, "boss@globex.example")["org_id"] == other["id"]
        assert me(hub, other_key["key"])["org_id"] == other["id"]
        assert redis_servers_in(data_dir) == [server_redis]
        assert (data_dir / "redis.json").exists()

        unknown = run_telehub(
            "admin",
            "create-user",
            "--org",
            "org_nope",
            "--email",
            "x@acme.example",
            "--password",
            PASSWORD,
            "--role",
            "viewer",
            *store,
            env=env,
        )
        assert unknown.returncode != 0
        assert "telehub admin create-org" in unknown.stderr
        assert unknown.stdout == ""


@pytest.mark.parametrize("command", [["serve"], ["admin", "create-org", "--name", "acme"]])
def test_invalid_environment_exits_2_naming_the_variable(tmp_path: Path, command: list[str]) -> None:
    env = telehub_env(TELEHUB_PORT="abc", TELEHUB_DATA_DIR=str(tmp_path / "data"))
    result = run_telehub(*command, env=env)
    assert result.returncode == 2
    assert "TELEHUB_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert redis_servers_in(tmp_path / "data") == []


def test_invalid_value_names_the_flag_and_the_variable(tmp_path: Path) -> None:
    result = run_telehub("serve", "--data-dir", str(tmp_path / "data"), env=telehub_env(TELEHUB_WORKERS="0"))
    assert result.returncode == 2
    assert "--workers / TELEHUB_WORKERS" in result.stderr


def test_admin_with_redis_url_writes_no_files(tmp_path: Path, redis_url: str) -> None:
    """An admin command against an external Redis needs no data dir: it must not make one (nor a secret)."""
    data_dir = tmp_path / "unused"
    env = telehub_env(TELEHUB_REDIS_URL=redis_url, TELEHUB_DATA_DIR=str(data_dir))
    org = admin_json("create-org", "--name", "external", env=env)
    assert org["id"].startswith("org_")
    assert not data_dir.exists()
