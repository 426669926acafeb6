"""``python -m benchmarks profile``: where the hub's CPU goes on each hot path, sampled with py-spy under load.

For each workload (``ingest-rows``, ``ingest-columns``, ``fanout`` by default) the benchmark runs once against
telehub alone; ``--warmup`` seconds after the hub process gets busy (above a quarter of a core: provisioning
first, then the load) py-spy samples it for ``--seconds``
and the hub's and its redis-server's CPU over the same span are read from ``/proc``. Written to
``benchmarks/results/profiles/``: ``<workload>.folded`` (py-spy's raw stacks, one line per stack with its
count: open with speedscope or flamegraph.pl) and ``<workload>.md``: the hub/Redis CPU split, the share of
samples by package, and the functions with the most samples, inclusive (the call and what it calls) and self.

    python -m benchmarks profile [--workload ingest-rows,fanout] [--seconds 15] [--rate 250]
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import DEFAULT_RESULTS_DIR
from benchmarks.procstat import children_of, cpu_seconds, exe_name

__all__ = ["Profile", "main", "read_folded"]

# Each workload's benchmark, telehub alone, long enough for the warm-up and the sampling.
WORKLOAD_ARGS = {
    "ingest-rows": ("--target", "telehub", "--runs", "1", "--seconds", "40"),
    "ingest-columns": ("--target", "telehub", "--runs", "1", "--seconds", "40"),
    # From 32 frames/s per device (about half of saturation here): the hub is busy from the first step on.
    "fanout": ("--target", "telehub", "--runs", "1", "--seconds", "20", "--start-rate", "32", "--max-steps", "3"),
    "commands": ("--runs", "1", "--seconds", "40", "--idle-commands", "50"),
}
BUSY_CORES = 0.25
WAIT_FOR_LOAD_S = 120.0
TOP = 15
# A py-spy frame: "function (path/to/file.py:123)"; the line number is dropped to add up a function's lines.
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


@dataclass
class Profile:
    """Counted samples of one process: inclusive and self per function, and per package."""

    samples: int
    inclusive: collections.Counter[str]
    own: collections.Counter[str]
    packages: collections.Counter[str]


def package_of(file: str) -> str:
    """The package a frame's file belongs to: ``hub``, ``ingest``, ``redis``, ``asyncio``…"""
    # py-spy shortens paths under sys.path to their module path ("redis/asyncio/client.py", "hub/app.py").
    path = file.replace("\\", "/")
    for prefix in ("site-packages/", "/lib/python3"):
        if prefix in path:
            path = path.split(prefix, 1)[1].split("/", 1)[1] if prefix.startswith("/lib") else path.split(prefix, 1)[1]
    return path.lstrip("/").split("/", 1)[0].removesuffix(".py") or "?"


