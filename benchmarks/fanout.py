"""``fanout``: deliveries/s at saturation and device-to-dashboard latency at half of it (BENCHMARKS.md).

Workload: ``--devices`` (10) devices publish ``telemetry`` frames at a rate per device; ``--dashboards``
(1,000) dashboards are subscribed, half to every device (``devices/+/telemetry``), half to the first device
only (``devices/<dev0>/telemetry``), so each frame of the first device reaches every dashboard and each
frame of the others half of them. Each frame carries its send time (metric ``sent_us``): a dashboard's
latency is its receive time minus that, sampled on one delivery in ``--sample-every`` (50).

One run, per target, with a fresh load generator (``fanout_run``):

1. Saturation: the publish rate starts at ``--start-rate`` frames/s per device and doubles while each step
   is sustained: for ``--seconds`` after ``--settle`` seconds at the new rate, the publisher kept the pace
   (95%), the dashboards received at least 95% of the deliveries due (no backlog growing), p99 latency
   stayed under ``--latency-limit-ms`` and no dashboard was closed. After the first step that is not (or that
   did not raise deliveries/s by 2%), the rate is bisected (geometric mean) between the best sustained step
   and the lowest failed one until they are within 20%. After every step the load rests until nothing more
   arrives, so that no step counts another's backlog. The best sustained deliveries/s is the primary figure;
   its publish rate is the saturating rate.
2. Latency: one step at half the saturating rate; its p50/p99/p999 are the latency figures.

Every step's figures are kept (JSON): publish and delivery rates, the share delivered, latency, the CPU of
the server's processes by role and of each load generator process, the machine's softirq and anything else.
Each target is started once and measured ``--runs`` times; every figure is the median with min-max, and the
references are given as ratios to telehub.

    python -m benchmarks fanout [--runs 3] [--seconds 5] [--target telehub,floor,mosquitto,nats,socketio|all]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import fanout_peers
from benchmarks.fanout_report import write_results
from benchmarks.fanout_run import LoadGenerator, LoadShape, add_load_options, load_generator
from benchmarks.harness import DEFAULT_RESULTS_DIR, summarize
from benchmarks.report import benchmark_command, show_written

__all__ = ["FanoutOptions", "Search", "main", "run", "search"]

Progress = Callable[[str], None]
# A step is sustained when the publisher kept this share of its pace (less one frame per device: a window
# holds whole frames) and the dashboards received this share of the deliveries due.
KEPT_PACE = 0.95
DELIVERED = 0.95
# A sustained step must raise deliveries/s by this much over the best so far to count as better.
MIN_GROWTH = 0.02
# The search ends once the best sustained rate and the lowest failed one are this close; or at MIN_RATE_HZ.
REFINED_RATIO = 1.2
MIN_RATE_HZ = 0.05
# Figures summarized over the runs (the primary ones first).
SUMMARIZED = (
    "deliveries_per_s",
    "saturation_rate_hz",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "start_p50_ms",
    "start_p99_ms",
    "saturation_publish_per_s",
    "saturation_p99_ms",
    "saturation_server_cores",
    "saturation_server_cpu_us_per_delivery",
    "saturation_loadgen_cores",
    "saturation_loadgen_busiest_process_cores",
    "saturation_machine_busy_share",
    "saturation_softirq_cores",
    "saturation_other_cores",
    "half_rate_hz",
    "half_deliveries_per_s",
    "half_delivered_share",
    "half_server_cores",
    "half_loadgen_cores",
    "steps",
)


@dataclass(frozen=True, kw_only=True)
class FanoutOptions:
    targets: tuple[str, ...] = fanout_peers.TARGETS
    runs: int = 3
    shape: LoadShape
    start_rate_hz: float = 2.0
    max_rate_hz: float = 5000.0
    max_steps: int = 14
    latency_limit_ms: float = 500.0
    telehub_workers: int = 1
    results_dir: Path = DEFAULT_RESULTS_DIR
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def verdict(step: dict[str, Any], options: FanoutOptions) -> str | None:
    """Why ``step`` is not sustained; None when it is. Both counts may be off by one frame per device (a
    window holds whole frames, and deliveries lag their publishes by the latency)."""
    devices = options.shape.devices
    if step["published"] < KEPT_PACE * step["target_publish_per_s"] * step["elapsed_s"] - devices:
        return f"published {step['publish_per_s']:,.0f} frames/s of {step['target_publish_per_s']:,.0f}"
    if not step["expected"] or step["delivered"] < DELIVERED * step["expected"] - step["frame_deliveries"]:
        return f"delivered {step['delivered_share'] or 0.0:.1%} of the deliveries due"
    if step.get("p99_ms", 0.0) > options.latency_limit_ms:
        return f"p99 {step['p99_ms']:,.0f} ms over {options.latency_limit_ms:g} ms"
    if step["dashboards_lost"]:
        return f"{step['dashboards_lost']} dashboards closed by the server"
    return None


def _describe(step: dict[str, Any]) -> str:
    p99 = f"p99 {step['p99_ms']:.1f} ms" if "p99_ms" in step else "no latency sample"
    share = f"{step['delivered_share']:.1%}" if step["delivered_share"] is not None else "-"
    return (
        f"{step['rate_hz']:.4g}/s per device -> {step['deliveries_per_s']:,.0f} deliveries/s ({share} of due), "
        f"{p99}, server {step['server_cores']:.2f} cores, load generator {step['loadgen_cores']:.2f} cores"
    )


@dataclass
class Search:
    """The saturation steps so far, the best sustained one, the lowest failed rate, and why the search ended."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    best: int | None = None
    failed_hz: float | None = None
    ended: str = ""

    def judge(self, step: dict[str, Any], options: FanoutOptions) -> str | None:
        why = verdict(step, options)
        best = None if self.best is None else self.steps[self.best]
        if why is None and best is not None and step["deliveries_per_s"] < best["deliveries_per_s"] * (1 + MIN_GROWTH):
            why = "deliveries/s stopped growing"
        return why

    def next_rate(self, rate: float, options: FanoutOptions) -> float | None:
        """The rate of the next step; None when the search is over (``ended`` says why)."""
        if self.best is None:
            if rate / 4 < MIN_RATE_HZ:
                self.ended = f"not even {rate:.3g} frames/s per device was sustained"
                return None
            return rate / 4  # not even the first step: go down
        if self.failed_hz is None:
            if rate >= options.max_rate_hz:
                self.ended = f"--max-rate {options.max_rate_hz:g} reached, still sustained"
                return None
            return min(2 * rate, options.max_rate_hz)
        good_hz = self.steps[self.best]["rate_hz"]
        if self.failed_hz / good_hz <= REFINED_RATIO:
            self.ended = f"{good_hz:.3g} frames/s per device sustained, {self.failed_hz:.3g} not"
            return None
        return math.sqrt(good_hz * self.failed_hz)


