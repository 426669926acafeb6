"""Real ``telehub`` processes for the tests: ``telehub serve`` on a free port, ``telehub admin`` run to its end.

Every wait is bounded by a multiple of ``TIMEOUT``; a server's output goes to a file that failure messages
quote. Whatever a test does, the context managers leave no process behind: the server, its workers and its
redis-server are stopped (and killed if they do not stop in time).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx2 as httpx

from benchmarks.procstat import children_of
from tests import secret_scan
from tests.conftest import TIMEOUT

__all__ = [
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "TELEHUB",
    "ServeProcess",
    "admin_hub_env",
    "admin_json",
    "cmdline",
    "free_port",
    "is_running",
    "process_tree",
    "redis_servers_in",
    "run_telehub",
    "serve",
    "socket_owners",
    "started",
    "telehub_env",
    "wait_for",
]

# The console script installed next to this interpreter (the project's virtualenv).
TELEHUB = Path(sys.executable).parent / "telehub"
API = "/api/v1"
START_TIMEOUT = 20 * TIMEOUT
STOP_TIMEOUT = 10 * TIMEOUT
# How often to try again when another program took the free port between our check and the server's bind.
PORT_ATTEMPTS = 3
POLL_S = 0.02
_log_numbers = itertools.count(1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def telehub_env(**variables: str) -> dict[str, str]:
    """This process's environment without any ``TELEHUB_*`` variable of the developer's, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEHUB_")}
    env["PYTHONUNBUFFERED"] = "1"
    if os.environ.get("TELEHUB_TEST_PARTITIONS"):  # the partitioned layout on one server: its processes too
        env["TELEHUB_PARTITIONS"] = os.environ["TELEHUB_TEST_PARTITIONS"]
    env.update(variables)
    return env


def admin_hub_env(secret: str, email: str, password: str, **variables: str) -> dict[str, str]:
    """``telehub_env`` for a server that tests drive hard: its own JWT secret, rate limits out of the way, and a
    bootstrap admin with this login."""
    return telehub_env(
        TELEHUB_SECRET=f"{secret}-" + "x" * 40,
        TELEHUB_RATE_LIMIT_PER_MINUTE="1000000",
        TELEHUB_RATE_LIMIT_BURST="100000",
        TELEHUB_BOOTSTRAP_EMAIL=email,
        TELEHUB_BOOTSTRAP_PASSWORD=password,
        **variables,
    )


