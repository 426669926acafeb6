"""Run a workload against its targets N times each and write the results (BENCHMARKS.md).

Every target is started once, then measured ``runs`` times with a fresh load generator per run; each run's
figures (throughput, and the CPU of the server's processes and of the load generator's, from ``/proc``) are
kept, and each figure is summarized as the median with min-max. A target that fails to start or to run is
reported as failed with its error; the others still run. The results are written by ``benchmarks.report``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import platform
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.loadrun import LoadRun, run_load
from benchmarks.servers import RunningTarget
from benchmarks.workloads import WORKLOADS, Workload

__all__ = ["DEFAULT_RESULTS_DIR", "TARGETS", "BenchmarkOptions", "figures_of", "run_benchmark", "targets_for"]

DEFAULT_RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGETS = ("telehub", "floor", "mosquitto", "influxdb")
# Timestamps of the frames start this long before the run, so that no frame is in the future.
BACKDATE_MS = 86_400_000
CPUS = os.cpu_count() or 1


@dataclass(frozen=True, kw_only=True)
class BenchmarkOptions:
    workload: str
    targets: tuple[str, ...] = ("telehub", "floor")
    runs: int = 3
    seconds: float = 10.0
    # None: the workload's number of devices.
    devices: int | None = None
    window: int = 64
    processes: int = 2
    telehub_workers: int = 1
    # Seconds a run waits, after its window, for the acks still owed.
    drain_timeout_s: float = 30.0
    # Connections each load generator process opens at once (before the clock starts).
    connect_concurrency: int = 64
    results_dir: Path = DEFAULT_RESULTS_DIR
    # The command line, quoted in the report.
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def targets_for(workload: Workload, requested: str) -> tuple[str, ...]:
    """``all`` means telehub, the floor and the workload's peers; otherwise a comma list of names."""
    if requested == "all":
        return ("telehub", "floor", *workload.peers)
    names = tuple(name.strip() for name in requested.split(",") if name.strip())
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        raise ValueError(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)} or all")
    return names


@contextlib.contextmanager
def _started(
    name: str, workload: Workload, devices: int, workdir: Path, options: BenchmarkOptions
) -> Iterator[RunningTarget]:
    if name == "floor":
        from benchmarks import floor

        with floor.started(devices=devices, workdir=workdir) as target:
            yield target
    elif name == "telehub":
        from benchmarks import telehub_target

        with telehub_target.started(devices=devices, workdir=workdir, workers=options.telehub_workers) as target:
            yield target
    else:
        from benchmarks import peers

        with peers.started(name, workload=workload, devices=devices, workdir=workdir) as target:
            yield target


def measure_run(
    target: RunningTarget,
    workload: Workload,
    *,
    devices: int,
    processes: int,
    seconds: float,
    window: int,
    base_ts_ms: int,
    workdir: Path,
    drain_timeout_s: float,
    connect_concurrency: int,
    prebuilt: int,
) -> tuple[dict[str, Any], int]:
    """One run of ``workload``'s load against a started target: its figures, and how many frames per device to
    encode before the next run's clock (enough for a quarter more than this run sent, at least ``prebuilt``)."""
    load = run_load(
        target.endpoint,
        workload,
        processes=processes,
        seconds=seconds,
        window=window,
        base_ts_ms=base_ts_ms,
        server_processes=target.server_processes,
        workdir=workdir,
        drain_timeout_s=drain_timeout_s,
        connect_concurrency=connect_concurrency,
        prebuilt=prebuilt,
    )
    figures = figures_of(load, workload)
    return figures, max(prebuilt, math.ceil(1.25 * figures["sent"] / devices))


def figures_of(load: LoadRun, workload: Workload) -> dict[str, Any]:
    """The figures of one run: throughput per second of window, and CPU per acked frame and in cores."""
    acked = load.total("acked_in_window")
    elapsed = load.elapsed_s
    server_cpu = sum(load.server_cpu_s.values())
    loadgen_cpu = load.loadgen_cpu_s

    def per_frame(cpu_s: float) -> float | None:
        return cpu_s / acked * 1e6 if acked else None

    return {
        "elapsed_s": elapsed,
        "window": load.window,
        "acked_frames": acked,
        "frames_per_s": acked / elapsed,
        "points_per_s": acked * workload.points_per_frame / elapsed,
        "samples_per_s": acked * workload.samples_per_frame / elapsed,
        "server_cpu_s": server_cpu,
        "server_cpu_s_by_role": load.server_cpu_s,
        "server_cpu_us_per_frame": per_frame(server_cpu),
        "server_cores": server_cpu / elapsed,
        "loadgen_cpu_s": loadgen_cpu,
        "loadgen_cpu_s_by_process": [float(w["cpu_s"]) for w in load.workers],
        "loadgen_cpu_us_per_frame": per_frame(loadgen_cpu),
        "loadgen_cores": loadgen_cpu / elapsed,
        "machine_busy_share": load.machine_busy_share,
        "softirq_cores": load.softirq_cores,
        # Busy cores that neither side nor the kernel's network processing account for: anything else running.
        "other_cores": max(
            0.0,
            load.machine_busy_share * CPUS - server_cpu / elapsed - loadgen_cpu / elapsed - load.softirq_cores,
        ),
        "sent": load.total("sent"),
        "acked_total": load.total("acked_total"),
        "errors": load.total("errors_total"),
        "unresolved": load.total("unresolved"),
        "lost_frames": load.total("lost_frames"),
        "lost_connections": load.total("lost_connections"),
        "frames_built_during_run": max(int(w["built_during_run"]) for w in load.workers),
        "workers": load.workers,
    }


