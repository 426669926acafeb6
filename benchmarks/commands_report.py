"""Writing the ``commands`` workload's results: JSON (everything), a Markdown table and a PNG, and ``latest`` copies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness import _machine
from benchmarks.report import DASH, _number, save

__all__ = ["markdown", "write_results"]

# The targets: p99 of the idle round trip, and commands/s at saturation.
TARGET_IDLE_P99_MS = 20.0
TARGET_COMMANDS_PER_S = 5_000.0
# Idle round-trip rows: (figure stem, what is timed from writing the POST).
IDLE_ROWS = (
    ("accepted", "202 Accepted read"),
    ("device", "command read by the device"),
    ("ws", "`completed` read by the dashboard (WebSocket)"),
    ("rest", "`completed` read with `GET /commands/{id}` (REST)"),
)


def _cell(summary: dict[str, dict[str, float]], key: str) -> str:
    s = summary[key]
    return f"{_number(s['median'])} ({_number(s['min'])}{DASH}{_number(s['max'])})"


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def markdown(result: dict[str, Any]) -> str:
    p, m, s = result["parameters"], result["machine"], result["summary"]
    worst_idle = max(s["idle_ws_p99_ms"]["median"], s["idle_rest_p99_ms"]["median"])
    rate = s["commands_per_s"]["median"]
    lines = [
        f"# commands: {result['started_at']}",
        "",
        f"Commands from REST to a device and their results back. Command: `{result['command']}`",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}; server and "
        "client share these CPUs.",
        "",
        f"Server: `{result['started_as']}`. {p['devices']} devices connected (MessagePack), each answering every "
        "command at once with `command_result` `completed`; one dashboard (JSON) on `devices/+/commands`; REST over "
        "keep-alive HTTP/1.1 with an operator API key.",
        "",
        f"Each cell: **median (min{DASH}max) over {p['runs']} runs**.",
        "",
        f"## Idle hub: {p['idle_commands']} commands one at a time, ms from writing the POST",
        "",
        "| moment | p50 | p99 |",
        "|---|---:|---:|",
    ]
    for stem, label in IDLE_ROWS:
        lines.append(f"| {label} | {_cell(s, f'idle_{stem}_p50_ms')} | {_cell(s, f'idle_{stem}_p99_ms')} |")
    lines += [
        "",
        "Over REST, a second connection polls `GET /commands/{id}` back to back from the moment the device has "
        "answered; the time is that of the first answer showing `completed` with the device's result.",
        "",
        f"## Saturation: {p['concurrency']} commands in flight for {p['seconds']:g} s (after {p['settle']:g} s "
        "not counted)",
        "",
        "| commands/s | round trip p50 (ms) | round trip p99 (ms) | server CPU per command (µs) | server cores | "
        "client CPU per command (µs) |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {_cell(s, 'commands_per_s')} | {_cell(s, 'load_ws_p50_ms')} | {_cell(s, 'load_ws_p99_ms')} | "
        f"{_cell(s, 'server_cpu_us_per_command')} | {_cell(s, 'server_cores')} | "
        f"{_cell(s, 'client_cpu_us_per_command')} |",
        "",
        "Round trip: from writing the POST to the dashboard reading `completed`. Server CPU: utime+stime of the hub "
        "and its redis-server over the measured span"
        + (
            f" (hub {_cell(s, 'hub_cpu_us_per_command')} µs, redis-server {_cell(s, 'redis_cpu_us_per_command')} µs "
            "per command)."
            if "redis_cpu_us_per_command" in s
            else "."
        ),
        "",
        *_floor_lines(result),
        "## Against the targets",
        "",
        f"- p99 on an idle hub ≤ {TARGET_IDLE_P99_MS:g} ms (the slower of WebSocket and REST, median run): "
        f"{worst_idle:.2f} ms, {_verdict(worst_idle <= TARGET_IDLE_P99_MS)}",
        f"- ≥ {TARGET_COMMANDS_PER_S:,.0f} commands/s (median run): {rate:,.0f}, "
        f"{_verdict(rate >= TARGET_COMMANDS_PER_S)}",
        "",
        "References: none is run. None of BENCHMARKS.md's references has device commands with a durable "
        "lifecycle: MQTT request/response and NATS request/reply are round trips with nothing stored and no "
        "status to read back.",
        "",
        "Checked in every run before anything is reported: every 202 says `queued`; every command was read by its "
        "device once; REST shows every idle command `completed` with the device's result; the dashboard was sent "
        "every command's `queued`, `sent` and `completed` changes, each once (a device may answer before its "
        "command is marked `sent`: the result then shows `sent` before it ends the command).",
        "",
        "Every run:",
        "",
    ]
    for number, run in enumerate(result["runs"], 1):
        lines.append(
            f"- run {number}: idle WebSocket p50 {run['idle_ws_p50_ms']:.2f} / p99 {run['idle_ws_p99_ms']:.2f} ms, "
            f"REST p50 {run['idle_rest_p50_ms']:.2f} / p99 {run['idle_rest_p99_ms']:.2f} ms; "
            f"{run['completed']:,} completed in {p['seconds']:g} s ({run['commands_per_s']:,.0f}/s), "
            f"{run['posted']:,} posted; server {run['server_cores']:.2f} cores, client {run['client_cores']:.2f}"
            + (
                f"; REST floor {run['floor_requests_per_s']:,.0f} requests/s, {run['floor_server_cores']:.2f} cores"
                if "floor_requests_per_s" in run
                else ""
            )
        )
    return "\n".join(lines) + "\n"


def _floor_lines(result: dict[str, Any]) -> list[str]:
    """The REST floor's table and telehub's share of it (absent from results written before it was measured)."""
    s, p = result["summary"], result["parameters"]
    if "floor_requests_per_s" not in s:
        return []
    share = s["commands_per_s"]["median"] / s["floor_requests_per_s"]["median"]
    cost = s["server_cpu_us_per_command"]["median"] / s["floor_server_cpu_us_per_request"]["median"]
    return [
        f"## REST floor: the same {p['concurrency']} connections posting back to back, same run",
        "",
        f"`{result['floor_started_as']}`: Starlette on uvicorn with `telehub serve`'s options, answering each "
        "`POST /devices/{id}/commands` with 202 after parsing its body: no credential, no rate limit, nothing "
        "stored or delivered. What one process of the hub's HTTP stack answers at most here.",
        "",
        "| requests/s | server CPU per request (µs) | client CPU per request (µs) |",
        "|---:|---:|---:|",
        f"| {_cell(s, 'floor_requests_per_s')} | {_cell(s, 'floor_server_cpu_us_per_request')} | "
        f"{_cell(s, 'floor_client_cpu_us_per_request')} |",
        "",
        f"telehub's commands/s are {share:.2f}x the floor's requests/s (medians); a command costs the server "
        f"{cost:.1f}x the CPU of the floor's request. The target of {TARGET_COMMANDS_PER_S:,.0f} commands/s is "
        f"{TARGET_COMMANDS_PER_S / s['floor_requests_per_s']['median']:.2f}x what the bare stack answers here.",
        "",
    ]


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, p = result["summary"], result["parameters"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    figure.suptitle(
        f"commands: REST to device to result, {result['started_at']}\n"
        f"{p['runs']} run(s); bar = median, whisker = min{DASH}max"
    )
    labels = ["202", "device", "WebSocket", "REST"]
    for offset, quantile in ((-0.2, "p50"), (0.2, "p99")):
        keys = [f"idle_{stem}_{quantile}_ms" for stem, _ in IDLE_ROWS]
        heights = [s[key]["median"] for key in keys]
        errors = [[s[k]["median"] - s[k]["min"] for k in keys], [s[k]["max"] - s[k]["median"] for k in keys]]
        xs = [index + offset for index in range(len(keys))]
        drawn = left.bar(xs, heights, 0.4, yerr=errors, capsize=4, label=quantile)
        left.bar_label(drawn, labels=[f"{h:.2f}" for h in heights], padding=3, fontsize=8)
    left.axhline(TARGET_IDLE_P99_MS, color="red", linestyle="--", linewidth=1, label="p99 target")
    left.set_xticks(range(len(labels)), labels)
    left.set_ylabel("ms from writing the POST")
    left.set_title(f"idle hub, {p['idle_commands']} commands one at a time")
    left.legend(fontsize=8)
    rates = [run["commands_per_s"] for run in result["runs"]]
    drawn = right.bar(range(1, len(rates) + 1), rates, 0.5)
    right.bar_label(drawn, labels=[f"{r:,.0f}" for r in rates], padding=3, fontsize=8)
    right.axhline(TARGET_COMMANDS_PER_S, color="red", linestyle="--", linewidth=1, label="target")
    if "floor_requests_per_s" in s:
        floor = s["floor_requests_per_s"]["median"]
        right.axhline(floor, color="grey", linestyle=":", linewidth=1, label=f"REST floor, requests/s ({floor:,.0f})")
    right.set_xlabel("run")
    right.set_ylabel("commands/s")
    right.set_title(f"saturation, {p['concurrency']} in flight")
    right.legend(fontsize=8)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_results(result: dict[str, Any], results_dir: Path, command: str) -> dict[str, Path]:
    """Write ``commands-<UTC stamp>.{json,md,png}`` and copy each to ``commands-latest.*``; their paths."""
    result = {**result, "command": command, "machine": _machine()}
    return save(result, results_dir, markdown(result), _plot)
