"""One measured run: start the load generator's workers, give them one start instant, collect their counts.

The parent reads the server's CPU time from ``/proc`` at the same start instant (the workers read their own
at that instant on the shared monotonic clock) and again ``seconds`` later; the workers report theirs over the
same window. Whatever happens, every worker process is ended and reaped before ``run_load`` returns.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from benchmarks import procstat
from benchmarks.workloads import Workload

__all__ = ["Endpoint", "LoadRun", "run_load"]

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Seconds for every worker to open its connections; between "go" and the start; extra to finish after draining.
READY_TIMEOUT_S = 120.0
START_DELAY_S = 0.3
FINISH_MARGIN_S = 30.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how the load generator reaches a target, and as which devices."""

    # telehub-ws (telehub and the floor), mqtt (Mosquitto), influx-http (InfluxDB).
    protocol: str
    host: str
    port: int
    path: str
    credentials: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    # A cap on the frames in flight per device, where more would only queue bytes (pipelined HTTP/1.1).
    max_window: int | None = None


@dataclass(frozen=True)
class LoadRun:
    """What one run measured: the workers' counts and CPU, the server's CPU by role, the machine's load."""

    elapsed_s: float
    # Frames in flight per device, as run.
    window: int
    workers: list[dict[str, Any]]
    server_cpu_s: dict[str, float]
    machine_busy_share: float
    softirq_cores: float

    def total(self, key: str) -> int:
        return sum(int(w[key]) for w in self.workers)

    @property
    def loadgen_cpu_s(self) -> float:
        return sum(float(w["cpu_s"]) for w in self.workers)


class _Worker:
    """One load generator process and the lines it prints, read by a thread into a queue."""

    def __init__(self, orders_path: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.loadgen", str(orders_path)],
            cwd=PACKAGE_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"loadgen-{self.process.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def expect(self, event: str, deadline: float) -> dict[str, Any]:
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"load generator {self.process.pid} did not report {event!r} in time") from None
            if line is None:
                raise RuntimeError(f"load generator {self.process.pid} exited early:\n{self.log_tail()}")
            message: dict[str, Any] = json.loads(line)
            if message["event"] == "error":
                raise RuntimeError(f"load generator {self.process.pid}: {message['message']}")
            if message["event"] == event:
                return message

    def go(self, start_at: float) -> None:
        stdin: IO[bytes] | None = self.process.stdin
        assert stdin is not None
        stdin.write(f"go {start_at!r}\n".encode())
        stdin.flush()

    def log_tail(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-2000:]

    def close(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=FINISH_MARGIN_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=FINISH_MARGIN_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


def _cpu_by_pid(pids: Mapping[int, str]) -> dict[int, float]:
    readings = {pid: procstat.cpu_seconds(pid) for pid in pids}
    return {pid: value for pid, value in readings.items() if value is not None}


def run_load(
    endpoint: Endpoint,
    workload: Workload,
    *,
    processes: int,
    seconds: float,
    window: int,
    base_ts_ms: int,
    server_processes: Callable[[], Mapping[int, str]],
    workdir: Path,
    drain_timeout_s: float = 10.0,
    connect_concurrency: int = 64,
    prebuilt: int | None = None,
) -> LoadRun:
    """Drive ``endpoint`` with ``processes`` workers for ``seconds``; ``server_processes`` maps pid -> role."""
    processes = max(1, min(processes, len(endpoint.credentials)))
    window = min(window, endpoint.max_window or window)
    workers: list[_Worker] = []
    try:
        for number in range(processes):
            orders = {
                "workload": workload.name,
                "protocol": endpoint.protocol,
                "host": endpoint.host,
                "port": endpoint.port,
                "path": endpoint.path,
                "options": dict(endpoint.options),
                "credentials": list(endpoint.credentials[number::processes]),
                "window": window,
                "seconds": seconds,
                "drain_timeout_s": drain_timeout_s,
                "connect_concurrency": connect_concurrency,
                "base_ts_ms": base_ts_ms,
                "prebuilt": workload.prebuilt_frames if prebuilt is None else prebuilt,
            }
            orders_path = workdir / f"loadgen-{number}.json"
            orders_path.write_text(json.dumps(orders))
            workers.append(_Worker(orders_path, workdir / f"loadgen-{number}.log"))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for worker in workers:
            worker.expect("ready", deadline)
        servers = dict(server_processes())
        start_at = time.monotonic() + START_DELAY_S
        for worker in workers:
            worker.go(start_at)
        time.sleep(max(0.0, start_at - time.monotonic()))
        server_before, machine_before = _cpu_by_pid(servers), procstat.machine_times()
        time.sleep(max(0.0, start_at + seconds - time.monotonic()))
        server_after, machine_after = _cpu_by_pid(servers), procstat.machine_times()
        deadline = time.monotonic() + drain_timeout_s + FINISH_MARGIN_S
        results = [worker.expect("result", deadline) for worker in workers]
    finally:
        for worker in workers:
            worker.close()
    server_cpu: dict[str, float] = {}
    for pid, before in server_before.items():
        if pid in server_after:
            role = servers[pid]
            server_cpu[role] = server_cpu.get(role, 0.0) + server_after[pid] - before
    return LoadRun(
        elapsed_s=max(float(r["elapsed_s"]) for r in results),
        window=window,
        workers=results,
        server_cpu_s=server_cpu,
        machine_busy_share=machine_after.busy_share_since(machine_before),
        softirq_cores=machine_after.softirq_cores_since(machine_before, seconds),
    )
