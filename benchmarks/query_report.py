"""Writing the ``query`` workload's results: JSON (everything), a Markdown table and a PNG, plus ``latest`` copies."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.harness import _machine
from benchmarks.report import DASH, _number, save

__all__ = ["MAX_MARK", "markdown", "p99_index", "p99_is_max", "write_results"]

# Columns of the table: (figure, label).
COLUMNS = (
    ("p50_ms", "p50 (ms)"),
    ("p99_ms", "p99 (ms)"),
    ("server_cpu_ms_per_query", "server CPU (ms/query)"),
    ("client_cpu_ms_per_query", "client CPU (ms/query)"),
    ("other_cores", "anything else (cores)"),
)
# Issue 4: the 1 h query over 7 days at p50 20 ms or less and at least 2x faster than InfluxDB.
GOAL_P50_MS = 20.0
GOAL_RATIO = 2.0
# After a p99 cell that is a batch's slowest query (fewer than 100 queries per batch).
MAX_MARK = "\N{DAGGER}"


def p99_index(queries: int) -> int:
    """Index of the nearest-rank p99 in ``queries`` sorted latencies."""
    return min(queries - 1, math.ceil(0.99 * queries) - 1)


def p99_is_max(queries: int) -> bool:
    """Whether the p99 of ``queries`` latencies is their maximum (nearest rank: below 100 queries)."""
    return p99_index(queries) == queries - 1


def _queries(result: dict[str, Any], target: dict[str, Any]) -> int:
    """Timed queries per batch of ``target`` (results from before ``--peer-queries``: the one ``queries``)."""
    count: int = target.get("queries", result["parameters"]["queries"])
    return count


def _cell(summary: dict[str, float]) -> str:
    return f"{_number(summary['median'])} ({_number(summary['min'])}{DASH}{_number(summary['max'])})"


def _range_text(interval: str, described: dict[str, Any]) -> str:
    span = f"{described['from']} to {described['to']}"
    days = described["days"]
    length = f"{days:.3g} days" if days >= 1 else f"{days * 24:.3g} h" if days >= 1 / 24 else f"{days * 1440:.3g} min"
    return f"{interval}: {length}, {described['buckets']:,} buckets ({span})"


def markdown(result: dict[str, Any]) -> str:
    p, m = result["parameters"], result["machine"]
    lines = [
        f"# query: {result['started_at']}",
        "",
        f"One device, {p['days']:g} days at 1 Hz \N{MULTIPLICATION SIGN} {p['metrics']} metrics stored "
        f"({p['samples']:,} samples); each query asks for the average of all {p['metrics']} metrics per bucket. "
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}; the servers "
        "and the client share these CPUs.",
        "",
        "Ranges (whole buckets, end exclusive): " + "; ".join(_range_text(i, d) for i, d in p["ranges"].items()) + ".",
        "",
        f"Each cell: **median (min{DASH}max) over {p['runs']} runs** of a target's sequential queries (queries/run: "
        f"{_counts_text(result)}; after {p['warmups']} unmeasured ones) on one keep-alive connection, targets "
        "interleaved per run. Latency is the "
        "client's wall time from sending to the last byte of the reply. Server CPU is utime+stime of every server "
        "process over the batch; anything else is the cores busy (/proc/stat) with neither server nor client: "
        "other work on the machine shows there. Before timing, every target's averages at every interval were "
        "checked equal (relative tolerance 1e-9) to the averages of the samples themselves.",
        "",
        "| interval | target | queries/run | " + " | ".join(label for _, label in COLUMNS) + " | reply (KB) |",
        "|---|---|" + "---:|" * (len(COLUMNS) + 2),
    ]
    for interval in p["ranges"]:
        for target in result["targets"]:
            summary, queries = target["intervals"][interval]["summary"], _queries(result, target)
            cells = [
                _cell(summary[key]) + (MAX_MARK if key == "p99_ms" and p99_is_max(queries) else "")
                for key, _ in COLUMNS
            ]
            size = _number(summary["response_bytes"]["median"] / 1024)
            lines.append(f"| {interval} | {target['label']} | {queries} | " + " | ".join(cells) + f" | {size} |")
    lines += _max_note(result) + _ratio_lines(result) + _detail_lines(result)
    return "\n".join(lines) + "\n"


def _counts_text(result: dict[str, Any]) -> str:
    return ", ".join(f"{t['target']} {_queries(result, t)}" for t in result["targets"])


def _max_note(result: dict[str, Any]) -> list[str]:
    short = [t for t in result["targets"] if p99_is_max(_queries(result, t))]
    if not short:
        return []
    return [
        "",
        f"{MAX_MARK} p99 is nearest-rank over a run's queries: with fewer than 100 per run it is the run's slowest "
        "query, the max, not a 99th percentile ("
        + ", ".join(f"{t['target']}: the slowest of {_queries(result, t)}" for t in short)
        + "). The slowest of fewer queries tends to be faster: a ratio of such figures between targets with "
        "different counts favours the one with fewer.",
    ]


def _ratio_lines(result: dict[str, Any]) -> list[str]:
    if not result["ratios"]:
        return []
    times = "\N{MULTIPLICATION SIGN}"
    lines = ["", "InfluxDB's median over telehub's (above 1: telehub is faster):", ""]
    marked = MAX_MARK if any(p99_is_max(_queries(result, t)) for t in result["targets"]) else ""
    for interval, ratio in result["ratios"].items():
        lines.append(f"- {interval}: p50 {times}{ratio['p50']:.2f}, p99{marked} {times}{ratio['p99']:.2f}")
    telehub = next(t for t in result["targets"] if t["target"] == "telehub")
    p50 = telehub["intervals"]["1h"]["summary"]["p50_ms"]["median"]
    ratio = result["ratios"]["1h"]["p50"]
    met = p50 <= GOAL_P50_MS and ratio >= GOAL_RATIO
    scope = (
        "" if result["parameters"]["days"] == 7 else f" (measured over {result['parameters']['days']:g} days, not 7)"
    )
    lines += [
        "",
        f"Issue 4's goal, the 1h query over 7 days at p50 \N{LESS-THAN OR EQUAL TO} {GOAL_P50_MS:g} ms and at least "
        f"{GOAL_RATIO:g}{times} faster than InfluxDB: **{'met' if met else 'not met'}**{scope}: p50 {p50:.2f} ms, "
        f"{times}{ratio:.2f}.",
    ]
    return lines


def _detail_lines(result: dict[str, Any]) -> list[str]:
    lines = ["", "How each target ran:", ""]
    for target in result["targets"]:
        load = target["load"]
        waited = load.get("counts_complete_after_s")
        closed = "" if waited is None else f"; queried from {waited:.1f} s after the load (windows closed when idle)"
        lines.append(
            f"- **{target['target']}**: `{target['started_as']}`; loaded {load['samples']:,} samples once, before "
            f"the first run, in {load['seconds']:.1f} s ({load['samples_per_s']:,.0f} samples/s){closed}"
        )
    return lines


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    intervals = list(result["parameters"]["ranges"])
    targets = result["targets"]
    width = 0.8 / len(targets)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    figure.suptitle(
        f"query: average of 10 metrics over {result['parameters']['days']:g} days at 1 Hz, {result['started_at']}\n"
        f"{result['parameters']['runs']} run(s); queries/run: {_counts_text(result)}; bar = median, "
        f"whisker = min{DASH}max"
    )
    short = [t["target"] for t in targets if p99_is_max(_queries(result, t))]
    for axis, key in zip(axes, ("p50_ms", "p99_ms"), strict=True):
        for number, target in enumerate(targets):
            summaries = [target["intervals"][i]["summary"][key] for i in intervals]
            xs = [index + (number - (len(targets) - 1) / 2) * width for index in range(len(intervals))]
            heights = [s["median"] for s in summaries]
            errors = [[s["median"] - s["min"] for s in summaries], [s["max"] - s["median"] for s in summaries]]
            bars = axis.bar(xs, heights, width, yerr=errors, capsize=4, label=target["label"])
            axis.bar_label(bars, labels=[_number(h) for h in heights], padding=3, fontsize=8)
        low = min(s["min"] for t in targets for s in (t["intervals"][i]["summary"][key] for i in intervals))
        high = max(s["max"] for t in targets for s in (t["intervals"][i]["summary"][key] for i in intervals))
        if low > 0 and high / low > 30:  # a small bar would be invisible on a linear scale
            axis.set_yscale("log")
            axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        if key == "p50_ms" and "1h" in intervals:
            goal = intervals.index("1h")
            axis.hlines(GOAL_P50_MS, goal - 0.45, goal + 0.45, colors="grey", linestyles="--", linewidth=1)
            axis.annotate(f"goal {GOAL_P50_MS:g} ms", (goal - 0.45, GOAL_P50_MS), fontsize=7, color="grey", va="bottom")
        axis.set_xticks(range(len(intervals)), [f"interval {i}" for i in intervals])
        axis.set_ylabel("ms" + (" (log scale)" if axis.get_yscale() == "log" else ""))
        slowest = f"\n({', '.join(short)}: under 100 queries/run, the slowest)" if key == "p99_ms" and short else ""
        axis.set_title(f"latency {key.split('_')[0]} (median, min{DASH}max){slowest}")
        axis.legend(fontsize=8)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_results(result: dict[str, Any], results_dir: Path, command: str) -> dict[str, Path]:
    """Write ``query-<UTC stamp>.{json,md,png}`` and copy each to ``query-latest.*``; their paths."""
    result = {**result, "command": command, "machine": _machine()}
    return save(result, results_dir, markdown(result), _plot)
