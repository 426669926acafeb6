"""``python -m benchmarks <workload>``: measure telehub and its references side by side (BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path

from benchmarks.harness import DEFAULT_RESULTS_DIR, TARGETS, BenchmarkOptions, run_benchmark, targets_for
from benchmarks.workloads import WORKLOADS


def _suite_minutes() -> int:
    """What the suite's plan adds up to (measured or estimated per step), in minutes."""
    from benchmarks.suite import PLAN

    return round(sum(step.usual_s for step in PLAN) / 60)


def _parser() -> argparse.ArgumentParser:
    workloads = "\n".join(f"  {w.name:<16} {w.description}" for w in WORKLOADS.values())
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run one benchmark workload against telehub and its references; write JSON, Markdown and PNG.",
        epilog=f"workloads:\n{workloads}\n  {'aggregate-kernel':<16} in-process: telehub's window aggregation "
        "against polars and pandas (its own --help)\n"
        f"  {'query':<16} readings/aggregate latency over 7 days at 1 Hz x 10 metrics, against InfluxDB 1.6 "
        "(its own --help)\n"
        f"  {'fanout':<16} 10 devices to 1,000 dashboards: deliveries/s at saturation, latency at half of it,\n"
        f"  {'':<16} against the broadcast floor, Mosquitto, NATS and python-socketio (its own --help)\n"
        f"  {'commands':<16} REST to device to result: round trip on an idle hub, commands/s at saturation "
        "(its own --help)\n"
        f"  {'all':<16} every workload above, three runs each, about {_suite_minutes()} minutes (its own --help)\n"
        f"  {'scaling':<16} ingest-rows and fanout at 1, 2 and 4 hub processes (--workers), on one Redis and on a\n"
        f"  {'':<16} local 3-master Redis Cluster: the scaling curve and the ratio to 1 process (its own --help)\n"
        f"  {'profile':<16} py-spy profiles of the hub on ingest-rows, ingest-columns and fanout (its own --help)\n"
        f"  {'budgets':<16} the latest results against ARCHITECTURE.md's budgets, as a Markdown table\n"
        f"  {'soak':<16} 30 minutes at half of peak fan-out load: memory, CPU and latency each minute, plotted;\n"
        f"  {'':<16} fails on an upward trend of the hub's RSS (its own --help)\n\n"
        f"targets: {', '.join(TARGETS)}, or all (telehub, floor and the workload's peers)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workload", choices=sorted(WORKLOADS), help="what to measure (listed below)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per target (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured run (default 10)")
    parser.add_argument(
        "--target", default="all", help="telehub, floor, mosquitto, influxdb, a comma list of them, or all (default)"
    )
    parser.add_argument("--devices", type=int, help="device connections (default: the workload's)")
    parser.add_argument("--window", type=int, default=64, help="frames in flight per device (default 64)")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument(
        "--connect-concurrency", type=int, default=64, help="connections each process opens at once (default 64)"
    )
    parser.add_argument("--telehub-workers", type=int, default=1, help="telehub serve --workers (default 1)")
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help=f"where to write (default {DEFAULT_RESULTS_DIR})"
    )
    return parser


# Workloads outside the ingest load-generator harness (in-process, query latency, fan-out): each has its own main.
IN_PROCESS = {
    "aggregate-kernel": "benchmarks.aggregate_kernel",
    "query": "benchmarks.query",
    "fanout": "benchmarks.fanout",
    "recovery": "benchmarks.recovery",
    "connections": "benchmarks.connections",
    "commands": "benchmarks.commands",
    "all": "benchmarks.suite",
    "profile": "benchmarks.profile",
    "budgets": "benchmarks.budgets",
    "soak": "benchmarks.soak",
    "scaling": "benchmarks.scaling",
}


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in IN_PROCESS:
        module = importlib.import_module(IN_PROCESS[words[0]])
        code: int = module.main(words[1:])
        return code
    args = _parser().parse_args(argv)
    workload = WORKLOADS[args.workload]
    try:
        targets = targets_for(workload, args.target)
    except ValueError as exc:
        _parser().error(str(exc))
    for name, value in (("--runs", args.runs), ("--seconds", args.seconds), ("--window", args.window)):
        if value <= 0:
            _parser().error(f"{name} must be positive")
    options = BenchmarkOptions(
        workload=workload.name,
        targets=targets,
        runs=args.runs,
        seconds=args.seconds,
        devices=args.devices,
        window=args.window,
        processes=args.processes,
        telehub_workers=args.telehub_workers,
        connect_concurrency=args.connect_concurrency,
        results_dir=args.results_dir,
        command=shlex.join(["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)]),
    )
    results = run_benchmark(options)
    print(Path(results["files"]["md"]).read_text())
    for kind, path in results["files"].items():
        print(f"{kind}: {path}")
    return 0 if all(t["runs"] for t in results["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
