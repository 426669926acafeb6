"""The controller's side of one ``fanout`` run: the load generator's processes and the measured steps.

``load_generator`` starts one publisher process and ``processes`` dashboard processes
(``python -m benchmarks.fanout_load``), each with its orders in a file, and waits until every dashboard has
subscribed. A ``step`` sets the publish rate, lets it settle, and measures a window: each process counts over
the same instants of the shared monotonic clock (and its own CPU), while the controller reads the server's
CPU by role and the machine's from ``/proc`` at those instants. Whatever happens, every process is ended and
reaped when the context exits.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchmarks import procstat
from benchmarks.fanout_peers import FanoutTarget
from benchmarks.harness import CPUS, DEFAULT_RESULTS_DIR
from benchmarks.loadrun import PACKAGE_ROOT, _cpu_by_pid

__all__ = ["LoadGenerator", "LoadShape", "add_load_options", "load_generator", "percentile"]

READY_TIMEOUT_S = 180.0
# A rate applies this long after it is sent (every process has read it by then); a window's answers are
# awaited this long after it ends; a drain lasts at most DRAIN_TIMEOUT_S, once quiet for QUIET_S.
RATE_DELAY_S = 0.05
ANSWER_MARGIN_S = 30.0
DRAIN_TIMEOUT_S = 30.0
QUIET_S = 1.0


@dataclass(frozen=True, kw_only=True)
class LoadShape:
    """Who is connected and how a step is measured."""

    devices: int
    dashboards: int
    # Dashboard processes (there is one publisher process besides).
    processes: int
    seconds: float
    settle_s: float
    sample_every: int
    # Unacked frames per device, on targets that ack.
    window: int
    encoding: str
    connect_concurrency: int

    def parameters(self) -> dict[str, Any]:
        """Who was connected, as a workload's results record it."""
        return {
            "devices": self.devices,
            "dashboards": self.dashboards,
            "dashboards_every_device": (self.dashboards + 1) // 2,
            "dashboards_one_device": self.dashboards // 2,
            "loadgen_dashboard_processes": self.processes,
            "sample_every": self.sample_every,
            "window": self.window,
            "telehub_encoding": self.encoding,
        }


class LoadProcess:
    """One load generator process, its answers (JSON lines on stdout) read by a thread into a queue."""

    def __init__(self, name: str, orders: dict[str, Any], workdir: Path) -> None:
        orders_path = workdir / f"fanout-{name}.json"
        orders_path.write_text(json.dumps(orders))
        self.name = name
        self.log_path = workdir / f"fanout-{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fanout_load", str(orders_path)],
            cwd=PACKAGE_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._answers: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"fanout-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def send(self, command: dict[str, Any]) -> None:
        stdin: IO[bytes] | None = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(command).encode() + b"\n")
        stdin.flush()

    def expect(self, event: str, deadline: float) -> dict[str, Any]:
        """The next answer named ``event`` (others are passed over); raises on an error or an early exit."""
        while True:
            try:
                line = self._answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"load generator {self.name} did not answer {event!r} in time") from None
            if line is None:
                raise RuntimeError(f"load generator {self.name} exited early:\n{self.log_tail()}")
            answer: dict[str, Any] = json.loads(line)
            if answer["event"] == "error":
                raise RuntimeError(f"load generator {self.name}: {answer['message']}")
            if answer["event"] == event:
                return answer

    def log_tail(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-2000:]

    def close(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=ANSWER_MARGIN_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=ANSWER_MARGIN_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


def percentile(ordered: list[int], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))])


