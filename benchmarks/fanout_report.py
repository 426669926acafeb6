"""Writing the ``fanout`` workload's results: JSON (every step of every run), a Markdown table and a PNG.

The table gives, per target, the primary figures (best sustained deliveries/s; p50/p99/p999 latency at half
of that rate) and the CPU behind them, each as the median with min-max over the runs, and says what each
target does with a frame: the references do less work than telehub, which the ratios must be read with.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.harness import _machine
from benchmarks.report import DASH, _number, save

__all__ = ["markdown", "write_results"]

# Columns of the table: (figure, label, how to print it).
COLUMNS = (
    ("deliveries_per_s", "deliveries/s at saturation", ""),
    ("saturation_rate_hz", "frames/s per device at saturation", ""),
    ("p50_ms", "p50 at half (ms)", ""),
    ("p99_ms", "p99 at half (ms)", ""),
    ("p999_ms", "p999 at half (ms)", ""),
    ("start_p50_ms", "p50 at the start rate (ms)", ""),
    ("start_p99_ms", "p99 at the start rate (ms)", ""),
    ("saturation_server_cores", "server cores at saturation", "cores"),
    ("saturation_server_cpu_us_per_delivery", "server CPU µs/delivery", ""),
    ("saturation_loadgen_cores", "load generator cores", "cores"),
    ("saturation_loadgen_busiest_process_cores", "busiest load generator process (cores)", "cores"),
    ("saturation_other_cores", "anything else (cores)", "cores"),
)
RATIO_LABELS = {
    "deliveries_per_s": "deliveries/s",
    "p50_ms": "p50",
    "p99_ms": "p99",
    "p999_ms": "p999",
    "start_p99_ms": "p99 at the start rate",
    "saturation_server_cpu_us_per_delivery": "server CPU/delivery",
}
TIMES = "\N{MULTIPLICATION SIGN}"


def _cell(summary: dict[str, dict[str, float]], key: str, kind: str = "") -> str:
    if key not in summary:
        return "—"
    s = summary[key]
    return f"{_number(s['median'], kind)} ({_number(s['min'], kind)}{DASH}{_number(s['max'], kind)})"


def _roles(summary: dict[str, dict[str, float]]) -> str:
    prefix = "saturation_server_cores_"
    parts = [f"{key[len(prefix) :]} {s['median']:.2f}" for key, s in sorted(summary.items()) if key.startswith(prefix)]
    return " + ".join(parts) or "—"


def markdown(result: dict[str, Any]) -> str:
    p, m = result["parameters"], result["machine"]
    lines = [
        f"# fanout: {result['started_at']}",
        "",
        f"{p['devices']} devices publish `telemetry` frames (3 metrics and `sent_us`, the send time; MessagePack, "
        f"JSON for Socket.IO); {p['dashboards']:,} dashboards are subscribed, {p['dashboards_every_device']:,} to "
        f"every device (`devices/+/telemetry`) and {p['dashboards_one_device']:,} to the first device only. "
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}, "
        f"websockets {m['websockets']}, uvloop {m['uvloop']}. Servers and load generator share these CPUs.",
        "",
        f"Saturation: the publish rate starts at {p['start_rate_hz']:g} frames/s per device and doubles while a "
        f"step is sustained (measured for {p['seconds']:g} s after {p['settle_s']:g} s at the rate: the publisher "
        f"kept {p['kept_pace']:.0%} of its pace, the dashboards received {p['delivered']:.0%} of the deliveries "
        f"due, p99 under {p['latency_limit_ms']:g} ms, no dashboard closed), then is bisected until the best "
        f"sustained and the lowest failed rate are within {p['refined_ratio'] - 1:.0%}; after each step the load "
        "rests until nothing more arrives. **Deliveries/s at "
        "saturation** is the best sustained step's; **latency** (receive time minus `sent_us`, one delivery in "
        f"{p['sample_every']} sampled) is measured in a step at half its publish rate, and in the first step, "
        f"at {p['start_rate_hz']:g} frames/s per device for every target (equal load: how fast the machine can "
        "be with this many dashboards). Each cell: **median "
        f"(min{DASH}max) over {p['runs']} run(s)**. CPU is utime+stime from /proc over the saturation step's "
        f"window: the server's every process, the load generator's {p['loadgen_dashboard_processes']} dashboard "
        "processes and its publisher; anything else is the cores busy (/proc/stat) with neither nor softirq.",
        "",
        "**The references do less work than telehub**: no auth per message or per tenant, no validation, and no "
        "durability in Redis. telehub stores every frame in Redis Streams (AOF) and acks it before fanning it "
        "out, with an offset and epoch per message for recovery. Column *work per frame*.",
        "",
        "| target | runs | " + " | ".join(label for _, label, _ in COLUMNS) + " | server cores by process | "
        "work per frame |",
        "|---|---:|" + "---:|" * len(COLUMNS) + "---|---|",
    ]
    for target in result["targets"]:
        summary = target["summary"]
        label = target["label"]
        if not summary:
            error = target.get("error", "no run").splitlines()[0]
            lines.append(
                f"| {label} | 0 | failed: {error[:200]} |" + " |" * (len(COLUMNS) + 1) + f" {target['work']} |"
            )
            continue
        runs: int | str = len(target["runs"])
        if "error" in target:
            runs = f"{runs}, then failed"
        cells = [_cell(summary, key, kind) for key, _, kind in COLUMNS]
        lines.append(f"| {label} | {runs} | " + " | ".join(cells) + f" | {_roles(summary)} | {target['work']} |")
    return "\n".join(lines + _ratio_lines(result) + _detail_lines(result)) + "\n"


def _ratio_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for name, by_key in result["ratios"].items():
        parts = [f"{RATIO_LABELS[key]} {TIMES}{value:.2f}" for key, value in by_key.items()]
        if parts:
            lines.append(f"- {name} / telehub: " + ", ".join(parts))
    if not lines:
        return []
    note = "deliveries/s above 1: the reference delivers more; latency and CPU below 1: it is faster, or cheaper"
    return ["", f"Ratios to telehub (medians; {note}):", "", *lines]


def _step_text(step: dict[str, Any]) -> str:
    share = f"{step['delivered_share']:.1%}" if step["delivered_share"] is not None else "-"
    p99 = f", p99 {_number(step['p99_ms'])} ms" if "p99_ms" in step else ""
    mark = "" if step["sustained"] else " ✗"
    return f"{step['rate_hz']:.3g}/s {DASH} {step['deliveries_per_s']:,.0f} ({share}{p99}){mark}"


def _detail_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "How each target ran (per run: each step's frames/s per device, deliveries/s, share of the deliveries "
        "due and p99; ✗ not sustained):",
        "",
    ]
    for target in result["targets"]:
        started = f"`{target['started_as']}`" if "started_as" in target else "did not start"
        lines.append(f"- **{target['target']}**: {started}")
        if "error" in target:
            lines.append(f"  - failed: `{target['error'].splitlines()[0][:300]}`")
        for number, run in enumerate(target["runs"], 1):
            half = run["half"]
            publisher = run["totals"]["publisher"]
            boards = run["totals"]["dashboards"]
            reopened = sum(int(b["reopened"]) for b in boards)
            lines.append(
                f"  - run {number}: " + "; ".join(_step_text(s) for s in run["step_figures"]) + ". Saturation at "
                f"step {run['saturation_step'] + 1}; the search ended: {run['search_ended']}. Half: "
                f"{_step_text(half)}, {half['latency_samples']:,} latency samples. Published {publisher['published']:,}"
                f" frames, skipped {publisher['skipped']:,}, acked {publisher['acked']:,}; dashboards closed by the "
                f"server and reopened: {reopened}"
            )
    return lines


def _plain(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _leading_digit(value: float) -> int:
    return round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    measured = [t for t in result["targets"] if t["summary"]]
    names = [t["target"] for t in measured]
    p = result["parameters"]
    figure, (curve, bars, latency) = plt.subplots(1, 3, figsize=(17, 5.5), layout="constrained")
    figure.suptitle(
        f"fanout: {p['devices']} devices, {p['dashboards']:,} dashboards, {result['started_at']}\n"
        f"{p['runs']} run(s) per target; bar = median, whisker = min{DASH}max"
    )
    thousands = FuncFormatter(lambda value, _: f"{value:,.0f}")
    # Minor ticks of a log axis labelled at 2 and 5 only (all of them would overlap).
    two_and_five = FuncFormatter(lambda value, _: _plain(value) if _leading_digit(value) in (2, 5) else "")
    for index, target in enumerate(measured):
        color = f"C{index}"
        for number, run in enumerate(target["runs"]):
            steps = sorted(run["step_figures"], key=lambda s: s["rate_hz"])
            xs = [s["target_publish_per_s"] for s in steps]
            ys = [s["deliveries_per_s"] for s in steps]
            curve.plot(xs, ys, color=color, alpha=0.6, label=target["target"] if number == 0 else None)
            for step, x, y in zip(steps, xs, ys, strict=True):
                curve.plot(x, y, "o", color=color, fillstyle="full" if step["sustained"] else "none")
    curve.set_xscale("log")
    curve.set_yscale("log")
    curve.set_xlabel("publish rate asked (frames/s, all devices)")
    curve.set_ylabel("deliveries/s")
    curve.set_title("every step (hollow: not sustained)")
    for axis in (curve.xaxis, curve.yaxis):
        axis.set_major_formatter(thousands)
        axis.set_minor_formatter(two_and_five)
    curve.legend(fontsize=8)

    medians = [t["summary"]["deliveries_per_s"] for t in measured]
    drawn = bars.bar(
        range(len(measured)),
        [s["median"] for s in medians],
        0.6,
        yerr=[[s["median"] - s["min"] for s in medians], [s["max"] - s["median"] for s in medians]],
        capsize=4,
        color=[f"C{i}" for i in range(len(measured))],
    )
    bars.bar_label(drawn, labels=[_number(s["median"]) for s in medians], padding=3, fontsize=8)
    bars.set_title(f"deliveries/s at saturation (median, min{DASH}max)")
    bars.yaxis.set_major_formatter(thousands)

    width = 0.25
    for number, key in enumerate(("p50_ms", "p99_ms", "p999_ms")):
        present = [(i, t["summary"][key]) for i, t in enumerate(measured) if key in t["summary"]]
        if not present:
            continue
        xs = [i + (number - 1) * width for i, _ in present]
        heights = [s["median"] for _, s in present]
        errors = [[s["median"] - s["min"] for _, s in present], [s["max"] - s["median"] for _, s in present]]
        drawn = latency.bar(xs, heights, width, yerr=errors, capsize=3, label=key.removesuffix("_ms"))
        latency.bar_label(drawn, labels=[_number(h) for h in heights], padding=2, fontsize=7)
    latency.set_yscale("log")
    latency.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _plain(value)))
    latency.yaxis.set_minor_formatter(two_and_five)
    latency.set_ylabel("ms (log scale)")
    latency.set_title("latency at half of saturation")
    latency.legend(fontsize=8)
    for axis in (bars, latency):
        axis.set_xticks(range(len(names)), names)
        axis.set_xlim(-0.6, max(len(names), 1) - 0.4)
    failed = [t["target"] for t in result["targets"] if not t["summary"]]
    if failed:
        figure.text(0.01, 0.01, "failed, not shown: " + ", ".join(failed), fontsize=8, color="firebrick")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_results(result: dict[str, Any], results_dir: Path, command: str) -> dict[str, Path]:
    """Write ``fanout-<UTC stamp>.{json,md,png}`` and copy each to ``fanout-latest.*``; their paths."""
    result = {**result, "command": command, "machine": _machine()}
    return save(result, results_dir, markdown(result), _plot)
