"""``scaling``: ``ingest-rows`` and ``fanout`` at 1, 2 and 4 hub processes, on one Redis and on a Redis Cluster.

Each point of the curve is one workload against one ``telehub serve --workers N`` (``telehub_target``), N in
``--processes`` (1, 2, 4), on one of two stores (``--redis``):

- ``single``: the hub's embedded redis-server (the default ``telehub serve``), in a fresh data dir per point;
- ``cluster``: a local 3-master Redis Cluster (``tests/redis_cluster.py``: the embedded redis-server binary,
  AOF on, as the test suite's cluster pass runs), started once and emptied (``FLUSHALL``) before every point;
  the hub gets it as ``TELEHUB_REDIS_URL=redis+cluster://...``.

The workloads are those of ``python -m benchmarks ingest-rows`` and ``python -m benchmarks fanout``, telehub
only (no reference is run), in a form sized for a curve:

- ``ingest-rows`` (the harness's load generator, ``loadrun``): ``--devices`` (1,000) devices keep ``--window``
  (64) frames in flight for ``--seconds`` (10); the figure is **acked frames/s**.
- ``fanout`` (``fanout_run`` and ``fanout.search``): ``--fanout-devices`` (10) devices publish to
  ``--dashboards`` (1,000) dashboards; the rate starts at ``--start-rate`` and doubles, then is bisected, to
  saturation, in steps of ``--fanout-seconds`` (2) after ``--fanout-settle`` (0.5); the figure is the best
  sustained step's **deliveries/s at saturation** (no latency step at half of it: ``fanout`` has that).

Every point starts its own hub, is measured ``--runs`` (1) times with a fresh load generator each, and records
the median (min-max) of its figure, the server's cores (hub processes and Redis: the embedded redis-server, or
the cluster's three nodes), the load generator's, and anything else busy on the machine; then the ratio of its
median to the 1-process point of the same workload and Redis. Results: ``scaling-<time>.{json,md,png}`` and
``scaling-latest.*`` (``scaling_report``). A point that fails is reported with its error, the others still
run; the exit code is then 1.

    python -m benchmarks scaling [--processes 1,2,4] [--redis single,cluster] [--workloads ingest-rows,fanout]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import telehub_target
from benchmarks.fanout import FanoutOptions, search
from benchmarks.fanout_clients import DASHBOARD_PATH
from benchmarks.fanout_peers import FanoutTarget, device_ids
from benchmarks.fanout_run import LoadShape, load_generator
from benchmarks.harness import BACKDATE_MS, DEFAULT_RESULTS_DIR, measure_run
from benchmarks.loadrun import Endpoint
from benchmarks.servers import RunningTarget
from benchmarks.workloads import WORKLOADS

__all__ = ["REDIS_MODES", "WORKLOAD_NAMES", "ScalingOptions", "main", "ratios", "run"]

Progress = Callable[[str], None]
# What a point measured: its runs, how its hub was started, and its server processes by role.
Measured = dict[str, Any]
WORKLOAD_NAMES = ("ingest-rows", "fanout")
REDIS_MODES = ("single", "cluster")
CLUSTER_MASTERS = 3
# The figure each workload is plotted by: (key in a run's figures, label, unit).
THROUGHPUT = {
    "ingest-rows": ("frames_per_s", "acked frames/s", "frames/s"),
    "fanout": ("deliveries_per_s", "deliveries/s at saturation", "deliveries/s"),
}
# Seconds a run waits, after its window, for the acks still owed (as the harness does).
DRAIN_TIMEOUT_S = 30.0


@dataclass(frozen=True, kw_only=True)
class ScalingOptions:
    processes: tuple[int, ...] = (1, 2, 4)
    redis: tuple[str, ...] = REDIS_MODES
    workloads: tuple[str, ...] = WORKLOAD_NAMES
    runs: int = 1
    # ingest-rows
    seconds: float = 10.0
    devices: int = 1000
    window: int = 64
    loadgen_processes: int = 2
    connect_concurrency: int = 64
    # fanout (loadgen_processes dashboard processes, besides the publisher)
    fanout: LoadShape
    start_rate_hz: float = 8.0
    max_rate_hz: float = 5000.0
    max_steps: int = 12
    latency_limit_ms: float = 500.0
    results_dir: Path = DEFAULT_RESULTS_DIR
    extra: dict[str, Any] = field(default_factory=dict)

    def parameters(self) -> dict[str, Any]:
        return {
            "processes": list(self.processes),
            "redis": list(self.redis),
            "workloads": list(self.workloads),
            "runs": self.runs,
            "cluster_masters": CLUSTER_MASTERS,
            "ingest_rows": {
                "devices": self.devices,
                "seconds": self.seconds,
                "window": self.window,
                "loadgen_processes": self.loadgen_processes,
                "connect_concurrency": self.connect_concurrency,
            },
            "fanout": {
                "seconds": self.fanout.seconds,
                "settle_s": self.fanout.settle_s,
                **self.fanout.parameters(),
                "start_rate_hz": self.start_rate_hz,
                "max_rate_hz": self.max_rate_hz,
                "max_steps": self.max_steps,
                "latency_limit_ms": self.latency_limit_ms,
            },
            **self.extra,
        }


@dataclass(frozen=True)
class Store:
    """Where a point's hub keeps its data: the ``TELEHUB_*`` settings it gets, and Redis processes of its own
    (the cluster's nodes, which are no children of the hub) to count in the server's CPU."""

    mode: str
    env: Mapping[str, str]
    processes: Callable[[], Mapping[int, str]]
    # Called before each point's hub starts: an empty store.
    reset: Callable[[], None]
    described: str


def _no_processes() -> dict[int, str]:
    return {}


def _nothing() -> None:
    return None


@contextlib.contextmanager
def _store(mode: str, workdir: Path, say: Progress) -> Iterator[Store]:
    if mode == "single":
        yield Store(mode, {}, _no_processes, _nothing, "the hub's embedded redis-server (AOF on), fresh per point")
        return
    # The test suite's launcher; the benchmarks run from the repository's root, so ``tests`` imports.
    from tests.redis_cluster import LocalRedisCluster

    say(f"scaling: starting a local {CLUSTER_MASTERS}-master Redis Cluster")
    with LocalRedisCluster(workdir / "redis-cluster", masters=CLUSTER_MASTERS) as cluster:

        def nodes() -> dict[int, str]:
            return {node.process.pid: "redis" for node in cluster.nodes if node.process is not None}

        ports = ", ".join(str(node.port) for node in cluster.nodes)
        yield Store(
            mode,
            {"TELEHUB_REDIS_URL": cluster.url},
            nodes,
            cluster.flush,
            f"a local Redis Cluster of {CLUSTER_MASTERS} masters, no replicas (the embedded redis-server binary, "
            f"AOF on, appendfsync {cluster.fsync}; 127.0.0.1 ports {ports}), emptied before every point",
        )


@contextlib.contextmanager
def _hub(
    store: Store, processes: int, devices: int, workdir: Path, *, dashboard_role: str | None = None
) -> Iterator[RunningTarget]:
    """telehub with ``processes`` worker processes on ``store``; its server processes include the store's."""
    store.reset()
    with telehub_target.started(
        devices=devices, workdir=workdir, workers=processes, dashboard_role=dashboard_role, env=store.env
    ) as running:
        own = running.server_processes

        def server_processes() -> dict[int, str]:
            return {**own(), **store.processes()}

        yield dataclasses.replace(running, server_processes=server_processes)


def _ingest_point(store: Store, processes: int, options: ScalingOptions, workdir: Path, say: Progress) -> Measured:
    workload = WORKLOADS["ingest-rows"]
    base_ts_ms = int(time.time() * 1000) - BACKDATE_MS
    runs: list[dict[str, Any]] = []
    with _hub(store, processes, options.devices, workdir) as target:
        prebuilt = workload.prebuilt_frames
        for number in range(1, options.runs + 1):
            say(f"  run {number}/{options.runs}: {options.devices:,} devices for {options.seconds:g} s")
            figures, prebuilt = measure_run(
                target,
                workload,
                devices=options.devices,
                processes=options.loadgen_processes,
                seconds=options.seconds,
                window=options.window,
                base_ts_ms=base_ts_ms,
                workdir=workdir,
                drain_timeout_s=DRAIN_TIMEOUT_S,
                connect_concurrency=options.connect_concurrency,
                prebuilt=prebuilt,
            )
            runs.append(
                figures
                | {
                    "server_cores_by_role": {
                        role: cpu / figures["elapsed_s"] for role, cpu in figures["server_cpu_s_by_role"].items()
                    }
                }
            )
            say(
                f"  run {number}/{options.runs}: {figures['frames_per_s']:,.0f} acked frames/s; server "
                f"{figures['server_cores']:.2f} cores, load generator {figures['loadgen_cores']:.2f} cores"
            )
        return {"runs": runs, **_described(target)}


def _fanout_point(store: Store, processes: int, options: ScalingOptions, workdir: Path, say: Progress) -> Measured:
    shape = options.fanout
    fanout_options = FanoutOptions(
        targets=("telehub",),
        runs=options.runs,
        shape=shape,
        start_rate_hz=options.start_rate_hz,
        max_rate_hz=options.max_rate_hz,
        max_steps=options.max_steps,
        latency_limit_ms=options.latency_limit_ms,
        telehub_workers=processes,
    )
    runs: list[dict[str, Any]] = []
    with _hub(store, processes, shape.devices, workdir, dashboard_role="viewer") as running:
        endpoint = running.endpoint
        dashboards = Endpoint(
            "telehub-ws", endpoint.host, endpoint.port, DASHBOARD_PATH, (str(endpoint.options["dashboard_key"]),)
        )
        target = FanoutTarget("telehub", running, dashboards, device_ids(shape.devices), acks=True)
        for number in range(1, options.runs + 1):
            say(f"  run {number}/{options.runs}: connecting {shape.dashboards:,} dashboards")
            with load_generator(target, shape, workdir) as load:
                found = search(load, fanout_options, say)
                totals = load.stop()
            if found.best is None:
                raise RuntimeError(f"no fanout step was sustained: {found.ended}")
            best = found.steps[found.best]
            runs.append(
                {
                    "deliveries_per_s": best["deliveries_per_s"],
                    "saturation_rate_hz": best["rate_hz"],
                    "publish_per_s": best["publish_per_s"],
                    "p99_ms": best.get("p99_ms"),
                    "server_cores": best["server_cores"],
                    "server_cores_by_role": {
                        role: cpu / best["elapsed_s"] for role, cpu in best["server_cpu_s_by_role"].items()
                    },
                    "loadgen_cores": best["loadgen_cores"],
                    "softirq_cores": best["softirq_cores"],
                    "other_cores": best["other_cores"],
                    "steps": len(found.steps),
                    "saturation_step": found.best,
                    "search_ended": found.ended,
                    "step_figures": found.steps,
                    "totals": totals,
                }
            )
            say(
                f"  run {number}/{options.runs}: {best['deliveries_per_s']:,.0f} deliveries/s at "
                f"{best['rate_hz']:.4g}/s per device ({found.ended}); server {best['server_cores']:.2f} cores"
            )
        return {"runs": runs, **_described(running)}


def _described(target: RunningTarget) -> dict[str, Any]:
    """How the hub was started, and how many server processes of each role were counted (hub and Redis)."""
    return {"started_as": target.started_as, "server_processes": dict(Counter(target.server_processes().values()))}


def _median(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def _summarize(point: dict[str, Any]) -> None:
    """The point's figures over its runs: throughput, server, load generator and other cores, by role."""
    runs = point["runs"]
    if not runs:
        return
    key = THROUGHPUT[point["workload"]][0]
    point["throughput"] = _median([float(run[key]) for run in runs])
    for name in ("server_cores", "loadgen_cores", "softirq_cores", "other_cores"):
        point[name] = _median([float(run[name]) for run in runs])
    roles = sorted({role for run in runs for role in run["server_cores_by_role"]})
    point["server_cores_by_role"] = {
        role: statistics.median(run["server_cores_by_role"].get(role, 0.0) for run in runs) for role in roles
    }


def ratios(points: list[dict[str, Any]]) -> None:
    """Set each measured point's ``ratio`` to its median over the 1-process median of its workload and Redis."""
    base = {
        (p["workload"], p["redis"]): p["throughput"]["median"]
        for p in points
        if p["processes"] == 1 and "throughput" in p and p["throughput"]["median"] > 0
    }
    for point in points:
        one = base.get((point["workload"], point["redis"]))
        point["ratio"] = point["throughput"]["median"] / one if one and "throughput" in point else None


def run(options: ScalingOptions, say: Progress = print) -> dict[str, Any]:
    """Measure every point (Redis mode, then workload, then processes); the results writer's dict."""
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    plan = [(mode, w, n) for mode in options.redis for w in options.workloads for n in options.processes]
    points: list[dict[str, Any]] = []
    stores: dict[str, str] = {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="telehub-scaling-") as tmp:
        for mode in options.redis:
            with contextlib.ExitStack() as stack:
                try:
                    store = stack.enter_context(_store(mode, Path(tmp), say))
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    say(f"scaling: the {mode} Redis did not start: {error.splitlines()[0]}")
                    points += [
                        {"workload": w, "redis": mode, "processes": n, "runs": [], "error": error}
                        for m, w, n in plan
                        if m == mode
                    ]
                    continue
                stores[mode] = store.described
                for name in options.workloads:
                    for processes in options.processes:
                        number = len(points) + 1
                        say(
                            f"scaling: point {number}/{len(plan)} ({time.monotonic() - began:.0f} s so far): "
                            f"{name}, {mode} Redis, {processes} hub process{'es' if processes > 1 else ''}"
                        )
                        points.append(_point(store, name, processes, options, Path(tmp), number, say))
    ratios(points)
    say(f"scaling: {len(points)} points in {time.monotonic() - began:.0f} s")
    return {
        "workload": "scaling",
        "started_at": started_at,
        "parameters": options.parameters(),
        "stores": stores,
        "throughput": {name: {"key": k, "label": label, "unit": unit} for name, (k, label, unit) in THROUGHPUT.items()},
        "points": points,
    }


def _point(
    store: Store, name: str, processes: int, options: ScalingOptions, tmp: Path, number: int, say: Progress
) -> dict[str, Any]:
    point: dict[str, Any] = {"workload": name, "redis": store.mode, "processes": processes, "runs": []}
    workdir = tmp / f"point-{number:02d}-{name}-{store.mode}-{processes}"
    workdir.mkdir()
    measure = _ingest_point if name == "ingest-rows" else _fanout_point
    starting = time.monotonic()
    try:
        point |= measure(store, processes, options, workdir, say)
    except Exception as exc:
        point["error"] = f"{type(exc).__name__}: {exc}"
        point["traceback"] = traceback.format_exc(limit=8)
        log = workdir / "telehub.log"
        if log.exists():
            text = log.read_text(errors="replace")
            point["server_output"] = text[-3000:]
            # The first error the hub logged (the tail may only show its consequences, repeated).
            first = text.find(" ERROR ")
            if first >= 0:
                point["server_first_error"] = text[text.rfind("\n", 0, first) + 1 :][:3000]
        say(f"  failed: {point['error'].splitlines()[0]}")
    point["seconds_taken"] = time.monotonic() - starting
    _summarize(point)
    return point


def _list(text: str, convert: Callable[[str], Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(convert(word.strip()) for word in text.split(",") if word.strip()))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks scaling",
        description=__doc__.split("\n\n")[0],
        epilog="Every point starts its own hub; with the defaults, 12 points take about 6 minutes on 2 cores.",
    )
    add = parser.add_argument
    add("--processes", default="1,2,4", help="hub processes (telehub serve --workers), a comma list with 1 (1,2,4)")
    add("--redis", default="single,cluster", help="single (embedded redis-server), cluster, or both (default)")
    add("--workloads", default="ingest-rows,fanout", help="ingest-rows, fanout, or both (default)")
    add("--runs", type=int, default=1, help="measured runs per point (default 1)")
    add("--seconds", type=float, default=10.0, help="ingest-rows: length of each run (default 10)")
    add("--devices", type=int, default=1000, help="ingest-rows: device connections (default 1000)")
    add("--window", type=int, default=64, help="frames in flight per device, both workloads (default 64)")
    add("--loadgen-processes", type=int, default=2, help="load generator processes (fanout: dashboards') (2)")
    add("--connect-concurrency", type=int, default=64, help="connections each process opens at once (default 64)")
    add("--fanout-seconds", type=float, default=2.0, help="fanout: measured seconds of each step (default 2)")
    add("--fanout-settle", type=float, default=0.5, help="fanout: seconds at a new rate before its window (0.5)")
    add("--fanout-devices", type=int, default=10, help="fanout: publishing devices (default 10)")
    add("--dashboards", type=int, default=1000, help="fanout: dashboards, half on every device (default 1000)")
    add("--start-rate", type=float, default=8.0, help="fanout: first step's frames/s per device (default 8)")
    add("--max-rate", type=float, default=5000.0, help="fanout: highest frames/s per device tried (default 5000)")
    add("--max-steps", type=int, default=12, help="fanout: saturation steps at most (default 12)")
    add("--sample-every", type=int, default=50, help="fanout: one delivery in N is decoded for latency (50)")
    add("--latency-limit-ms", type=float, default=500.0, help="fanout: p99 above this is not held (default 500)")
    add("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help=f"where to write (default {DEFAULT_RESULTS_DIR})")
    return parser


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import benchmark_command, show_written
    from benchmarks.scaling_report import write_results

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        processes = _list(args.processes, int)
    except ValueError:
        parser.error("--processes takes a comma list of whole numbers, e.g. 1,2,4")
    redis_modes, workloads = _list(args.redis, str), _list(args.workloads, str)
    if 1 not in processes or min(processes) < 1:
        parser.error("--processes must list 1 (the base of the ratios) and positive numbers only")
    if not redis_modes or not set(redis_modes) <= set(REDIS_MODES):
        parser.error(f"--redis takes a comma list of {', '.join(REDIS_MODES)}")
    if not workloads or not set(workloads) <= set(WORKLOAD_NAMES):
        parser.error(f"--workloads takes a comma list of {', '.join(WORKLOAD_NAMES)}")
    counts = ("runs", "devices", "window", "loadgen_processes", "connect_concurrency", "fanout_devices", "max_steps")
    rates = ("seconds", "fanout_seconds", "start_rate", "max_rate", "sample_every", "latency_limit_ms")
    if any(getattr(args, name) <= 0 for name in (*counts, *rates)):
        parser.error("every count, length, rate and limit must be positive")
    if args.dashboards < 2:
        parser.error("--dashboards must be at least 2 (one on every device, one on the first)")
    shape = LoadShape(
        devices=args.fanout_devices,
        dashboards=args.dashboards,
        processes=args.loadgen_processes,
        seconds=args.fanout_seconds,
        settle_s=max(0.0, args.fanout_settle),
        sample_every=args.sample_every,
        window=args.window,
        encoding="json",
        connect_concurrency=args.connect_concurrency,
    )
    options = ScalingOptions(
        processes=tuple(sorted(processes)),
        redis=redis_modes,
        workloads=workloads,
        runs=args.runs,
        seconds=args.seconds,
        devices=args.devices,
        window=args.window,
        loadgen_processes=args.loadgen_processes,
        connect_concurrency=args.connect_concurrency,
        fanout=shape,
        start_rate_hz=args.start_rate,
        max_rate_hz=args.max_rate,
        max_steps=args.max_steps,
        latency_limit_ms=args.latency_limit_ms,
        results_dir=args.results_dir,
    )
    result = run(options)
    command = benchmark_command("scaling", argv)
    files = write_results(result, args.results_dir, command)
    show_written(files)
    return 0 if all(point["runs"] and "error" not in point for point in result["points"]) else 1


if __name__ == "__main__":
    sys.exit(main())