def read_folded(lines: Iterable[str]) -> Profile:
    """Count py-spy's raw output (``frame;frame;… count`` per line, outermost first)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        names = []
        for frame in stack.split(";"):
            match = FRAME.match(frame)
            names.append(f"{match['function']} ({match['file']})" if match else frame)
        for name in set(names):
            inclusive[name] += count
        own[names[-1]] += count
        last = FRAME.match(stack.split(";")[-1])
        packages[package_of(last["file"]) if last else "?"] += count
    return Profile(samples, inclusive, own, packages)


def _table(title: str, counts: collections.Counter[str], samples: int) -> list[str]:
    lines = [f"### {title}", "", "| share | samples | function (file) |", "|---:|---:|---|"]
    for name, count in counts.most_common(TOP):
        lines.append(f"| {count / samples:.1%} | {count} | `{name}` |")
    return [*lines, ""]


def markdown(workload: str, profile: Profile, hub_cores: float, redis_cores: float | None, command: str) -> str:
    redis_share = "not found" if redis_cores is None else f"{redis_cores:.2f} cores"
    lines = [
        f"# Profile: {workload}",
        "",
        f"Command: `{command}`. py-spy samples of the hub process only (Python stacks; the time in C extensions "
        "is charged to the Python function that called them).",
        "",
        f"CPU over the sampled span: hub {hub_cores:.2f} cores, its redis-server {redis_share}.",
        f"Samples: {profile.samples:,}.",
        "",
        "### Samples by package (innermost frame)",
        "",
        "| share | package |",
        "|---:|---|",
    ]
    for package, count in profile.packages.most_common(TOP):
        lines.append(f"| {count / max(profile.samples, 1):.1%} | {package} |")
    lines.append("")
    samples = max(profile.samples, 1)
    lines += _table("Inclusive: the function and everything it calls", profile.inclusive, samples)
    lines += _table("Self: the innermost frame", profile.own, samples)
    return "\n".join(lines)


def _hub_and_redis(root: int) -> tuple[int | None, int | None]:
    """The ``telehub serve`` process under ``root`` and its redis-server, once both exist."""
    hub = redis = None
    for pid in children_of(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmdline and any(part.endswith(b"telehub") for part in cmdline):
            hub = pid
        elif exe_name(pid).startswith("redis-server"):
            redis = pid
    return hub, redis


def _wait_until_busy(bench: subprocess.Popen[bytes]) -> tuple[int, int | None]:
    deadline = time.monotonic() + WAIT_FOR_LOAD_S
    while time.monotonic() < deadline and bench.poll() is None:
        hub, redis = _hub_and_redis(bench.pid)
        before = cpu_seconds(hub) if hub else None
        time.sleep(1.0)
        after = cpu_seconds(hub) if hub else None
        if hub and before is not None and after is not None and after - before > BUSY_CORES:
            return hub, redis
    raise RuntimeError("the hub never got busy: run the workload alone to see why")


def profile_workload(workload: str, seconds: float, rate: int, out_dir: Path, warmup: float = 10.0) -> Path:
    args = ["python", "-m", "benchmarks", workload, *WORKLOAD_ARGS[workload]]
    print(f"profile: {' '.join(args)}", flush=True)
    # The workload's own tables are not kept: this run is slowed by the sampling.
    scratch = tempfile.TemporaryDirectory(prefix="telehub-profile-")
    bench = subprocess.Popen([sys.executable, *args[1:], "--results-dir", scratch.name])
    try:
        hub, redis = _wait_until_busy(bench)
        # Busy comes first from provisioning devices over REST and their handshakes: let the load take over.
        time.sleep(warmup)
        print(f"profile: sampling hub pid {hub} for {seconds:.0f} s at {rate} Hz", flush=True)
        folded = out_dir / f"{workload}.folded"
        hub_before, redis_before = cpu_seconds(hub) or 0.0, (cpu_seconds(redis) if redis else None) or 0.0
        began = time.monotonic()
        subprocess.run(
            [Path(sys.executable).with_name("py-spy"), "record", "-p", str(hub), "-d", str(int(seconds)),
             "-r", str(rate), "-f", "raw", "-o", str(folded)],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        hub_after, redis_after = cpu_seconds(hub), cpu_seconds(redis) if redis else None
        span = time.monotonic() - began
        if hub_after is None or (redis is not None and redis_after is None):
            raise RuntimeError("the workload ended before the sampling did: give it more --seconds")
        hub_cores = (hub_after - hub_before) / span
        redis_cores = None if redis_after is None else (redis_after - redis_before) / span
    finally:
        bench.wait()
        scratch.cleanup()
    profile = read_folded(folded.read_text().splitlines())
    command = (
        f"python -m benchmarks profile --workload {workload} --seconds {seconds:g} --rate {rate} --warmup {warmup:g}"
    )
    report = out_dir / f"{workload}.md"
    report.write_text(markdown(workload, profile, hub_cores, redis_cores, command))
    print(f"profile: {report} ({profile.samples:,} samples)", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="ingest-rows,ingest-columns,fanout", help="comma list (default: three)")
    parser.add_argument("--seconds", type=float, default=15.0, help="sampling span (default 15)")
    parser.add_argument("--rate", type=int, default=250, help="samples per second (default 250)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds from busy to sampling (default 10)")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR / "profiles")
    args = parser.parse_args(argv)
    workloads = args.workload.split(",")
    unknown = [w for w in workloads if w not in WORKLOAD_ARGS]
    if unknown:
        parser.error(f"no profile for {', '.join(unknown)}; choose from {', '.join(WORKLOAD_ARGS)}")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    for workload in workloads:
        profile_workload(workload, args.seconds, args.rate, args.results_dir, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
