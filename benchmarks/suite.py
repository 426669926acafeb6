"""``python -m benchmarks all``: every workload of BENCHMARKS.md against its references, one after another.

Each workload runs as its own ``python -m benchmarks <workload>`` process with the settings of ``PLAN`` (three
measured runs each, the medians with min-max). On the 2-core reference machine the whole suite took 34 minutes
(2026-11-22): ``connections`` (18,000 connections per run, both targets) and ``query`` (7 days loaded into
both stores) are most of it. Progress is printed as each workload starts and ends, with the time spent and the
time the rest should take. At the end ``suite-<time>.md`` (and ``suite-latest.md``) lists what ran, how long
each took and where its results are, followed by each workload's own table.

    python -m benchmarks all [--only fanout,commands] [--skip connections] [--dry-run] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import DEFAULT_RESULTS_DIR

__all__ = ["PLAN", "Step", "main"]


@dataclass(frozen=True)
class Step:
    """One workload of the suite: its arguments to ``python -m benchmarks`` and how long it usually takes."""

    workload: str
    args: tuple[str, ...]
    # Seconds it takes on the reference machine (measured by python -m benchmarks all where one finished; else
    # estimated); progress and --dry-run use it.
    usual_s: float


PLAN = (
    Step("ingest-rows", ("--runs", "3", "--seconds", "10"), 121),
    Step("ingest-columns", ("--runs", "3", "--seconds", "10"), 141),
    Step("aggregate-kernel", ("--runs", "3"), 86),
    # InfluxDB takes about a second a query here: 40 per target, interval and run keep it to a few minutes.
    Step("query", ("--runs", "3", "--queries", "40"), 471),
    # The saturation search dominates: shorter steps keep five targets x three runs near a quarter of an hour.
    Step("fanout", ("--runs", "3", "--seconds", "2", "--settle", "0.5"), 496),
    Step("recovery", ("--runs", "3"), 59),
    Step("connections", ("--runs", "3"), 637),
    Step("commands", ("--runs", "3"), 45),
)


@dataclass
class Outcome:
    step: Step
    exit_code: int
    seconds: float


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks all", description=__doc__.split("\n\n")[0])
    names = ", ".join(step.workload for step in PLAN)
    parser.add_argument("--only", help=f"comma list of workloads to run ({names})")
    parser.add_argument("--skip", help="comma list of workloads to leave out")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and the usual time, run nothing")
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help=f"where to write (default {DEFAULT_RESULTS_DIR})"
    )
    return parser


def chosen(only: str | None, skip: str | None) -> list[Step]:
    """The steps of ``PLAN`` selected by ``--only`` and ``--skip``, in the plan's order."""
    known = {step.workload for step in PLAN}
    wanted = set(only.split(",")) if only else set(known)
    dropped = set(skip.split(",")) if skip else set()
    unknown = (wanted | dropped) - known
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(sorted(unknown))}; the suite runs {', '.join(sorted(known))}")
    return [step for step in PLAN if step.workload in wanted - dropped]


def command_of(step: Step, results_dir: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks", step.workload, *step.args, "--results-dir", str(results_dir)]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def run_suite(steps: list[Step], results_dir: Path) -> list[Outcome]:
    outcomes: list[Outcome] = []
    started = time.monotonic()
    for number, step in enumerate(steps, 1):
        rest = sum(s.usual_s for s in steps[number - 1 :])
        print(
            f"\n=== [{number}/{len(steps)}] {step.workload} (elapsed {_minutes(time.monotonic() - started)}, "
            f"about {_minutes(rest)} to go)",
            flush=True,
        )
        began = time.monotonic()
        # The workload's own output streams through: each prints its progress and its table.
        code = subprocess.call(command_of(step, results_dir))
        outcomes.append(Outcome(step, code, time.monotonic() - began))
        state = "done" if code == 0 else f"FAILED (exit {code})"
        print(f"=== {step.workload}: {state} in {_minutes(outcomes[-1].seconds)}", flush=True)
    return outcomes


def summary(outcomes: list[Outcome], results_dir: Path, total_s: float) -> str:
    """The suite's Markdown: what ran and for how long, then each workload's latest table."""
    lines = [
        f"# Benchmark suite: {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}",
        "",
        f"Command: `python -m benchmarks all`; {len(outcomes)} workloads in {_minutes(total_s)} (min:s).",
        "",
        "| workload | command | time (min:s) | result |",
        "|---|---|---:|---|",
    ]
    for outcome in outcomes:
        step = outcome.step
        args = shlex.join(["python", "-m", "benchmarks", step.workload, *step.args])
        result = f"[{step.workload}-latest.md]({step.workload}-latest.md)" if outcome.exit_code == 0 else "failed"
        lines.append(f"| {step.workload} | `{args}` | {_minutes(outcome.seconds)} | {result} |")
    for outcome in outcomes:
        latest = results_dir / f"{outcome.step.workload}-latest.md"
        if outcome.exit_code == 0 and latest.exists():
            # Each workload's own headings, one level down.
            body = "\n".join("#" + line if line.startswith("#") else line for line in latest.read_text().splitlines())
            lines += ["", body]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        steps = chosen(args.only, args.skip)
    except ValueError as exc:
        _parser().error(str(exc))
    if args.dry_run:
        for step in steps:
            print(f"{_minutes(step.usual_s):>6}  {shlex.join(command_of(step, args.results_dir))}")
        print(f"{_minutes(sum(s.usual_s for s in steps)):>6}  in all (usual times on the reference machine)")
        return 0
    args.results_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    outcomes = run_suite(steps, args.results_dir)
    text = summary(outcomes, args.results_dir, time.monotonic() - began)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"suite-{stamp}.md", "suite-latest.md"):
        (args.results_dir / name).write_text(text)
    print(f"\nsuite: {args.results_dir / 'suite-latest.md'}")
    failed = [o.step.workload for o in outcomes if o.exit_code != 0]
    if failed:
        print(f"suite: failed: {', '.join(failed)}; run each alone to see why", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
