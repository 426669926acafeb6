"""Server processes the benchmark starts (telehub, the floor, the peers) and what the harness knows of them.

``ServerProcess`` runs a command in its own session with its output in a log file, tells its pids and their
roles (for the CPU accounting), and stops it with SIGTERM, killing it, and any process it started, only if
they outlive the grace period. ``RunningTarget`` is what a target hands the harness once it is ready.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from benchmarks import procstat
from benchmarks.loadrun import Endpoint

__all__ = ["RunningTarget", "ServerProcess", "free_port"]

STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RunningTarget:
    """A target that is up: how to reach it, its processes by role (pid -> role), and how it was started."""

    name: str
    endpoint: Endpoint
    server_processes: Callable[[], Mapping[int, str]]
    started_as: str
    # The end of the server's output, for failure reports.
    output: Callable[[], str]


class ServerProcess:
    """One server command run by the benchmark, its output in ``log_path``."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        capture_stdout: bool = False,
    ) -> None:
        self.command = list(command)
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else self._log,
            stderr=self._log,
            start_new_session=True,
        )
        # (pid, start ticks) of every descendant seen, so that none outlives the benchmark.
        self._family: set[tuple[int, int]] = set()

    @property
    def pid(self) -> int:
        return self.process.pid

    def read_line(self, timeout: float) -> bytes:
        """The next line the server prints on stdout (with ``capture_stdout``)."""
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"{self.command[0]} printed nothing within {timeout:.0f} s:\n{self.output()}")
        return stdout.readline()

    def exited(self) -> bool:
        return self.process.poll() is not None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def processes(self, classify: Callable[[int], str]) -> dict[int, str]:
        """This server and its running descendants, pid -> role; remembered for the final clean-up."""
        pids = [self.pid, *procstat.children_of(self.pid)]
        for pid in pids:
            ticks = procstat.start_ticks(pid)
            if ticks is not None:
                self._family.add((pid, ticks))
        return {pid: classify(pid) for pid in pids}

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; then kill any descendant still running. The exit code."""
        self.processes(lambda pid: "")
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        deadline = time.monotonic() + timeout
        for pid, ticks in sorted(self._family):
            while procstat.is_alive(pid, ticks) and time.monotonic() < deadline:
                time.sleep(0.05)
            if procstat.is_alive(pid, ticks):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
        return self.process.returncode