def run_telehub(*args: str, env: Mapping[str, str], timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``telehub ARGS`` to completion and return its exit code and output."""
    secret_scan.note_command([str(TELEHUB), *args], env)  # its output is scanned through subprocess.run
    return subprocess.run(
        [str(TELEHUB), *args],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def admin_json(*args: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Run ``telehub admin ARGS``, which must succeed, and parse the JSON it prints."""
    result = run_telehub("admin", *args, env=env)
    assert result.returncode == 0, f"telehub admin {' '.join(args)} failed:\n{result.stderr}"
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def wait_for(condition: Callable[[], bool], *, timeout: float, message: str) -> float:
    """Poll ``condition`` until it holds; the seconds it took. Fails with ``message`` after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{message} (waited {timeout:.1f} s)")
        time.sleep(POLL_S)
    return time.monotonic() - started


# Processes as /proc shows them. A zombie (exited, not yet reaped) counts as gone.


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: [state, ppid, ...]; None when there is no such pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def is_running(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _start_ticks(pid: int) -> str | None:
    stat = _stat(pid)
    return None if stat is None else stat[19]


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def process_tree(root: int) -> list[int]:
    """The running descendants of ``root`` (children, grandchildren, ...), ``root`` excluded."""
    return children_of(root)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def redis_servers_in(data_dir: Path) -> list[int]:
    """The pids of the running redis-server processes whose working directory is ``data_dir``."""
    wanted = Path(data_dir).resolve()
    found = []
    for pid in _pids():
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if Path(exe).name.startswith("redis-server") and Path(cwd) == wanted:
            found.append(pid)
    return found


def socket_owners(port: int, pids: Sequence[int]) -> set[int]:
    """Which of ``pids`` hold an established TCP connection whose local port is ``port`` (server side)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    owners = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        owners.add(pid)
                        break
    return owners


class ServeProcess:
    """One ``telehub serve`` process started by the tests, in its own session (so it can get a Ctrl-C)."""

    def __init__(self, *, data_dir: Path, env: Mapping[str, str], args: Sequence[str], log_path: Path) -> None:
        self.data_dir = data_dir
        self.env = dict(env)
        self.args = list(args)
        self.log_path = log_path
        secret_scan.watch_serve_log(log_path, self.env, self.args)  # read at the end of the session
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        # Where in the log the current attempt's output begins.
        self._log_offset = 0
        # (pid, start time) of every process seen under the server, to clean up after a failed test.
        self._family: set[tuple[int, str]] = set()

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self._process is not None, "the server is not started"
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log_offset = self._log.tell()
        command = [str(TELEHUB), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.args]
        self._log.write(f"$ {' '.join(command)}\n".encode())
        self._log.flush()
        self._process = subprocess.Popen(
            command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_healthy(self) -> None:
        """Wait until ``GET /health`` answers 200; start again on another port if this one was taken."""
        for attempt in range(PORT_ATTEMPTS):
            if self._poll_health():
                self.remember_family()
                return
            attempt_output = self.log_path.read_bytes()[self._log_offset :].decode(errors="replace")
            port_taken = self.process.poll() is not None and "address already in use" in attempt_output
            if not port_taken or attempt == PORT_ATTEMPTS - 1:
                break
            self.start()
        raise AssertionError(f"telehub serve did not become healthy:\n{self.output()}")

    def _poll_health(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if httpx.get(self.url + API + "/health", timeout=TIMEOUT).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(POLL_S)
        return False

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + API, timeout=5 * TIMEOUT)

    def remember_family(self) -> list[int]:
        """The server's running descendants now (workers, redis-server); remembered for the final clean-up."""
        family = process_tree(self.pid)
        for pid in family:
            ticks = _start_ticks(pid)
            if ticks is not None:
                self._family.add((pid, ticks))
        return family

    def survivors(self) -> list[int]:
        """Processes once seen under the server that still run (the same pid and start time)."""
        return sorted(pid for pid, ticks in self._family if is_running(pid) and _start_ticks(pid) == ticks)

    def send(self, sig: signal.Signals, *, group: bool = False) -> None:
        """Send ``sig`` to the server, or to its whole process group as a terminal's Ctrl-C does."""
        if group:
            os.killpg(self.pid, sig)
        else:
            self.process.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"telehub serve did not exit within {timeout:.1f} s:\n{self.output()}") from None

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Stop the server with ``sig`` and return its exit code."""
        self.send(sig)
        return self.wait()

    def close(self) -> None:
        """End the server and everything it started, whatever state the test left them in."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for pid in self.survivors():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def started(
    *, data_dir: Path, env: Mapping[str, str], args: Sequence[str] = (), log_path: Path | None = None
) -> Iterator[ServeProcess]:
    """``telehub serve`` started (not yet waited for); stopped and cleaned up on exit."""
    hub = ServeProcess(
        data_dir=data_dir,
        env=env,
        args=args,
        log_path=log_path or data_dir.parent / f"serve-{data_dir.name}-{next(_log_numbers)}.log",
    )
    try:
        hub.start()
        yield hub
    finally:
        hub.close()


@contextlib.contextmanager
def serve(
    *, data_dir: Path, env: Mapping[str, str], args: Sequence[str] = (), log_path: Path | None = None
) -> Iterator[ServeProcess]:
    """``telehub serve`` answering ``GET /health`` with 200; stopped and cleaned up on exit."""
    with started(data_dir=data_dir, env=env, args=args, log_path=log_path) as hub:
        hub.wait_healthy()
        yield hub
