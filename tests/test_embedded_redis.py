"""EmbeddedRedis on its own: a real redis-server in a data dir, private, durable, shared by attaching."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
from pathlib import Path

import pytest
import redis

from hub import embedded_redis
from hub.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from tests.conftest import TIMEOUT
from tests.processes import is_running, redis_servers_in


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True)


def test_start_and_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with EmbeddedRedis(data_dir) as server:
        assert server.owner
        assert server.data_dir == data_dir.resolve()
        assert redis_servers_in(data_dir) == [server.pid]
        with client(server) as connection:
            assert connection.ping()
        pid = server.pid
        assert json.loads((data_dir / "redis.json").read_text())["pid"] == pid
    assert not server.owner
    assert not is_running(pid)
    assert not (data_dir / "redis.json").exists()
    assert not (data_dir / "redis.pid").exists()
    with pytest.raises(EmbeddedRedisError):
        _ = server.url


def test_files_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with EmbeddedRedis(data_dir) as server:
        with client(server) as connection:
            connection.set("k", "v")
        assert mode(data_dir) == 0o700
        for name in ("redis.conf", "redis.json", "appendonly.aof", "redis.log"):
            assert mode(data_dir / name) == 0o600, name


def test_password_is_required(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "data") as server:
        info = json.loads((server.data_dir / "redis.json").read_text())
        assert len(info["password"]) >= 32
        # Raw RESP, so that no client library retries or hides the server's answer.
        with socket.create_connection((info["host"], info["port"]), timeout=TIMEOUT) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert sock.recv(256).startswith(b"-NOAUTH")
            sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$5\r\nwrong\r\n")
            assert sock.recv(256).startswith(b"-WRONGPASS")


@pytest.mark.parametrize("fsync", ["always", "everysec", "no"])
def test_append_only_file_with_the_chosen_fsync(tmp_path: Path, fsync: str) -> None:
    with EmbeddedRedis(tmp_path / "data", fsync=fsync) as server, client(server) as connection:
        assert connection.config_get("appendonly") == {"appendonly": "yes"}
        assert connection.config_get("appendfsync") == {"appendfsync": fsync}
        assert connection.config_get("bind")["bind"] == "127.0.0.1"
        # Redis rewrites on its own only as a backstop (hub/aof_compaction.py asks when the file is twice the data).
        assert connection.config_get("auto-aof-rewrite-percentage") == {"auto-aof-rewrite-percentage": "400"}
        assert connection.config_get("auto-aof-rewrite-min-size") == {"auto-aof-rewrite-min-size": str(16 * 2**30)}


def test_data_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with EmbeddedRedis(data_dir, fsync="always") as server, client(server) as connection:
        connection.hset("th:test", mapping={"a": "1"})
    with EmbeddedRedis(data_dir) as server, client(server) as connection:
        assert connection.hgetall("th:test") == {"a": "1"}


def test_a_second_instance_attaches_and_does_not_stop_the_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with EmbeddedRedis(data_dir) as first:
        second = EmbeddedRedis(data_dir)
        assert second.start() == first.url
        assert not second.owner
        assert second.pid == first.pid
        second.stop()
        assert is_running(first.pid)
        assert (data_dir / "redis.json").exists()
        with client(first) as connection:
            assert connection.ping()


def test_attaching_fails_with_advice_when_the_owner_has_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setattr(embedded_redis, "START_TIMEOUT_S", 0.2 * TIMEOUT)
    with (data_dir / "telehub.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(EmbeddedRedisError, match="--redis-url"):
            EmbeddedRedis(data_dir).start()
    assert redis_servers_in(data_dir) == []


def test_a_stale_pid_file_naming_another_process_is_left_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # A crash long ago; the pid now belongs to an unrelated process (this one).
    (data_dir / "redis.pid").write_text(f"{os.getpid()}\n")
    with EmbeddedRedis(data_dir) as server:
        assert (data_dir / "redis.pid").read_text().strip() == str(server.pid)