def search(load: LoadGenerator, options: FanoutOptions, say: Progress) -> Search:
    """The saturation steps (see the module's docstring), up to ``--max-steps``."""
    found = Search()
    rate: float | None = options.start_rate_hz
    while rate is not None:
        if len(found.steps) == options.max_steps:
            found.ended = f"--max-steps {options.max_steps} reached"
            break
        step = load.step(rate)
        # Whatever a step left queued would count in the next one's window: each starts from an idle target.
        step["rest"] = load.rest()
        why = found.judge(step, options)
        step["sustained"], step["why_not"] = why is None, why
        found.steps.append(step)
        verdict_text = "sustained" if why is None else f"not sustained, {why}"
        say(f"  step {len(found.steps)}: {_describe(step)}: {verdict_text}")
        if why is None:
            found.best = len(found.steps) - 1
        else:
            found.failed_hz = rate if found.failed_hz is None else min(found.failed_hz, rate)
        rate = found.next_rate(rate, options)
    return found


def _one_run(load: LoadGenerator, options: FanoutOptions, say: Progress) -> dict[str, Any]:
    found = search(load, options, say)
    steps, best = found.steps, found.best
    if best is None:
        raise RuntimeError(f"no step was sustained: {found.ended}")
    saturation = steps[best]
    half = load.step(saturation["rate_hz"] / 2)
    half["why_not"] = verdict(half, options)
    half["sustained"] = half["why_not"] is None
    say(f"  half of saturation: {_describe(half)}")
    totals = load.stop()
    figures: dict[str, Any] = {
        "deliveries_per_s": saturation["deliveries_per_s"],
        "saturation_rate_hz": saturation["rate_hz"],
        "half_rate_hz": half["rate_hz"],
        "steps": len(steps),
        "saturation_step": best,
        "search_ended": found.ended,
    }
    for key in ("publish_per_s", "p99_ms", "server_cores", "server_cpu_us_per_delivery", "loadgen_cores"):
        if key in saturation:
            figures[f"saturation_{key}"] = saturation[key]
    for key in ("machine_busy_share", "softirq_cores", "other_cores"):
        figures[f"saturation_{key}"] = saturation[key]
    figures["saturation_loadgen_busiest_process_cores"] = max(saturation["loadgen_cores_by_process"])
    for role in saturation["server_cpu_s_by_role"]:
        figures[f"saturation_server_cores_{role}"] = saturation[f"server_cores_{role}"]
    for key in ("p50_ms", "p99_ms", "p999_ms"):
        if key in half:
            figures[key] = half[key]
        # The first step's rate is the same for every target: latency at equal load, the machine's floor.
        if key in steps[0]:
            figures[f"start_{key}"] = steps[0][key]
    for key in ("deliveries_per_s", "delivered_share", "server_cores", "loadgen_cores"):
        figures[f"half_{key}"] = half[key]
    for role in half["server_cpu_s_by_role"]:
        figures[f"half_server_cores_{role}"] = half[f"server_cores_{role}"]
    return figures | {"step_figures": steps, "half": half, "totals": totals}


