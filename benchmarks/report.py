"""Writing a benchmark's results: JSON (everything), a Markdown table and a PNG plot, and a ``latest`` copy.

Every figure is the median over the runs with min-max beside it, and says how many runs it summarizes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.workloads import WORKLOADS, Figure

__all__ = ["markdown", "ratios", "show_written", "write"]

DASH = "\N{EN DASH}"

# Columns of the table after the primary figures: (key, label, how to print it).
CPU_COLUMNS = (
    ("server_cores", "server CPU (cores)", "cores"),
    ("loadgen_cores", "load generator CPU (cores)", "cores"),
    ("softirq_cores", "kernel softirq (cores)", "cores"),
    ("other_cores", "anything else (cores)", "cores"),
)


def _number(value: float, kind: str = "") -> str:
    if kind == "share":
        return f"{value:.0%}"
    if kind == "cores":
        return f"{value:.2f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(summary: dict[str, dict[str, float]], key: str, kind: str = "") -> str:
    if key not in summary:
        return "—"
    s = summary[key]
    return f"{_number(s['median'], kind)} ({_number(s['min'], kind)}{DASH}{_number(s['max'], kind)})"


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """For each target but the floor: its median over the floor's, per figure (1.0 = as fast as the floor)."""
    floor = next((t for t in results["targets"] if t["target"] == "floor" and t["summary"]), None)
    found: dict[str, dict[str, float]] = {}
    if floor is None:
        return found
    for target in results["targets"]:
        if target["target"] == "floor" or not target["summary"]:
            continue
        found[target["target"]] = {
            key: target["summary"][key]["median"] / floor["summary"][key]["median"]
            for key in results["figures"]
            if key in target["summary"] and key in floor["summary"] and floor["summary"][key]["median"]
        }
    return found


def _figures(results: dict[str, Any]) -> list[Figure]:
    return list(WORKLOADS[results["workload"]].figures)


def markdown(results: dict[str, Any]) -> str:
    figures = _figures(results)
    p, m = results["parameters"], results["machine"]
    lines = [
        f"# {results['workload']}: {results['started_at']}",
        "",
        f"{results['description']}. Command: `{results['command']}`",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}, "
        f"websockets {m['websockets']}, uvloop {m['uvloop']}, msgpack {m['msgpack']}. Server and load generator "
        "share these CPUs.",
        "",
        f"Load: {p['devices']:,} devices, window {p['window']} frames in flight per device, {p['seconds']:g} s per "
        f"run, {p['loadgen_processes']} load generator processes, {p['runs']} runs per target. "
        f"Each cell: **median (min{DASH}max) over the runs** (the runs column says how many). CPU is utime+stime "
        "from /proc/<pid>/stat over the measured window; the server's counts every process of the target. "
        "Softirq (the kernel's loopback TCP work, charged to no process) and anything else busy come from "
        "/proc/stat: a run with other work on the machine shows it there.",
        "",
    ]
    columns = [f.label for f in figures] + [label for _, label, _ in CPU_COLUMNS]
    lines.append("| target | runs | " + " | ".join(columns) + " |")
    lines.append("|---|---:|" + "---:|" * len(columns))
    for target in results["targets"]:
        summary = target["summary"]
        if not summary:
            lines.append(f"| {target['target']} | 0 | failed: {target.get('error', 'no run').splitlines()[0]} |")
            continue
        runs: int | str = max(int(s["runs"]) for s in summary.values())
        if "error" in target:
            runs = f"{runs}, then failed"
        cells = [_cell(summary, f.key) for f in figures] + [_cell(summary, key, kind) for key, _, kind in CPU_COLUMNS]
        lines.append(f"| {target['target']} | {runs} | " + " | ".join(cells) + " |")
    for quoted in results["quoted"]:
        cells = [_number(quoted["figures"][f.key]) if f.key in quoted["figures"] else "—" for f in figures]
        lines.append(f"| {quoted['name']} | not run | " + " | ".join(cells) + " |" + " — |" * len(CPU_COLUMNS))
    lines += _ratio_lines(results, figures) + _detail_lines(results)
    return "\n".join(lines) + "\n"


def _ratio_lines(results: dict[str, Any], figures: list[Figure]) -> list[str]:
    lines: list[str] = []
    for name, by_key in results.get("ratios", {}).items():
        parts = [f"{f.label} \N{MULTIPLICATION SIGN}{by_key[f.key]:.2f}" for f in figures if f.key in by_key]
        if parts:
            lines.append(f"- {name} / floor (medians): " + ", ".join(parts))
    return ["", "Ratios to the floor:", "", *lines] if lines else []


def _detail_lines(results: dict[str, Any]) -> list[str]:
    lines = ["", "How each target ran:", ""]
    for target in results["targets"]:
        started = f"`{target['started_as']}`" if "started_as" in target else "did not start"
        lines.append(f"- **{target['target']}**: {started}")
        if "error" in target:
            lines.append(f"  - failed: `{target['error'].splitlines()[0][:300]}`")
        for number, run in enumerate(target["runs"], 1):
            roles = ", ".join(f"{role} {cpu:.2f} s" for role, cpu in sorted(run["server_cpu_s_by_role"].items()))
            loadgen = ", ".join(f"{cpu:.2f} s" for cpu in run["loadgen_cpu_s_by_process"])
            lines.append(
                f"  - run {number}: {run['acked_frames']:,} frames acked in {run['elapsed_s']:.2f} s "
                f"(window {run['window']}); "
                f"sent {run['sent']:,}, acked after draining {run['acked_total']:,}, errors {run['errors']}, "
                f"unacked {run['unresolved'] + run['lost_frames']}, connections lost {run['lost_connections']}; "
                f"server CPU {roles}; load generator CPU {loadgen}"
            )
    return lines


