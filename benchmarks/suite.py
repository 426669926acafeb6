"""``python -m benchmarks all``: every workload of BENCHMARKS.md against its references, one after another.

Each workload runs as its own ``python -m benchmarks <workload>`` process with the settings of ``PLAN`` (three
measured runs each, the medians with min-max); ``ingest-rows`` runs a second time on telehub alone with
``--telehub-workers 2`` (step ``ingest-rows-workers-2``, results in the ``workers-2`` subdirectory). On the
2-core reference machine the whole suite took 34 minutes (2026-11-22), ``connections``, ``fanout`` and
``query`` most of it. Since then ``query`` times 10 InfluxDB queries per interval and run instead of 40
(``--peer-queries``; about a second each, telehub keeps 40), ``connections`` provisions telehub's 9,000 devices
once instead of in every run and reads memory once it holds steady instead of after a fixed 5 s, and the
``ingest-rows-workers-2`` step was added: the plan's times add up to about 28 minutes, an estimate until the
suite is run again. Progress is printed as each step starts and ends, with the time spent and the time the
rest should take. At the end ``suite-<time>.md`` (and ``suite-latest.md``) lists what ran, how long each
took and where its results are, then where telehub stands against the budgets of ARCHITECTURE.md
(``budgets``), followed by each step's own table.

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

from benchmarks.budgets import budget_table
from benchmarks.harness import DEFAULT_RESULTS_DIR

__all__ = ["PLAN", "Step", "main"]


@dataclass(frozen=True)
class Step:
    """One step of the suite: a workload, its arguments to ``python -m benchmarks`` and how long it usually takes."""

    workload: str
    args: tuple[str, ...]
    # Seconds it takes on the reference machine (measured by python -m benchmarks all where one finished; else
    # estimated); progress and --dry-run use it.
    usual_s: float
    # For a second step of one workload: its name in --only, --skip and the table (default: the workload's), and
    # the subdirectory of the suite's results dir it writes to (default: none, the results dir itself).
    label: str = ""
    results_subdir: str = ""

    @property
    def name(self) -> str:
        return self.label or self.workload

    def results_in(self, results_dir: Path) -> Path:
        """Where this step writes: the suite's results dir, or its subdirectory of it."""
        return results_dir / self.results_subdir if self.results_subdir else results_dir

    def latest_md(self) -> str:
        """The step's ``<workload>-latest.md``, relative to the suite's results dir."""
        return "/".join([*filter(None, [self.results_subdir]), f"{self.workload}-latest.md"])


PLAN = (
    Step("ingest-rows", ("--runs", "3", "--seconds", "10"), 118),
    # Estimated: the same command alone took 44 s from start to its files (2026-11-22, 10:23).
    Step(
        "ingest-rows",
        ("--target", "telehub", "--telehub-workers", "2", "--runs", "3", "--seconds", "10"),
        46,
        label="ingest-rows-workers-2",
        results_subdir="workers-2",
    ),
    Step("ingest-columns", ("--runs", "3", "--seconds", "10"), 142),
    Step("aggregate-kernel", ("--runs", "3"), 86),
    # InfluxDB takes about a second a query here: 10 per interval and run for it, 40 for telehub. Estimated: 471 s
    # with 40 for both, of which ~360 s InfluxDB's 45 queries (5 unmeasured) x 3 intervals x 3 runs; 15 now.
    Step("query", ("--runs", "3", "--queries", "40", "--peer-queries", "10"), 235),
    # The saturation search dominates: shorter steps keep five targets x three runs near a quarter of an hour.
    Step("fanout", ("--runs", "3", "--seconds", "2", "--settle", "0.5"), 496),
    Step("recovery", ("--runs", "3"), 59),
    # Estimated: 637 s before telehub was provisioned once (~40 s saved per later run) and memory read once steady
    # (up to 4 s saved per reading); the opens (~195 s in all) and the 25 s idle windows (150 s) are measured.
    Step("connections", ("--runs", "3"), 450),
    Step("commands", ("--runs", "3"), 45),
)


