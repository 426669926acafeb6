"""Writing the ``recovery`` workload's results: JSON (everything), a Markdown table and a PNG, and ``latest`` copies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness import _machine
from benchmarks.report import DASH, _number, save

__all__ = ["markdown", "write_results"]

DEFAULT_MAX_REPLAY = 10_000
# Columns of the table: (figure, label).
COLUMNS = (
    ("live_ms", "live again (ms)"),
    ("replay_msgs_per_s", "replay (messages/s)"),
    ("reply_ms", "reply (ms)"),
    ("first_replayed_ms", "first replayed (ms)"),
    ("marker_after_replay_ms", "marker after the replay (ms)"),
    ("server_cpu_us_per_message", "server CPU (µs/message)"),
    ("client_cpu_us_per_message", "client CPU (µs/message)"),
    ("other_cores", "anything else (cores)"),
    ("plain_live_ms", "plain re-subscribe: live (ms)"),
)
CASE_LABELS = {"wildcard": "every device", "exact": "one device"}


def _cell(summary: dict[str, dict[str, float]], key: str) -> str:
    s = summary[key]
    kind = "cores" if key.endswith("cores") else ""
    return f"{_number(s['median'], kind)} ({_number(s['min'], kind)}{DASH}{_number(s['max'], kind)})"


def markdown(result: dict[str, Any]) -> str:
    p, m = result["parameters"], result["machine"]
    lines = [
        f"# recovery: {result['started_at']}",
        "",
        f"A dashboard goes away (closes its socket) while {p['messages']:,} telemetry messages pass on its channel, "
        "then subscribes again on a new connection with `since: {offset, epoch}` of the last message it had. "
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}; server and "
        "client share these CPUs.",
        "",
        f"Server: `{result['started_as']}`. **At the default `TELEHUB_DASHBOARD_MAX_REPLAY` "
        f"({DEFAULT_MAX_REPLAY:,}) a subscribe that would replay more than {DEFAULT_MAX_REPLAY:,} messages of one "
        f"stream answers `recovered: false`** (the client reloads over REST instead); these runs raise it to "
        f"{p['max_replay']:,}.",
        "",
        f"Load: while the dashboard is away, devices send MessagePack `telemetry` frames (metric `n` = the frame's "
        f"`seq`) as fast as acks allow, at most {p['window']} unacked per device: on `devices/+/telemetry` "
        f"{p['devices']} devices share the messages; on one device's channel that device sends them all, with "
        f"{p['window'] * p['devices']} unacked (as many in flight). The "
        f"dashboard ({p['encoding'].upper()} frames) had {p['warmup']} messages per device before it left. "
        f"{_history_text(p)}",
        "",
        "**Live again**: from sending the subscribe to the arrival of the marker, a frame the device publishes as soon "
        "as the reply is read (so it comes after the whole replay). **Reply**: from sending the subscribe to its "
        "reply, which the server sends once it has checked that the history reaches back and is not longer than "
        "the limit. **Replay**: messages replayed over the time from the reply to the last replayed message. "
        "Server CPU: utime+stime of the hub and its redis-server "
        "over the same span; anything else: busy cores (/proc/stat) that neither the server nor the client account "
        "for. **Plain re-subscribe**: the same without `since` (no replay; a dashboard that does not ask for what it "
        "missed), the baseline.",
        "",
        "Checked in every run before anything is reported: the reply says `recovered: true`; the replayed messages "
        "are exactly the missed ones (per device `n` from the first missed to the last, no gap, no duplicate, "
        f"offsets rising, the epoch unchanged); then the marker, and nothing more within {p['quiet_s']:g} s.",
        "",
        f"Each cell: **median (min{DASH}max) over {p['runs']} runs**.",
        "",
        "| channel | missed = replayed | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(COLUMNS),
    ]
    for case, described in result["cases"].items():
        summary = described["summary"]
        replayed = int(summary["replayed"]["median"])
        cells = [_cell(summary, key) for key, _ in COLUMNS]
        label = f"`{described['channel']}` ({CASE_LABELS[case]})"
        lines.append(f"| {label} | {replayed:,} (checked) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "References: none is run. None of the peers of BENCHMARKS.md keeps history for a subscriber that comes back "
        "in this way: Mosquitto (QoS 0) and NATS core pub/sub drop what an absent subscriber misses (MQTT keeps "
        "QoS 1/2 messages only for a persistent session, NATS only with JetStream, neither with an offset the "
        "client names), and python-socketio's rooms have no history. The plain re-subscribe column is what a "
        "dashboard gets from them: live at once, with a gap.",
    ]
    return "\n".join(lines + _detail_lines(result)) + "\n"


def _history_text(p: dict[str, Any]) -> str:
    history = p["history"]
    if not history["frames"]:
        return "No history before the first run: the streams are short in the first run and grow with every run."
    return (
        f"Before the first run the first device sent {history['frames']:,} frames ({history['seconds']:.1f} s), so "
        f"its stream and the organization's hold more than {p['max_replay']:,} entries in every run, as a day of "
        "telemetry would (on a shorter stream the server skips counting the entries to replay)."
    )


def _detail_lines(result: dict[str, Any]) -> list[str]:
    lines = ["", "Every run:", ""]
    for described in result["cases"].values():
        for number, run in enumerate(described["runs"], 1):
            roles = ", ".join(f"{role} {cpu:.2f} s" for role, cpu in sorted(run["server_cpu_s_by_role"].items()))
            lines.append(
                f"- `{described['channel']}` run {number}: published {run['missed']:,} frames in "
                f"{run['publish_s']:.1f} s ({run['publish_frames_per_s']:,.0f} acked frames/s); connected in "
                f"{run['connect_ms']:.1f} ms; reply {run['reply_ms']:.1f} ms, "
                f"first replayed {run['first_replayed_ms']:.1f} ms, "
                f"last {run['replay_end_ms']:,.0f} ms, marker {run['live_ms']:,.0f} ms; {run['replayed']:,} replayed; "
                f"server CPU {roles}; client {run['client_cores']:.2f} cores; plain re-subscribe: reply "
                f"{run['plain_reply_ms']:.1f} ms, marker {run['plain_live_ms']:.1f} ms"
            )
    return lines


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(result["cases"])
    summaries = [result["cases"][case]["summary"] for case in cases]
    names = [f"{result['cases'][case]['channel']}" for case in cases]
    p = result["parameters"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    figure.suptitle(
        f"recovery: back with since after {p['messages']:,} messages, {result['started_at']}\n"
        f"{p['runs']} run(s); bar = median, whisker = min{DASH}max"
    )

    def bars(axis: Any, key: str, offset: float, width: float, label: str | None) -> None:
        xs = [index + offset for index in range(len(cases))]
        heights = [s[key]["median"] for s in summaries]
        errors = [
            [s[key]["median"] - s[key]["min"] for s in summaries],
            [s[key]["max"] - s[key]["median"] for s in summaries],
        ]
        drawn = axis.bar(xs, heights, width, yerr=errors, capsize=4, label=label)
        axis.bar_label(drawn, labels=[_number(h) for h in heights], padding=3, fontsize=8)

    bars(left, "live_ms", -0.2, 0.4, f"with since ({p['messages']:,} replayed)")
    bars(left, "plain_live_ms", 0.2, 0.4, "plain re-subscribe (nothing replayed)")
    left.set_yscale("log")
    left.set_ylabel("ms (log scale)")
    left.set_title("time to be live again")
    left.legend(fontsize=8)
    bars(right, "replay_msgs_per_s", 0.0, 0.5, None)
    right.set_ylabel("messages/s")
    right.set_title("replay throughput")
    for axis in (left, right):
        axis.set_xticks(range(len(cases)), names)
        axis.set_xlim(-0.6, len(cases) - 0.4)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_results(result: dict[str, Any], results_dir: Path, command: str) -> dict[str, Path]:
    """Write ``recovery-<UTC stamp>.{json,md,png}`` and copy each to ``recovery-latest.*``; their paths."""
    result = {**result, "command": command, "machine": _machine()}
    return save(result, results_dir, markdown(result), _plot)