def _log_scale_if_far_apart(axis: Any, measured: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
    """Log scale when the bars are more than 30x apart (a small one would be invisible); the title's note."""
    values = [t["summary"][k][edge] for t in measured for k in keys if k in t["summary"] for edge in ("min", "max")]
    if len(values) < 2 or min(values) <= 0 or max(values) / min(values) <= 30:
        return ""
    axis.set_yscale("log")
    axis.set_ylim(bottom=10 ** math.floor(math.log10(min(values) / 2)), top=max(values) * 3)
    return ", log scale"


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    figures = _figures(results)
    primary = figures[0]
    measured = [t for t in results["targets"] if t["summary"]]
    names = [t["target"] for t in measured]
    runs = sorted({int(s["runs"]) for t in measured for s in t["summary"].values()})
    runs_text = "/".join(map(str, runs)) or "0"
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    figure.suptitle(
        f"{results['workload']}: {results['parameters']['devices']:,} devices, {results['started_at']}\n"
        f"{runs_text} runs per target; bar = median, whisker = min{DASH}max"
    )

    def bars(axis: Any, key: str, offset: float, width: float, label: str | None) -> None:
        xs, heights, low, high = [], [], [], []
        for index, target in enumerate(measured):
            if key in target["summary"]:
                s = target["summary"][key]
                xs.append(index + offset)
                heights.append(s["median"])
                low.append(s["median"] - s["min"])
                high.append(s["max"] - s["median"])
        drawn = axis.bar(xs, heights, width, yerr=[low, high], capsize=4, label=label)
        axis.bar_label(drawn, labels=[_number(h) for h in heights], padding=3, fontsize=8)

    bars(left, primary.key, 0.0, 0.6, None)
    for quoted in results["quoted"]:
        if primary.key in quoted["figures"]:
            value = quoted["figures"][primary.key]
            left.axhline(value, linestyle="--", color="grey", linewidth=1)
            left.annotate(f"{quoted['name']}: {_number(value)}", (0, value), fontsize=7, va="bottom", color="grey")
    log_note = _log_scale_if_far_apart(left, measured, (primary.key,))
    left.set_title(f"{primary.label} (median, min{DASH}max){log_note}")
    left.set_ylabel(primary.unit)
    left.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    bars(right, "server_cpu_us_per_frame", -0.2, 0.4, "server")
    bars(right, "loadgen_cpu_us_per_frame", 0.2, 0.4, "load generator")
    log_note = _log_scale_if_far_apart(right, measured, ("server_cpu_us_per_frame", "loadgen_cpu_us_per_frame"))
    right.set_title(f"CPU per acked frame (median, min{DASH}max){log_note}")
    right.set_ylabel("µs of CPU per frame")
    right.legend()
    for axis in (left, right):
        axis.set_xticks(range(len(names)), names)
        axis.set_xlim(-0.6, max(len(names), 1) - 0.4)
    failed = [t["target"] for t in results["targets"] if not t["summary"]]
    if failed:
        figure.text(0.01, 0.01, "failed, not shown: " + ", ".join(failed), fontsize=8, color="firebrick")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(results: dict[str, Any], results_dir: Path) -> dict[str, Path]:
    """Write ``<workload>-<UTC stamp>.{json,md,png}`` and copy each to ``<workload>-latest.*``."""
    return save(results, results_dir, markdown(results), _plot)


def save(
    results: dict[str, Any], results_dir: Path, text: str, plot: Callable[[dict[str, Any], Path], None]
) -> dict[str, Path]:
    """Write ``results`` (with ``workload`` and ``started_at``) as JSON, ``text`` as Markdown and ``plot``'s
    PNG under ``<workload>-<UTC stamp>``, and copy each to ``<workload>-latest.*``; their paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = results["started_at"].replace("-", "").replace(":", "")
    stem = f"{results['workload']}-{stamp}"
    paths = {kind: results_dir / f"{stem}.{kind}" for kind in ("json", "md", "png")}
    paths["md"].write_text(text)
    if importlib.util.find_spec("matplotlib") is None:
        # The plot needs the bench extra; the numbers do not.
        print("benchmarks: matplotlib is not installed (pip install -e '.[bench]'): no PNG written")
        del paths["png"]
    else:
        plot(results, paths["png"])
    files = {kind: path.name for kind, path in paths.items()}  # beside the JSON, wherever it is copied
    paths["json"].write_text(json.dumps({**results, "files": files}, indent=2, ensure_ascii=False) + "\n")
    for kind, path in list(paths.items()):
        latest = results_dir / f"{results['workload']}-latest.{kind}"
        shutil.copyfile(path, latest)
        paths[f"latest_{kind}"] = latest
    return paths


def benchmark_command(workload: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces a run, as its results print it: ``python -m benchmarks <workload>`` and the
    options given (``argv`` from ``python -m benchmarks``; ``sys.argv`` when the module was run directly)."""
    return shlex.join(["python", "-m", "benchmarks", workload, *(sys.argv[1:] if argv is None else argv)])


def show_written(files: dict[str, Path]) -> None:
    """Print the Markdown table just written, then where every file went."""
    print(files["md"].read_text())
    for kind, path in files.items():
        print(f"{kind}: {path}")
