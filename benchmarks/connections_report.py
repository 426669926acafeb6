"""Writing the ``connections`` workload's results: JSON (everything), a Markdown table and a PNG, and ``latest``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness import _machine
from benchmarks.report import DASH, _number, save

__all__ = ["BUDGET_KIB", "markdown", "write_results"]

# ARCHITECTURE.md: an idle device or dashboard connection costs at most 20 KiB of server memory.
BUDGET_KIB = 20.0
COLUMNS = (
    ("connects_per_s", "connects/s"),
    ("kib_per_connection", "server memory (KiB/connection)"),
    ("server_kib_per_connection", "of which the server process"),
    ("redis_kib_per_connection", "of which redis-server"),
    ("server_cpu_us_per_connect", "server CPU (µs/connect)"),
    ("client_cpu_us_per_connect", "client CPU (µs/connect)"),
)
SERVER_PROCESS = {"telehub": "`telehub serve` (hub)", "socketio": "uvicorn (python-socketio)"}


def _cell(summary: dict[str, dict[str, float]], key: str) -> str:
    if key not in summary:
        return "—"
    s = summary[key]
    return f"{_number(s['median'])} ({_number(s['min'])}{DASH}{_number(s['max'])})"


def _budget(summary: dict[str, dict[str, float]], kind: str) -> str:
    figure = summary.get(f"{kind}_kib_per_connection")
    if figure is None:
        return "—"
    if figure["max"] <= BUDGET_KIB:
        return "**met**"
    return "**not met**" if figure["median"] > BUDGET_KIB else "met by the median"


def markdown(result: dict[str, Any]) -> str:
    p, m = result["parameters"], result["machine"]
    lines = [
        f"# connections: {result['started_at']}",
        "",
        f"{p['connections']:,} idle devices and {p['connections']:,} idle dashboards on telehub; {p['connections']:,} "
        f"idle dashboards on python-socketio. Command: `{result['command']}`",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}; servers and "
        f"clients share these CPUs. {p['processes']} client processes (uvloop), each opening at most "
        f"{p['connect_concurrency']} connections at once.",
        "",
        "Each run starts a fresh server (a process does not give memory back, so a second run on it would show "
        f"less){_provisioned_text(result)}, reads the RSS of its processes {_steady_text(p)}, opens every "
        "connection of a kind from one instant, and reads the RSS again the same way after the last is open: memory "
        "per connection = RSS growth / connections, for the server process and its redis-server (telehub's "
        "embedded one; "
        "python-socketio's `AsyncRedisManager`'s) and in total. A device is open at its `hello` (key checked, "
        "device marked online); a dashboard when its subscription to one device's channel is acked "
        "(`devices/<id>/telemetry`; Socket.IO: its `subscribe` event joining room `device:<id>`, after the "
        "Engine.IO open and namespace connect). connects/s = connections / seconds until the last was open. "
        "Kernel socket buffers are in no RSS.",
        "",
        f"Each cell: **median (min{DASH}max) over the runs**. ARCHITECTURE.md's budget: at most "
        f"{BUDGET_KIB:g} KiB of server memory (server process + redis-server) per idle device or dashboard connection.",
        "",
        "| target | connections | runs | "
        + " | ".join(label for _, label in COLUMNS)
        + f" | budget {BUDGET_KIB:g} KiB |",
        "|---|---|---:|" + "---:|" * len(COLUMNS) + "---|",
    ]
    for target in result["targets"]:
        summary = target["summary"]
        if not target["runs"]:
            lines.append(f"| {target['label']} | | 0 | failed: {target.get('error', 'no run').splitlines()[0]} |")
            continue
        runs: int | str = len(target["runs"])
        if "error" in target:
            runs = f"{runs}, then failed"
        for kind in target["kinds"]:
            cells = [_cell(summary, f"{kind}_{key}") for key, _ in COLUMNS]
            row = f"| {target['label']} | {p['connections']:,} idle {kind} | {runs} | " + " | ".join(cells)
            lines.append(row + f" | {_budget(summary, kind)} |")
    lines += _ratio_lines(result) + _idle_lines(result) + _detail_lines(result)
    return "\n".join(lines) + "\n"


def _provisioned_text(result: dict[str, Any]) -> str:
    provisioned = next((t["provisioned"] for t in result["targets"] if "provisioned" in t), None)
    if provisioned is None:
        return ""
    return (
        f", telehub's on a copy of one data dir (its {provisioned['devices']:,} devices and the dashboards' viewer "
        f"API key were made over REST once, in {provisioned['seconds']:.0f} s before the first run, on a server then "
        "stopped)"
    )


def _steady_text(p: dict[str, Any]) -> str:
    if "steady_kib" not in p:  # results from before the steady reading: a fixed wait
        return f"after {p['settle_s']:g} s"
    return (
        f"once it holds steady (total within {p['steady_kib']:g} KiB over {p['steady_s']:g} s, read every "
        f"{p['steady_every_s']:g} s; at most {p['settle_s']:g} s)"
    )


def _ratio_lines(result: dict[str, Any]) -> list[str]:
    by_name = {t["target"]: t["summary"] for t in result["targets"] if t["runs"]}
    if not {"telehub", "socketio"} <= by_name.keys():
        return []
    telehub, socketio = by_name["telehub"], by_name["socketio"]
    memory = socketio["dashboards_kib_per_connection"]["median"] / telehub["dashboards_kib_per_connection"]["median"]
    rate = telehub["dashboards_connects_per_s"]["median"] / socketio["dashboards_connects_per_s"]["median"]
    times = "\N{MULTIPLICATION SIGN}"
    return [
        "",
        f"Dashboards, medians: python-socketio takes {times}{memory:.2f} telehub's memory per idle connection "
        f"(above 1: telehub takes less); telehub connects {times}{rate:.2f} as many per second.",
        "python-socketio does less per connection: no credential to check, no connection lease, no offsets; "
        "its Redis holds no per-connection state (only pub/sub).",
    ]


def _idle_lines(result: dict[str, Any]) -> list[str]:
    seconds = result["parameters"]["idle_s"]
    lines = ["", f"Server CPU while everything idles, over {seconds:g} s (cores, median (min{DASH}max)):", ""]
    for target in result["targets"]:
        if target["runs"]:
            lines.append(f"- {target['label']}: {_cell(target['summary'], 'idle_server_cores')}")
    return lines


def _detail_lines(result: dict[str, Any]) -> list[str]:
    lines = ["", "How each target ran:", ""]
    for target in result["targets"]:
        started = f"`{target['started_as']}` (last run)" if "started_as" in target else "did not start"
        lines.append(f"- **{target['label']}**: {started}")
        if "error" in target:
            lines.append(f"  - failed: `{target['error'].splitlines()[0][:300]}`")
        for number, run in enumerate(target["runs"], 1):
            base = run["baseline_rss_kib"]
            parts = [
                f"baseline RSS server {base['server'] / 1024:.1f} MiB, redis {base['redis'] / 1024:.1f} MiB"
                + _steady_after(run.get("baseline_steady_s"))
            ]
            for kind, described in run["kinds"].items():
                after = described["rss_after_kib"]
                parts.append(
                    f"{described['connections']:,} {kind} open in {described['connect_s']:.2f} s, then server "
                    f"{after['server'] / 1024:.1f} MiB, redis {after['redis'] / 1024:.1f} MiB"
                    + _steady_after(described.get("steady_s"))
                )
            idle = run["idle_server_cores_by_role"]
            parts.append(
                f"idle: server process {idle['server']:.2f} cores, redis {idle['redis']:.2f}, machine "
                f"{run['idle_busy_cores']:.2f} busy"
            )
            parts.append(f"dropped while idle: {run['dropped']}")
            lines.append(f"  - run {number}: " + "; ".join(parts))
    return lines


def _steady_after(seconds: float | None) -> str:
    return "" if seconds is None else f" (steady after {seconds:.1f} s)"


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(t, kind) for t in result["targets"] if t["runs"] for kind in t["kinds"]]
    names = [f"{t['target']}\n{kind}" for t, kind in rows]
    p = result["parameters"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    figure.suptitle(
        f"connections: {p['connections']:,} idle connections of each kind, {result['started_at']}\n"
        f"{p['runs']} run(s), a fresh server each; bar = median, whisker = min{DASH}max"
    )

    def bars(axis: Any, key: str, offset: float, width: float, label: str | None) -> None:
        summaries = [t["summary"][f"{kind}_{key}"] for t, kind in rows]
        xs = [index + offset for index in range(len(rows))]
        heights = [s["median"] for s in summaries]
        errors = [[s["median"] - s["min"] for s in summaries], [s["max"] - s["median"] for s in summaries]]
        drawn = axis.bar(xs, heights, width, yerr=errors, capsize=4, label=label)
        axis.bar_label(drawn, labels=[_number(h) for h in heights], padding=3, fontsize=8)

    bars(left, "server_kib_per_connection", -0.2, 0.4, "server process")
    bars(left, "redis_kib_per_connection", 0.2, 0.4, "redis-server")
    left.axhline(BUDGET_KIB, linestyle="--", color="grey", linewidth=1)
    left.annotate(
        f"budget {BUDGET_KIB:g} KiB (both together)", (-0.5, BUDGET_KIB), fontsize=7, color="grey", va="bottom"
    )
    left.set_ylabel("KiB per idle connection")
    left.set_title("server memory per idle connection (RSS growth)")
    left.legend(fontsize=8)
    bars(right, "connects_per_s", 0.0, 0.5, None)
    right.set_ylabel("connections/s")
    right.set_title("connects/s")
    for axis in (left, right):
        axis.set_xticks(range(len(rows)), names)
        axis.set_xlim(-0.6, max(len(rows), 1) - 0.4)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_results(result: dict[str, Any], results_dir: Path, command: str) -> dict[str, Path]:
    """Write ``connections-<UTC stamp>.{json,md,png}`` and copy each to ``connections-latest.*``; their paths."""
    result = {**result, "command": command, "machine": _machine()}
    return save(result, results_dir, markdown(result), _plot)