def _measure_target(name: str, options: FanoutOptions, workdir: Path, say: Progress) -> dict[str, Any]:
    result: dict[str, Any] = {
        "target": name,
        "label": fanout_peers.LABELS[name],
        "work": fanout_peers.WORK[name],
        "runs": [],
    }
    output: Callable[[], str] | None = None
    try:
        say(f"fanout: starting {name}")
        starting = time.monotonic()
        with fanout_peers.started(
            name, devices=options.shape.devices, workdir=workdir, telehub_workers=options.telehub_workers
        ) as target:
            result["started_as"] = target.running.started_as
            result["start_s"] = time.monotonic() - starting
            output = target.running.output
            for number in range(1, options.runs + 1):
                say(f"fanout: {name} run {number}/{options.runs}: connecting {options.shape.dashboards:,} dashboards")
                with load_generator(target, options.shape, workdir) as load:
                    figures = _one_run(load, options, say)
                result["runs"].append(figures)
                say(
                    f"fanout: {name} run {number}/{options.runs}: {figures['deliveries_per_s']:,.0f} deliveries/s "
                    f"at {figures['saturation_rate_hz']:.4g}/s per device; at half: "
                    f"p50 {figures.get('p50_ms', 0):.2f} ms, p99 {figures.get('p99_ms', 0):.2f} ms, "
                    f"p999 {figures.get('p999_ms', 0):.2f} ms"
                )
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc(limit=8)
        if output is not None:
            result["server_output"] = output()
        say(f"fanout: {name} failed: {result['error'].splitlines()[0]}")
    keys = [
        *SUMMARIZED,
        *sorted(
            {
                k
                for run in result["runs"]
                for k in run
                if k.startswith(("saturation_server_cores_", "half_server_cores_"))
            }
        ),
    ]
    result["summary"] = summarize(result["runs"], keys)
    return result