@dataclass
class Outcome:
    step: Step
    exit_code: int
    seconds: float


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks all", description=__doc__.split("\n\n")[0])
    names = ", ".join(step.name for step in PLAN)
    parser.add_argument("--only", help=f"comma list of steps to run ({names})")
    parser.add_argument("--skip", help="comma list of steps to leave out")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and the usual time, run nothing")
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help=f"where to write (default {DEFAULT_RESULTS_DIR})"
    )
    return parser


def chosen(only: str | None, skip: str | None) -> list[Step]:
    """The steps of ``PLAN`` selected by ``--only`` and ``--skip`` (step names), in the plan's order."""
    known = {step.name for step in PLAN}
    wanted = set(only.split(",")) if only else set(known)
    dropped = set(skip.split(",")) if skip else set()
    unknown = (wanted | dropped) - known
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(sorted(unknown))}; the suite runs {', '.join(sorted(known))}")
    return [step for step in PLAN if step.name in wanted - dropped]


def command_of(step: Step, results_dir: Path) -> list[str]:
    results = str(step.results_in(results_dir))
    return [sys.executable, "-m", "benchmarks", step.workload, *step.args, "--results-dir", results]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def run_suite(steps: list[Step], results_dir: Path) -> list[Outcome]:
    outcomes: list[Outcome] = []
    started = time.monotonic()
    for number, step in enumerate(steps, 1):
        rest = sum(s.usual_s for s in steps[number - 1 :])
        print(
            f"\n=== [{number}/{len(steps)}] {step.name} (elapsed {_minutes(time.monotonic() - started)}, "
            f"about {_minutes(rest)} to go)",
            flush=True,
        )
        began = time.monotonic()
        # The workload's own output streams through: each prints its progress and its table.
        code = subprocess.call(command_of(step, results_dir))
        outcomes.append(Outcome(step, code, time.monotonic() - began))
        state = "done" if code == 0 else f"FAILED (exit {code})"
        print(f"=== {step.name}: {state} in {_minutes(outcomes[-1].seconds)}", flush=True)
    return outcomes


def summary(outcomes: list[Outcome], results_dir: Path, total_s: float) -> str:
    """The suite's Markdown: what ran and for how long, then each step's latest table."""
    lines = [
        f"# Benchmark suite: {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}",
        "",
        f"Command: `python -m benchmarks all`; {len(outcomes)} steps in {_minutes(total_s)} (min:s).",
        "",
        "| step | command | time (min:s) | result |",
        "|---|---|---:|---|",
    ]
    for outcome in outcomes:
        step = outcome.step
        args = shlex.join(["python", "-m", "benchmarks", step.workload, *step.args])
        if step.results_subdir:
            args += f" --results-dir <results>/{step.results_subdir}"
        result = f"[{step.latest_md()}]({step.latest_md()})" if outcome.exit_code == 0 else "failed"
        lines.append(f"| {step.name} | `{args}` | {_minutes(outcome.seconds)} | {result} |")
    lines += [
        "",
        "## Against the budgets of ARCHITECTURE.md",
        "",
        "From the latest results in this directory (`python -m benchmarks budgets` prints it again).",
        "",
        budget_table(results_dir).rstrip("\n"),
    ]
    for outcome in outcomes:
        latest = results_dir / outcome.step.latest_md()
        if outcome.exit_code == 0 and latest.exists():
            # Each step's own headings, one level down; a labelled step's first heading says which step it is.
            text = latest.read_text().splitlines()
            if outcome.step.label and text and text[0].startswith(f"# {outcome.step.workload}:"):
                text[0] = f"# {outcome.step.label}:" + text[0].removeprefix(f"# {outcome.step.workload}:")
            lines += ["", "\n".join("#" + line if line.startswith("#") else line for line in text)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        steps = chosen(args.only, args.skip)
    except ValueError as exc:
        _parser().error(str(exc))
    if args.dry_run:
        width = max(len(step.name) for step in steps) if steps else 0
        for step in steps:
            print(
                f"{_minutes(step.usual_s):>6}  {step.name:<{width}}  {shlex.join(command_of(step, args.results_dir))}"
            )
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
    failed = [o.step.name for o in outcomes if o.exit_code != 0]
    if failed:
        print(f"suite: failed: {', '.join(failed)}; run each alone to see why", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
