"""Where telehub stands against the budgets of ARCHITECTURE.md, read from the latest results of each workload.

``python -m benchmarks budgets`` prints the table (``python -m benchmarks all`` appends it to its summary).
Each row takes telehub's runs from ``<workload>-latest.json`` in the results directory: the median over the
runs with min-max, the budget, and whether the median is within it. A workload with no results yet shows as
not measured. The hub's share of the CPU (without Redis) is shown beside the total where the budget is per
frame, since the budget's "server CPU" may be read either way: the table judges the total.

    python -m benchmarks budgets [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import DEFAULT_RESULTS_DIR

__all__ = ["BUDGETS", "Budget", "budget_table", "main"]

Run = dict[str, Any]
DASH = "\N{EN DASH}"
TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass(frozen=True)
class Budget:
    path: str
    limit: float
    unit: str
    workload: str
    # The figure of one run of telehub, None where the run lacks it.
    figure: Callable[[Run], float | None]
    # What the figure counts, for the table.
    measured_as: str
    # The hub's own share of the figure (no Redis), where that means something.
    hub_share: Callable[[Run], float | None] | None = None


def _key(name: str) -> Callable[[Run], float | None]:
    return lambda run: None if run.get(name) is None else float(run[name])


def _per_frame(role: str) -> Callable[[Run], float | None]:
    def figure(run: Run) -> float | None:
        cpu, frames = run.get("server_cpu_s_by_role", {}).get(role), run.get("acked_frames")
        return None if cpu is None or not frames else 1e6 * float(cpu) / float(frames)

    return figure


def _kib_per(kind: str) -> Callable[[Run], float | None]:
    def figure(run: Run) -> float | None:
        value = run.get("kinds", {}).get(kind, {}).get("kib_per_connection")
        return None if value is None else float(value)

    return figure


BUDGETS = (
    Budget(
        "small telemetry frame, received to acked",
        20,
        "µs of server CPU",
        "ingest-rows",
        _key("server_cpu_us_per_frame"),
        "`ingest-rows` server CPU per acked frame, hub + Redis",
        _per_frame("telehub"),
    ),
    Budget(
        "columnar frame of 1000 samples, received to acked",
        100,
        "µs of server CPU",
        "ingest-columns",
        _key("server_cpu_us_per_frame"),
        "`ingest-columns` server CPU per acked frame (1,000 x 4), hub + Redis",
        _per_frame("telehub"),
    ),
    Budget(
        "one delivery to one dashboard",
        5,
        "µs of server CPU",
        "fanout",
        _key("saturation_server_cpu_us_per_delivery"),
        "`fanout` server CPU per delivery at saturation, hub + Redis",
    ),
    Budget(
        "device frame to dashboard, p99 at half of peak load",
        20,
        "ms",
        "fanout",
        _key("p99_ms"),
        "`fanout` p99 at half of the saturation rate (load generator on the same 2 cores)",
    ),
    Budget(
        "idle device connection",
        20,
        "KiB of server memory",
        "connections",
        _kib_per("devices"),
        "`connections` hub + Redis RSS per idle device",
    ),
    Budget(
        "idle dashboard connection",
        20,
        "KiB of server memory",
        "connections",
        _kib_per("dashboards"),
        "`connections` hub + Redis RSS per idle dashboard",
    ),
)


def _telehub_runs(results_dir: Path, workload: str) -> list[Run]:
    path = results_dir / f"{workload}-latest.json"
    if not path.exists():
        return []
    document = json.loads(path.read_text())
    for target in document.get("targets", []):
        if target.get("target") == "telehub":
            runs: list[Run] = target.get("runs", [])
            return runs
    return []


def _spread(values: list[float]) -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return _number(median)
    return f"{_number(median)} ({_number(min(values))}{DASH}{_number(max(values))})"


def _number(value: float) -> str:
    return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"


def budget_table(results_dir: Path) -> str:
    """The Markdown table of every budget against the latest results in ``results_dir``."""
    lines = [
        f"| path | budget | telehub, median (min{DASH}max) over the runs | of which the hub (no Redis) | within? "
        "| measured as |",
        "|---|---|---|---|---|---|",
    ]
    for budget in BUDGETS:
        runs = _telehub_runs(results_dir, budget.workload)
        values = [v for v in map(budget.figure, runs) if v is not None]
        limit = f"≤ {_number(budget.limit)} {budget.unit}"
        if not values:
            lines.append(f"| {budget.path} | {limit} | not measured | — | — | {budget.measured_as} |")
            continue
        hub = [v for v in map(budget.hub_share, runs) if v is not None] if budget.hub_share else []
        median = statistics.median(values)
        within = "yes" if median <= budget.limit else f"**no** ({median / budget.limit:.1f}{TIMES})"
        lines.append(
            f"| {budget.path} | {limit} | {_spread(values)} | {_spread(hub) if hub else '—'} | {within} | "
            f"{budget.measured_as}, {len(values)} runs |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks budgets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help="where the results are")
    options = parser.parse_args(argv)
    print(budget_table(options.results_dir), end="")
    return 0