class LoadGenerator:
    """The publisher and the dashboard processes of one run, all ready."""

    def __init__(self, target: FanoutTarget, shape: LoadShape, publisher: LoadProcess, dashboards: list[LoadProcess]):
        self.target = target
        self.shape = shape
        self.publisher = publisher
        self.dashboards = dashboards

    @property
    def processes(self) -> list[LoadProcess]:
        return [self.publisher, *self.dashboards]

    def set_rate(self, hz: float) -> float:
        """Each device publishes ``hz`` frames/s from the instant returned."""
        at = time.monotonic() + RATE_DELAY_S
        self.publisher.send({"op": "rate", "hz": hz, "at": at})
        return at

    def step(self, hz: float, seconds: float | None = None) -> dict[str, Any]:
        """Publish at ``hz`` per device; after the settling time, measure a window; its figures."""
        seconds = self.shape.seconds if seconds is None else seconds
        start = self.set_rate(hz) + self.shape.settle_s
        end = start + seconds
        for process in self.processes:
            process.send({"op": "measure", "start": start, "end": end})
        servers = dict(self.target.running.server_processes())
        time.sleep(max(0.0, start - time.monotonic()))
        server_before, machine_before = _cpu_by_pid(servers), procstat.machine_times()
        time.sleep(max(0.0, end - time.monotonic()))
        server_after, machine_after = _cpu_by_pid(servers), procstat.machine_times()
        deadline = end + ANSWER_MARGIN_S
        published = self.publisher.expect("measured", deadline)
        received = [process.expect("measured", deadline) for process in self.dashboards]
        server_cpu: dict[str, float] = {}
        for pid, before in server_before.items():
            if pid in server_after:
                server_cpu[servers[pid]] = server_cpu.get(servers[pid], 0.0) + server_after[pid] - before
        return _figures(
            hz,
            published,
            received,
            server_cpu,
            busy_share=machine_after.busy_share_since(machine_before),
            softirq_cores=machine_after.softirq_cores_since(machine_before, seconds),
        )

    def rest(self) -> dict[str, Any]:
        """Stop publishing and wait until everything published has arrived (and been acked); reopen the
        dashboards the server closed meanwhile."""
        self.set_rate(0.0)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S + ANSWER_MARGIN_S
        for process in self.processes:
            process.send({"op": "drain", "quiet_s": QUIET_S, "timeout_s": DRAIN_TIMEOUT_S})
        answers = [process.expect("drained", deadline) for process in self.processes]
        return {
            "waited_s": max(float(a["waited_s"]) for a in answers),
            "reopened": sum(int(a.get("reopened", 0)) for a in answers),
        }

    def stop(self) -> dict[str, Any]:
        """Close every connection; the publisher's and the dashboards' totals."""
        deadline = time.monotonic() + ANSWER_MARGIN_S
        for process in self.processes:
            process.send({"op": "stop"})
        return {
            "publisher": self.publisher.expect("stopped", deadline),
            "dashboards": [process.expect("stopped", deadline) for process in self.dashboards],
        }


def _figures(
    hz: float,
    published: dict[str, Any],
    received: list[dict[str, Any]],
    server_cpu_by_role: dict[str, float],
    *,
    busy_share: float,
    softirq_cores: float,
) -> dict[str, Any]:
    """One step's figures. Deliveries expected: every frame once per dashboard of every device still open,
    and the first device's frames once more per dashboard of that device."""
    elapsed = max(float(answer["elapsed_s"]) for answer in [published, *received])
    per_device: list[int] = published["published"]
    delivered = sum(int(answer["delivered"]) for answer in received)
    alive_wildcard = sum(int(a["alive_wildcard"]) for a in received)
    alive_exact = sum(int(a["alive_exact"]) for a in received)
    expected = sum(per_device) * alive_wildcard + per_device[0] * alive_exact
    latencies = sorted(latency for answer in received for latency in answer["latency_us"])
    server_cpu = sum(server_cpu_by_role.values())
    loadgen_cpu_by_process = [float(answer["cpu_s"]) for answer in [published, *received]]
    loadgen_cpu = sum(loadgen_cpu_by_process)
    figures: dict[str, Any] = {
        "rate_hz": hz,
        "elapsed_s": elapsed,
        "target_publish_per_s": hz * len(per_device),
        "publish_per_s": sum(per_device) / elapsed,
        "published": sum(per_device),
        "skipped": int(published["skipped"]),
        "acked": int(published["acked"]),
        "deliveries_per_s": delivered / elapsed,
        "delivered": delivered,
        "expected": expected,
        "delivered_share": delivered / expected if expected else None,
        # The deliveries of one frame of each device: a window holds whole frames, so a count may be off by this.
        "frame_deliveries": len(per_device) * alive_wildcard + alive_exact,
        "latency_samples": len(latencies),
        "unparsed_samples": sum(int(a["unparsed"]) for a in received),
        "server_cpu_s_by_role": server_cpu_by_role,
        "server_cores": server_cpu / elapsed,
        "server_cpu_us_per_delivery": server_cpu / delivered * 1e6 if delivered else None,
        "loadgen_cores": loadgen_cpu / elapsed,
        "loadgen_cores_by_process": [cpu / elapsed for cpu in loadgen_cpu_by_process],
        "loadgen_cpu_us_per_delivery": loadgen_cpu / delivered * 1e6 if delivered else None,
        "machine_busy_share": busy_share,
        "softirq_cores": softirq_cores,
        "other_cores": max(0.0, busy_share * CPUS - (server_cpu + loadgen_cpu) / elapsed - softirq_cores),
        "dashboards_lost": sum(int(a["lost"]) for a in received),
        "devices_lost": int(published["lost"]),
    }
    for role, cpu in server_cpu_by_role.items():
        figures[f"server_cores_{role}"] = cpu / elapsed
    if latencies:
        figures |= {
            "p50_ms": percentile(latencies, 0.5) / 1000,
            "p99_ms": percentile(latencies, 0.99) / 1000,
            "p999_ms": percentile(latencies, 0.999) / 1000,
            "max_ms": latencies[-1] / 1000,
        }
    return figures