def ratios(targets: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each reference's medians over telehub's: deliveries/s (>1: the reference delivers more), latency and
    server CPU per delivery (<1: the reference is faster, or cheaper)."""
    telehub = next((t["summary"] for t in targets if t["target"] == "telehub" and t["summary"]), None)
    if telehub is None:
        return {}
    found = {}
    for target in targets:
        if target["target"] == "telehub" or not target["summary"]:
            continue
        found[target["target"]] = {
            key: target["summary"][key]["median"] / telehub[key]["median"]
            for key in (
                "deliveries_per_s",
                "p50_ms",
                "p99_ms",
                "p999_ms",
                "start_p99_ms",
                "saturation_server_cpu_us_per_delivery",
            )
            if key in target["summary"] and key in telehub and telehub[key]["median"]
        }
    return found


def run(options: FanoutOptions, say: Progress = print) -> dict[str, Any]:
    """Measure every target; the results writer's dict."""
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    targets = []
    with tempfile.TemporaryDirectory(prefix="telehub-fanout-") as tmp:
        for name in options.targets:
            workdir = Path(tmp) / name
            workdir.mkdir()
            targets.append(_measure_target(name, options, workdir, say))
    shape = options.shape
    parameters = {
        "runs": options.runs,
        "seconds": shape.seconds,
        "settle_s": shape.settle_s,
        **shape.parameters(),
        "start_rate_hz": options.start_rate_hz,
        "max_rate_hz": options.max_rate_hz,
        "max_steps": options.max_steps,
        "latency_limit_ms": options.latency_limit_ms,
        "telehub_workers": options.telehub_workers,
        "kept_pace": KEPT_PACE,
        "delivered": DELIVERED,
        "refined_ratio": REFINED_RATIO,
        **options.extra,
    }
    result = {"workload": "fanout", "started_at": started_at, "parameters": parameters, "targets": targets}
    return result | {"ratios": ratios(targets)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks fanout",
        description=__doc__.split("\n\n")[0],
        epilog="targets: " + ", ".join(fanout_peers.TARGETS) + ", or all (default)",
    )
    add = parser.add_argument
    add("--runs", type=int, default=3, help="measured runs per target (default 3)")
    add("--seconds", type=float, default=5.0, help="measured seconds of each step (default 5)")
    add("--target", default="all", help="a comma list of targets, or all (default)")
    add("--devices", type=int, default=10, help="publishing devices (default 10)")
    add("--dashboards", type=int, default=1000, help="dashboards, half on every device, half on one (default 1000)")
    add("--start-rate", type=float, default=2.0, help="first step's frames/s per device (default 2)")
    add("--max-rate", type=float, default=5000.0, help="highest frames/s per device tried (default 5000)")
    add("--max-steps", type=int, default=14, help="saturation steps at most (default 14)")
    add("--settle", type=float, default=1.0, help="seconds at a new rate before its window (default 1)")
    add_load_options(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.target == "all":
        targets = fanout_peers.TARGETS
    else:
        targets = tuple(dict.fromkeys(name.strip() for name in args.target.split(",") if name.strip()))
    if not targets or any(name not in fanout_peers.TARGETS for name in targets):
        parser.error(f"--target takes a comma list of {', '.join(fanout_peers.TARGETS)}, or all")
    positive = ("runs", "seconds", "devices", "dashboards", "processes", "start_rate", "max_steps", "sample_every")
    if any(getattr(args, name) <= 0 for name in (*positive, "max_rate", "window", "latency_limit_ms")):
        parser.error(
            "--runs, --seconds, --devices, --dashboards, --processes, the rates, --max-steps, "
            "--sample-every, --window and --latency-limit-ms must be positive"
        )
    if args.dashboards < 2:
        parser.error("--dashboards must be at least 2 (one on every device, one on the first)")
    shape = LoadShape(
        devices=args.devices,
        dashboards=args.dashboards,
        processes=args.processes,
        seconds=args.seconds,
        settle_s=max(0.0, args.settle),
        sample_every=args.sample_every,
        window=args.window,
        encoding=args.encoding,
        connect_concurrency=args.connect_concurrency,
    )
    options = FanoutOptions(
        targets=targets,
        runs=args.runs,
        shape=shape,
        start_rate_hz=args.start_rate,
        max_rate_hz=args.max_rate,
        max_steps=args.max_steps,
        latency_limit_ms=args.latency_limit_ms,
        telehub_workers=args.telehub_workers,
        results_dir=args.results_dir,
    )
    result = run(options)
    command = benchmark_command("fanout", argv)
    files = write_results(result, args.results_dir, command)
    show_written(files)
    return 0 if all(t["runs"] for t in result["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
