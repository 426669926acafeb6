"""The ``soak`` workload's verdict ("no upward trend") and its results: JSON, a Markdown table and a PNG.

**The trend criterion.** The first half of the samples is warm-up (the hub's caches, Redis's buffers and the
allocators settle); a least-squares line is fitted to each figure over the second half, against the time of
each sample, and its slope is given per 10 minutes and as a share of the figure's median over that half. A
memory figure trends upward when it grows by more than 2% of its median per 10 minutes (at a hub of 150 MiB:
3 MiB per 10 minutes; the Markdown says what leak per frame and per delivery that is at the soak's load);
p99 latency and the hub's CPU when they grow by more than 10% per 10 minutes (they are noisier). With fewer
than ``MIN_JUDGED`` samples in the second half the slopes are given but nothing is judged: a line through a
handful of points fits noise.

**Only the hub's RSS decides** (exit code 1 when it trends upward). Redis's memory grows with what it stores:
every frame is kept in its device's stream and in the organization's telemetry stream until retention trims
it (``ingest.stream_writer.Retention``: 7 days and 1 day), so over 30 minutes its RSS rises as the stored
entries do, and that is no leak. The report separates the two: Redis's ``used_memory``, the part of it in
streams (``MEMORY USAGE ... SAMPLES 0`` of every stream key) with the bytes per stored frame, and the rest,
judged by the same 2% criterion but relative to the median of ``used_memory`` (the rest alone is small, and may
dip below zero: on the reference machine ``MEMORY USAGE`` grew about 10% faster than ``used_memory`` as
entries were added, so the rest drifts slightly downward and a Redis leak smaller than that drift is masked).
A leak that grows with every stored frame cannot be told from the streams this way at all; that is what the
bytes per stored frame are for, to compare between soaks.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import _machine
from benchmarks.report import save
from ingest.stream_writer import Retention

__all__ = ["JUDGED", "MIN_JUDGED", "judge", "markdown", "trend", "write_results"]

# Samples of the second half needed before a slope is judged.
MIN_JUDGED = 5
# A slope counts as a trend only this many standard errors away from zero: below it, noise could draw it.
MIN_T = 2.0
# Figure -> (label, threshold as a share of its median per 10 minutes (None: reported, never judged), decides).
JUDGED: dict[str, tuple[str, float | None, bool]] = {
    "hub_rss_kib": ("hub RSS (KiB)", 0.02, True),
    "redis_rss_kib": ("Redis RSS (KiB)", 0.02, False),
    "redis_used_memory_kib": ("Redis used_memory (KiB)", 0.02, False),
    "redis_streams_kib": ("of which streams (KiB)", None, False),
    "redis_other_kib": ("of which the rest (KiB; share of used_memory)", 0.02, False),
    "stream_entries": ("stream entries", None, False),
    "hub_cores": ("hub CPU (cores)", 0.10, False),
    "redis_cores": ("Redis CPU (cores)", None, False),
    "p99_ms": ("p99 latency (ms)", 0.10, False),
    "deliveries_per_s": ("deliveries/s", None, False),
}
# Figures that grow with the stored frames: their rise is the streams' when the rest of Redis's memory is flat.
STREAM_BOUND = ("redis_rss_kib", "redis_used_memory_kib")
DAY_MS = 86_400_000


def trend(
    t_min: Sequence[float], values: Sequence[float], threshold: float | None, relative_to: float | None = None
) -> dict[str, Any]:
    """The least-squares slope of ``values`` against ``t_min`` (minutes), per 10 minutes and as a share of
    their median (or of ``relative_to``), and its t statistic (the slope over its standard error); ``upward``
    when judged (at least ``MIN_JUDGED`` points), that share exceeds ``threshold`` and the slope is at least
    ``MIN_T`` standard errors above zero (a noisy series can fit a steep line by chance)."""
    count = len(values)
    median = statistics.median(values) if values else 0.0
    mean_t = sum(t_min) / count if count else 0.0
    spread = sum((t - mean_t) ** 2 for t in t_min)
    slope: float | None = None
    t_stat: float | None = None
    if count >= 2 and spread > 0:
        mean_v = sum(values) / count
        per_min = sum((t - mean_t) * (v - mean_v) for t, v in zip(t_min, values, strict=True)) / spread
        slope = per_min * 10
        if count > 2:
            residuals = sum((v - mean_v - per_min * (t - mean_t)) ** 2 for t, v in zip(t_min, values, strict=True))
            error = math.sqrt(residuals / (count - 2) / spread)
            t_stat = per_min / error if error > 0 else math.copysign(math.inf, per_min) if per_min else 0.0
    base = median if relative_to is None else relative_to
    share = slope / base if slope is not None and base > 0 else None
    judged = count >= MIN_JUDGED and share is not None and threshold is not None
    return {
        "samples": count,
        "span_min": (max(t_min) - min(t_min)) if count else 0.0,
        "median": median,
        "relative_to": base,
        "slope_per_10min": slope,
        "share_per_10min": share,
        "threshold_per_10min": threshold,
        "judged": judged,
        "t": t_stat,
        "upward": bool(
            judged
            and share is not None
            and threshold is not None
            and share > threshold
            and (t_stat is None or t_stat >= MIN_T)
        ),
        # The fitted line's value at the mean time (for the plot): the line is mean + slope * (t - mean_t).
        "mean_t_min": mean_t,
        "mean": sum(values) / count if count else 0.0,
    }


def judge(samples: list[dict[str, Any]], *, failed: str | None = None) -> dict[str, Any]:
    """Every figure's trend over the second half of ``samples``, and what they mean (see the docstring)."""
    judged = samples[len(samples) // 2 :]
    present = [key for key in JUDGED if judged and all(s.get(key) is not None for s in judged)]
    # Redis's memory outside the streams, relative to all of its memory (see the docstring).
    relative = {"redis_other_kib": "redis_used_memory_kib"}
    trends = {
        key: trend(
            [s["t_min"] for s in judged],
            [float(s[key]) for s in judged],
            JUDGED[key][1],
            statistics.median(float(s[relative[key]]) for s in judged) if key in relative else None,
        )
        for key in present
        if key not in relative or relative[key] in present
    }
    upward = [key for key, found in trends.items() if found["upward"]]
    hub = trends.get("hub_rss_kib")
    hub_upward = bool(hub and hub["upward"])
    result: dict[str, Any] = {
        "judged_from_min": judged[0]["t_min"] if judged else None,
        "judged_samples": len(judged),
        "trends": trends,
        "upward": upward,
        "hub_rss_upward": hub_upward,
        "hub_rss_judged": bool(hub and hub["judged"]),
        "failed": failed,
        "passed": failed is None and not hub_upward and bool(samples),
        "not_held": sum(1 for s in samples if not s.get("held", True)),
        "dashboards_closed": sum(int(s.get("dashboards_lost", 0)) for s in samples),
        "reopened": sum(int(s.get("reopened", 0)) for s in samples),
        "skipped": sum(int(s.get("skipped", 0)) for s in samples),
        "retention_days": {
            "device frames": Retention().frames_ms / DAY_MS,
            "telemetry": Retention().telemetry_ms / DAY_MS,
        },
    }
    stored = sum(int(s["acked"]) for s in judged[1:])
    if stored and "redis_streams_kib" in trends:
        grown = judged[-1]["redis_streams_kib"] - judged[0]["redis_streams_kib"]
        result["stream_bytes_per_stored_frame"] = grown * 1024 / stored
    if hub and hub["threshold_per_10min"] is not None and judged:
        acked = statistics.median(s["acked_per_s"] for s in judged) * 600
        delivered = statistics.median(s["deliveries_per_s"] for s in judged) * 600
        allowed = hub["median"] * hub["threshold_per_10min"] * 1024
        result["hub_threshold_kib_per_10min"] = allowed / 1024
        result["leak_floor_bytes_per_frame"] = allowed / acked if acked else None
        result["leak_floor_bytes_per_delivery"] = allowed / delivered if delivered else None
    result["text"] = _text(result)
    return result


def _text(verdict: dict[str, Any]) -> str:
    if verdict["failed"]:
        return f"failed: the soak broke off ({verdict['failed'].splitlines()[0]})"
    hub = verdict["trends"].get("hub_rss_kib")
    if hub is None:
        return "failed: no sample was taken"
    slope = f"{hub['slope_per_10min']:+,.0f} KiB per 10 min" if hub["slope_per_10min"] is not None else "no slope"
    share = f" ({hub['share_per_10min']:+.2%} of its median)" if hub["share_per_10min"] is not None else ""
    if not hub["judged"]:
        return f"not judged: {hub['samples']} samples after warm-up, {MIN_JUDGED} needed; hub RSS {slope}{share}"
    if hub["upward"]:
        return f"upward trend: hub RSS {slope}{share}, over the {hub['threshold_per_10min']:.0%} threshold"
    return f"no upward trend: hub RSS {slope}{share}, within the {hub['threshold_per_10min']:.0%} threshold"


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"


def _trend_rows(verdict: dict[str, Any]) -> list[str]:
    rows = [
        "| figure | median | slope per 10 min | share of median | t | threshold | trend |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    trends = verdict["trends"]
    for key, found in trends.items():
        label, threshold, decides = JUDGED[key]
        if (
            found["upward"]
            and key in STREAM_BOUND
            and "redis_other_kib" in trends
            and not trends["redis_other_kib"]["upward"]
        ):
            call = "upward: the stream data (expected)"
        elif found["upward"]:
            call = "**upward**" if decides else "upward"
        elif (
            found["judged"]
            and found["share_per_10min"] is not None
            and found["threshold_per_10min"] is not None
            and (found["share_per_10min"] > found["threshold_per_10min"])
        ):
            call = "flat: the slope is noise (t under 2)"
        elif found["judged"]:
            call = "flat"
        else:
            call = "not judged" if threshold is not None else "reported"
        share = f"{found['share_per_10min']:+.2%}" if found["share_per_10min"] is not None else "—"
        slope = found["slope_per_10min"]
        rows.append(
            f"| {label}{', decides' if decides else ''} | {_num(found['median'], 2)} | "
            f"{'—' if slope is None else ('+' if slope >= 0 else '') + _num(slope, 2)} | {share} | "
            f"{_num(found.get('t'), 1)} | {'—' if threshold is None else f'{threshold:.0%}'} | {call} |"
        )
    return rows


def _sample_rows(samples: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| min | hub RSS (MiB) | Redis RSS (MiB) | Redis used (MiB) | in streams (MiB) | stream entries | "
        "hub cores | Redis cores | load gen. cores | deliveries/s | acked frames/s | p50 (ms) | p99 (ms) | "
        "skipped / closed / reopened | held |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in samples:
        mib = {key: s[key] / 1024 if s.get(key) is not None else None for key in (
            "hub_rss_kib", "redis_rss_kib", "redis_used_memory_kib", "redis_streams_kib")}  # fmt: skip
        rows.append(
            f"| {s['t_min']:.1f} | {_num(mib['hub_rss_kib'])} | {_num(mib['redis_rss_kib'])} | "
            f"{_num(mib['redis_used_memory_kib'])} | {_num(mib['redis_streams_kib'])} | "
            f"{s.get('stream_entries', 0):,} | {s['hub_cores']:.2f} | {s['redis_cores']:.2f} | "
            f"{s['loadgen_cores']:.2f} | {s['deliveries_per_s']:,.0f} | {s['acked_per_s']:,.0f} | "
            f"{_num(s.get('p50_ms'))} | {_num(s.get('p99_ms'))} | "
            f"{s['skipped']:,} / {s['dashboards_lost']} / {s.get('reopened', 0)} | "
            f"{'yes' if s['held'] else s['why_not']} |"
        )
    return rows


def markdown(result: dict[str, Any]) -> str:
    p, m, v = result["parameters"], result["machine"], result["verdict"]
    lines = [
        f"# soak: {result['started_at']}",
        "",
        f"{p['devices']} devices publish `telemetry` frames at {p['rate_hz']:g} frames/s each "
        f"({p['rate_hz'] * p['devices']:,.0f} frames/s, each stored in Redis before its ack) to "
        f"{p['dashboards']:,} dashboards ({p['dashboards_every_device']:,} on `devices/+/telemetry`, "
        f"{p['dashboards_one_device']:,} on the first device's channel) for {p['minutes']:g} minutes; one sample "
        f"every {p['interval_s']:g} s. Command: `{result['command']}`",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}. The server "
        f"and the load generator share these CPUs. Server: `{result.get('started_as', '—')}`.",
        "",
        f"**Verdict: {v['text']}.**",
        "",
    ]
    if result.get("error"):
        lines += [f"The soak broke off: `{result['error'].splitlines()[0]}`", ""]
    if v["judged_from_min"] is not None:
        lines += [
            f"Trends: a least-squares line over the second half of the samples ({v['judged_samples']}, from "
            f"minute {v['judged_from_min']:.1f}; the first half is warm-up), its slope per 10 minutes and as a "
            "share of the median. Memory trends upward above 2% of its median per 10 minutes (Redis's memory "
            "outside the streams: 2% of its whole `used_memory`), p99 and the hub's CPU above 10%, and only when the "
            f"slope is at least {MIN_T:g} standard errors above zero (t); at least {MIN_JUDGED} samples are needed "
            "to judge. Only the hub's RSS decides.",
            "",
            *_trend_rows(v),
            "",
        ]
    if v.get("leak_floor_bytes_per_frame") is not None:
        lines += [
            f"At this load the hub's threshold, {v['hub_threshold_kib_per_10min']:,.0f} KiB per 10 minutes, is a "
            f"leak of {_num(v['leak_floor_bytes_per_frame'])} bytes per stored frame or "
            f"{_num(v['leak_floor_bytes_per_delivery'], 3)} bytes per delivery; smaller leaks pass unseen in "
            "30 minutes.",
            "",
        ]
    days = v["retention_days"]
    per_frame = v.get("stream_bytes_per_stored_frame")
    lines += [
        "Redis keeps every frame in its device's stream and in the organization's telemetry stream until "
        f"retention trims it ({days['device frames']:g} days and {days['telemetry']:g} day by default), so its "
        "memory grows with the streams during a soak: expected, not a leak"
        + (f" ({per_frame:,.0f} bytes of stream per stored frame in the second half)" if per_frame else "")
        + ". A leak in Redis would show in its memory outside the streams (`used_memory` minus `MEMORY USAGE` "
        "of every stream key), unless it grows with every stored frame: `MEMORY USAGE` grew about 10% faster "
        "than `used_memory` per entry on the reference machine, so the rest drifts slightly downward.",
        "",
        f"Over the soak: {v['not_held']} interval(s) did not hold the load (the publisher kept 95% of its pace, "
        f"the dashboards received 95% of the deliveries due, p99 under {p['latency_limit_ms']:g} ms, no "
        f"dashboard closed); {v['skipped']:,} frames skipped (the window of unacked frames full), "
        f"{v['dashboards_closed']} dashboards closed by the server, {v['reopened']} reopened.",
        "",
        "## Samples",
        "",
        "Memory at the end of each interval; CPU, rates and latency over it (one delivery in "
        f"{p['sample_every']} sampled).",
        "",
        *_sample_rows(result["samples"]),
        "",
    ]
    return "\n".join(lines)


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, verdict = result["samples"], result["verdict"]
    figure, axes = plt.subplots(5, 1, figsize=(10, 15), sharex=True)
    hub, memory, cpu, latency, rates = axes
    t = [s["t_min"] for s in samples]
    since = verdict["judged_from_min"]

    def series(axis: Any, key: str, label: str, scale: float = 1.0, **style: Any) -> None:
        points = [(x, s[key] * scale) for x, s in zip(t, samples, strict=True) if s.get(key) is not None]
        if points:
            axis.plot(*zip(*points, strict=True), marker=".", label=label, **style)
        found = verdict["trends"].get(key)
        if found and found["slope_per_10min"] is not None and since is not None and found["threshold_per_10min"]:
            xs = [since, t[-1]]
            ys = [(found["mean"] + found["slope_per_10min"] / 10 * (x - found["mean_t_min"])) * scale for x in xs]
            axis.plot(xs, ys, color="black", linestyle=":", linewidth=1)

    series(hub, "hub_rss_kib", "hub RSS", 1 / 1024)
    found = verdict["trends"].get("hub_rss_kib")
    if found and since is not None and found["threshold_per_10min"]:
        # Where the line would end at the threshold's slope, from the fitted line's start.
        at_start = found["mean"] + (found["slope_per_10min"] or 0.0) / 10 * (since - found["mean_t_min"])
        limit = found["median"] * found["threshold_per_10min"] / 10
        hub.plot(
            [since, t[-1]],
            [at_start / 1024, (at_start + limit * (t[-1] - since)) / 1024],
            color="firebrick",
            linestyle="--",
            linewidth=1,
            label=f"threshold: +{found['threshold_per_10min']:.0%} of the median per 10 min",
        )
        # At least ±5% of the median in view, so that noise does not fill the panel.
        low, high = hub.get_ylim()
        middle = found["median"] / 1024
        hub.set_ylim(min(low, middle * 0.95), max(high, middle * 1.05))
    hub.set_ylabel("MiB")
    hub.set_title("hub RSS at the end of each interval (dotted: least-squares line over the judged half)")
    series(memory, "redis_rss_kib", "Redis RSS", 1 / 1024)
    series(memory, "redis_used_memory_kib", "Redis used_memory", 1 / 1024, linestyle="--")
    series(memory, "redis_streams_kib", "of which streams", 1 / 1024, linestyle="--")
    series(memory, "redis_other_kib", "of which the rest", 1 / 1024, linestyle="--")
    memory.set_ylabel("MiB")
    memory.set_title("Redis memory at the end of each interval (the streams grow until retention trims them)")
    series(cpu, "hub_cores", "hub")
    series(cpu, "redis_cores", "Redis")
    series(cpu, "loadgen_cores", "load generator")
    series(cpu, "softirq_cores", "softirq")
    cpu.set_ylabel("cores")
    cpu.set_title("CPU over each interval")
    series(latency, "p50_ms", "p50")
    series(latency, "p99_ms", "p99")
    latency.set_ylabel("ms")
    latency.set_title("device-to-dashboard latency over each interval")
    series(rates, "deliveries_per_s", "deliveries/s")
    acked = rates.twinx()
    series(acked, "acked_per_s", "acked frames/s (right)", color="C1")
    rates.set_ylabel("deliveries/s")
    acked.set_ylabel("acked frames/s")
    rates.set_xlabel("minutes since the load started")
    rates.set_title("throughput over each interval")
    for axis in (memory, cpu, latency, rates, acked):
        # From zero (below it only for Redis's rest, which may dip under zero), with room for the legend.
        axis.set_ylim(min(0.0, axis.get_ylim()[0]), max(axis.get_ylim()[1] * 1.1, 1e-9))
    for axis in axes:
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8, loc="best")
    if acked.get_legend_handles_labels()[0]:
        acked.legend(fontsize=8, loc="center right")
    figure.suptitle(f"soak {result['started_at']}: {verdict['text']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_results(result: dict[str, Any], results_dir: Path, command: str) -> dict[str, Path]:
    """Write ``soak-<UTC stamp>.{json,md,png}`` and copy each to ``soak-latest.*``; their paths."""
    result = {**result, "command": command, "machine": _machine()}
    return save(result, results_dir, markdown(result), _plot)