def _orders(target: FanoutTarget, shape: LoadShape) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The publisher's orders and each dashboard process's: half of the dashboards follow every device, half
    the first device, and each process has its share of both kinds (the first kind gets far more traffic)."""
    running = target.running.endpoint
    publisher = {
        "role": "publisher",
        "protocol": running.protocol,
        "host": running.host,
        "port": running.port,
        "path": running.path,
        "devices": [
            [device, credential] for device, credential in zip(target.device_ids, running.credentials, strict=True)
        ],
        "acks": target.acks,
        "window": shape.window,
        "connect_concurrency": shape.connect_concurrency,
    }
    board = target.dashboards
    every_device = (shape.dashboards + 1) // 2
    named = [(f"dash-{n:05d}", None if n < every_device else target.device_ids[0]) for n in range(shape.dashboards)]
    dashboards = [
        {
            "role": "dashboards",
            "protocol": board.protocol,
            "host": board.host,
            "port": board.port,
            "credential": board.credentials[0] if board.credentials else None,
            "encoding": shape.encoding,
            "dashboards": named[number : every_device : shape.processes]
            + named[every_device + number :: shape.processes],
            "sample_every": shape.sample_every,
            "connect_concurrency": shape.connect_concurrency,
        }
        for number in range(shape.processes)
    ]
    return publisher, dashboards


@contextlib.contextmanager
def load_generator(target: FanoutTarget, shape: LoadShape, workdir: Path) -> Iterator[LoadGenerator]:
    """The load generator's processes, connected and subscribed; each ended and reaped on exit."""
    publisher_orders, dashboard_orders = _orders(target, shape)
    processes: list[LoadProcess] = []
    try:
        publisher = LoadProcess("publisher", publisher_orders, workdir)
        processes.append(publisher)
        for number, orders in enumerate(dashboard_orders):
            processes.append(LoadProcess(f"dashboards-{number}", orders, workdir))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for process in processes:
            process.expect("ready", deadline)
        yield LoadGenerator(target, shape, publisher, processes[1:])
    finally:
        for process in processes:
            process.close()


def add_load_options(add: Callable[..., Any]) -> None:
    """The load generator's options, shared by ``fanout`` and ``soak`` (``add``: a parser's add_argument)."""
    add("--processes", type=int, default=2, help="load generator processes for the dashboards (default 2)")
    add("--sample-every", type=int, default=50, help="one delivery in N is decoded for latency (default 50)")
    add("--window", type=int, default=64, help="unacked frames per device on telehub (default 64)")
    add("--encoding", choices=("json", "msgpack"), default="json", help="telehub dashboards' frames (default json)")
    add("--latency-limit-ms", type=float, default=500.0, help="p99 above this: the load is not held (default 500)")
    add("--telehub-workers", type=int, default=1, help="telehub serve --workers (default 1)")
    add("--connect-concurrency", type=int, default=64, help="connections each process opens at once (default 64)")
    add("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help=f"where to write (default {DEFAULT_RESULTS_DIR})")
