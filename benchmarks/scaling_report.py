"""Writing the ``scaling`` workload's results: JSON (everything), a Markdown table and the curve as a PNG, and
``latest`` copies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness import _machine
from benchmarks.report import DASH, _number, save

__all__ = ["markdown", "write_results"]

TIMES = "\N{MULTIPLICATION SIGN}"
REDIS_LABELS = {"single": "one Redis", "cluster": "Redis Cluster"}


def _range(figure: dict[str, float], kind: str = "") -> str:
    if figure["runs"] == 1:
        return _number(figure["median"], kind)
    return f"{_number(figure['median'], kind)} ({_number(figure['min'], kind)}{DASH}{_number(figure['max'], kind)})"


def _ratio(point: dict[str, Any]) -> str:
    return "—" if point.get("ratio") is None else f"{TIMES}{point['ratio']:.2f}"


def _curves(result: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(workload, Redis mode, its measured points by processes), in the order they were run."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for point in result["points"]:
        found.setdefault((point["workload"], point["redis"]), [])
        if "throughput" in point:
            found[(point["workload"], point["redis"])].append(point)
    return [(w, r, sorted(ps, key=lambda p: int(p["processes"]))) for (w, r), ps in found.items()]


def _machine_note(result: dict[str, Any]) -> str:
    m, p = result["machine"], result["parameters"]
    cores, most = m["cpus"], max(p["processes"])
    note = (
        f"Machine: {cores} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}. **The hub's "
        f"processes, Redis (the embedded redis-server, or the cluster's {p['cluster_masters']} nodes) and the load "
        f"generator all run on these {cores} cores**, beside whatever else runs on the machine (the last column). "
        "More hub processes can only bring more throughput while cores are idle: once the server's cores plus "
        f"the load generator's reach {cores}, the machine is the limit and the ratio cannot grow."
    )
    if most > cores:
        note += (
            f" Here {most} hub processes cannot each get a core: {cores} cores are shared by them, Redis and the "
            "load generator (its cores are in the table), so extra processes mostly share the same CPU more ways "
            "(with more context switches and more Redis connections). A flat or falling ratio there is this "
            "machine's limit, not a measure of how telehub scales on a machine with cores to spare."
        )
    return note


def markdown(result: dict[str, Any]) -> str:
    p = result["parameters"]
    ingest, fanout = p["ingest_rows"], p["fanout"]
    processes = ", ".join(map(str, p["processes"]))
    lines = [
        f"# scaling: {result['started_at']}",
        "",
        f"`ingest-rows` and `fanout` against telehub at {processes} hub processes (`telehub serve --workers N`), "
        f"on one Redis and on a Redis Cluster: throughput and its ratio to 1 process. Command: `{result['command']}`",
        "",
        _machine_note(result),
        "",
        "Redis:",
        "",
    ]
    for mode, described in result["stores"].items():
        lines.append(f"- **{REDIS_LABELS[mode]}** (`{mode}`): {described}")
    lines += [
        "",
        "Load (telehub only, no reference; each point starts its own hub):",
        "",
        f"- `ingest-rows`: {ingest['devices']:,} devices, {ingest['window']} frames in flight each, "
        f"{ingest['seconds']:g} s per run, load generator processes: {ingest['loadgen_processes']}; figure: "
        "frames acked in the window per second.",
        f"- `fanout`: {fanout['devices']} devices publishing to {fanout['dashboards']:,} dashboards (half on "
        f"`devices/+/telemetry`, half on the first device), steps of {fanout['seconds']:g} s after "
        f"{fanout['settle_s']:g} s, from {fanout['start_rate_hz']:g} frames/s per device doubled then bisected to "
        f"saturation (at most {fanout['max_steps']} steps; sustained: 95% of the pace kept and of the deliveries "
        f"due received, p99 under {fanout['latency_limit_ms']:g} ms); figure: the best sustained step's "
        "deliveries/s.",
        "",
        f"Each cell: the median over {p['runs']} run(s) per point (min{DASH}max beside it when more than one). "
        f"Ratio: the point's median over the 1-process median of the same workload and Redis ({TIMES}1.00 at 1 "
        f"process; {TIMES}N would be perfect scaling). Server cores: utime+stime of the hub's processes and of "
        "Redis over the measured window (for `fanout`, the saturating step); anything else: busy cores that "
        "neither side nor the kernel's softirq accounts for.",
        "",
        "| workload | Redis | hub processes | throughput | ratio to 1 process | server cores (hub + Redis) | "
        "load generator cores | anything else (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for point in result["points"]:
        head = f"| `{point['workload']}` | {REDIS_LABELS[point['redis']]} | {point['processes']} |"
        if "throughput" not in point:
            error = point.get("error", "no run").splitlines()[0][:200].replace("|", "/")
            lines.append(f"{head} failed: {error} | — | — | — | — |")
            continue
        unit = result["throughput"][point["workload"]]["unit"]
        lines.append(
            f"{head} {_range(point['throughput'])} {unit} | {_ratio(point)} | "
            f"{_range(point['server_cores'], 'cores')} | {_range(point['loadgen_cores'], 'cores')} | "
            f"{_range(point['other_cores'], 'cores')} |"
        )
    lines += ["", "The curves, as ratios to 1 process:", ""]
    for workload, mode, points in _curves(result):
        parts = [f"{_ratio(point)} at {point['processes']}" for point in points]
        lines.append(f"- `{workload}` on {REDIS_LABELS[mode]}: " + (", ".join(parts) or "nothing measured"))
    lines += ["", "How each point ran:", ""]
    for point in result["points"]:
        started = f"`{point['started_as']}`" if "started_as" in point else "did not start"
        if "server_processes" in point:
            counted = ", ".join(f"{n} {role}" for role, n in sorted(point["server_processes"].items()))
            started += f" (server processes counted: {counted})"
        taken = f", {point['seconds_taken']:.0f} s in all" if "seconds_taken" in point else ""
        lines.append(
            f"- **`{point['workload']}`, {REDIS_LABELS[point['redis']]}, {point['processes']} "
            f"process{'es' if point['processes'] > 1 else ''}**: {started}{taken}"
        )
        if "error" in point:
            lines.append(f"  - failed: `{point['error'].splitlines()[0][:300]}`")
        for number, run in enumerate(point["runs"], 1):
            roles = ", ".join(f"{role} {cores:.2f}" for role, cores in sorted(run["server_cores_by_role"].items()))
            if point["workload"] == "ingest-rows":
                detail = (
                    f"{run['acked_frames']:,} frames acked in {run['elapsed_s']:.2f} s; sent {run['sent']:,}, "
                    f"errors {run['errors']}, unacked {run['unresolved'] + run['lost_frames']}, connections lost "
                    f"{run['lost_connections']}"
                )
            else:
                p99 = "no latency sample" if run["p99_ms"] is None else f"p99 {run['p99_ms']:.1f} ms"
                detail = (
                    f"saturation at {run['saturation_rate_hz']:.4g} frames/s per device (step "
                    f"{run['saturation_step'] + 1} of {run['steps']}; {run['search_ended']}), {p99}"
                )
            lines.append(f"  - run {number}: {detail}; server cores by role: {roles}")
    return "\n".join(lines) + "\n"


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    p, m = result["parameters"], result["machine"]
    workloads = list(dict.fromkeys(point["workload"] for point in result["points"]))
    figure, axes = plt.subplots(1, len(workloads) + 1, figsize=(6 * (len(workloads) + 1), 5), layout="constrained")
    failed = [f"{pt['workload']}/{pt['redis']}/{pt['processes']}" for pt in result["points"] if "throughput" not in pt]
    figure.suptitle(
        f"scaling: throughput against hub processes (telehub serve --workers N), {result['started_at']}\n"
        f"{m['cpus']} CPUs shared by the hub, Redis and the load generator; {p['runs']} run(s) per point "
        f"(median, whisker = min{DASH}max)" + ("\nfailed, not shown: " + ", ".join(failed) if failed else "")
    )
    styles = {"single": "-o", "cluster": "--s"}
    colors = {"single": "tab:blue", "cluster": "tab:orange"}
    shades = {
        "ingest-rows": {"single": "tab:blue", "cluster": "tab:orange"},
        "fanout": {"single": "tab:green", "cluster": "tab:red"},
    }
    by_workload = dict(zip(workloads, axes[:-1], strict=True))
    ratio_axis = axes[-1]
    xs_all = p["processes"]
    for workload, mode, points in _curves(result):
        if not points:
            continue
        xs = [point["processes"] for point in points]
        medians = [point["throughput"]["median"] for point in points]
        low = [point["throughput"]["median"] - point["throughput"]["min"] for point in points]
        high = [point["throughput"]["max"] - point["throughput"]["median"] for point in points]
        axis = by_workload[workload]
        axis.errorbar(
            xs, medians, yerr=[low, high], fmt=styles[mode], color=colors[mode], capsize=4, label=REDIS_LABELS[mode]
        )
        for point, x, y in zip(points, xs, medians, strict=True):
            axis.annotate(_ratio(point), (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
        ratio_points = [point for point in points if point.get("ratio") is not None]
        ratio_axis.plot(
            [point["processes"] for point in ratio_points],
            [point["ratio"] for point in ratio_points],
            styles[mode],
            color=shades.get(workload, colors)[mode],
            label=f"{workload}, {REDIS_LABELS[mode]}",
        )
    for workload, axis in by_workload.items():
        info = result["throughput"][workload]
        axis.set_title(f"{workload}: {info['label']}")
        axis.set_ylabel(info["unit"])
        tops = [pt["throughput"]["max"] for pt in result["points"] if pt["workload"] == workload and "throughput" in pt]
        axis.set_ylim(bottom=0, top=max(tops, default=1.0) * 1.15 or 1.0)
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        axis.legend(fontsize=8)
    ratio_axis.plot(xs_all, xs_all, ":", color="grey", label=f"perfect ({TIMES}N)")
    ratio_axis.axvline(m["cpus"], color="firebrick", linewidth=1, linestyle="-.", label=f"{m['cpus']} CPUs")
    ratio_axis.set_title("ratio to 1 process (medians)")
    ratio_axis.set_ylabel(f"{TIMES} the 1-process throughput")
    ratio_axis.set_ylim(bottom=0)
    ratio_axis.legend(fontsize=8)
    for axis in axes:
        pad = max(0.3, 0.1 * (max(xs_all) - min(xs_all)))
        axis.set_xlim(min(xs_all) - pad, max(xs_all) + pad)
        axis.set_xticks(xs_all)
        axis.set_xlabel("hub processes")
        axis.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_results(result: dict[str, Any], results_dir: Path, command: str) -> dict[str, Path]:
    """Write ``scaling-<UTC stamp>.{json,md,png}`` and copy each to ``scaling-latest.*``; their paths."""
    result = {**result, "command": command, "machine": _machine()}
    return save(result, results_dir, markdown(result), _plot)