SUMMARIZED = (
    "frames_per_s",
    "points_per_s",
    "samples_per_s",
    "server_cpu_us_per_frame",
    "loadgen_cpu_us_per_frame",
    "server_cores",
    "loadgen_cores",
    "machine_busy_share",
    "softirq_cores",
    "other_cores",
)


def summarize(runs: list[dict[str, Any]], keys: Iterable[str] = SUMMARIZED) -> dict[str, dict[str, float]]:
    """Median, min and max of each figure named in ``keys`` over the runs (runs without it are left out)."""
    summary: dict[str, dict[str, float]] = {}
    for key in keys:
        values = [float(run[key]) for run in runs if run.get(key) is not None]
        if values:
            summary[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "runs": len(values),
            }
    return summary


def _machine() -> dict[str, Any]:
    memory_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "websockets": metadata.version("websockets"),
        "uvloop": metadata.version("uvloop"),
        "msgpack": metadata.version("msgpack"),
    }


def _measure_target(
    name: str, workload: Workload, options: BenchmarkOptions, workdir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    devices = options.devices or workload.devices
    base_ts_ms = int(time.time() * 1000) - BACKDATE_MS
    result: dict[str, Any] = {"target": name, "runs": []}
    output: Callable[[], str] | None = None
    try:
        say(f"{workload.name}: starting {name} with {devices} devices")
        starting = time.monotonic()
        with _started(name, workload, devices, workdir, options) as target:
            result["started_as"] = target.started_as
            result["start_s"] = time.monotonic() - starting
            say(f"{workload.name}: {name} ready with {devices} devices in {result['start_s']:.1f} s")
            output = target.output
            prebuilt = workload.prebuilt_frames
            for number in range(1, options.runs + 1):
                figures, prebuilt = measure_run(
                    target,
                    workload,
                    devices=devices,
                    processes=options.processes,
                    seconds=options.seconds,
                    window=options.window,
                    base_ts_ms=base_ts_ms,
                    workdir=workdir,
                    drain_timeout_s=options.drain_timeout_s,
                    connect_concurrency=options.connect_concurrency,
                    prebuilt=prebuilt,
                )
                result["runs"].append(figures)
                say(
                    f"{workload.name}: {name} run {number}/{options.runs}: "
                    f"{figures['frames_per_s']:,.0f} frames/s, {figures['points_per_s']:,.0f} points/s, "
                    f"server {figures['server_cores']:.2f} cores, load generator {figures['loadgen_cores']:.2f} cores"
                )
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc(limit=8)
        if output is not None:
            result["server_output"] = output()
        say(f"{workload.name}: {name} failed: {result['error'].splitlines()[0]}")
    result["summary"] = summarize(result["runs"])
    return result


def run_benchmark(options: BenchmarkOptions, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every target of ``options`` and write the reports; the results, with the paths written."""
    workload = WORKLOADS[options.workload]
    started_at = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {
        "workload": workload.name,
        "description": workload.description,
        "command": options.command,
        "started_at": started_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": _machine(),
        "parameters": {
            "runs": options.runs,
            "seconds": options.seconds,
            "devices": options.devices or workload.devices,
            "window": options.window,
            "loadgen_processes": options.processes,
            "telehub_workers": options.telehub_workers,
            "connect_concurrency": options.connect_concurrency,
            "points_per_frame": workload.points_per_frame,
            "samples_per_frame": workload.samples_per_frame,
            **options.extra,
        },
        "figures": [figure.key for figure in workload.figures],
        "targets": [],
        "quoted": [{"name": q.name, "figures": q.figures, "source": q.source} for q in workload.quoted],
    }
    with tempfile.TemporaryDirectory(prefix="telehub-bench-") as tmp:
        for name in options.targets:
            workdir = Path(tmp) / name
            workdir.mkdir()
            results["targets"].append(_measure_target(name, workload, options, workdir, say))
    results["ratios"] = report.ratios(results)
    results["files"] = {kind: str(path) for kind, path in report.write(results, options.results_dir).items()}
    return results
