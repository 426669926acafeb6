"""``query``: latency of aggregate queries over stored telemetry, telehub against InfluxDB 1.6's ``GROUP BY time()``.

Workload (BENCHMARKS.md): one device, ``--days`` (7) of samples at 1 Hz x 10 metrics already stored, queried at
1 min, 1 h and 1 d intervals for the average of all 10 metrics:

- telehub: ``GET /api/v1/devices/{id}/readings/aggregate?metric=m0,...,m9&from=..&to=..&interval=..&fn=avg``
  (``tz=UTC`` for ``1d``), with a viewer API key. Loaded through its real ingest path, a device WebSocket
  sending ``columns`` frames of an hour each, then left until its windows are closed (the idle timeout).
- InfluxDB: ``SELECT mean(m0) AS m0, ... FROM t WHERE device='..' AND time >= .. AND time < .. GROUP BY
  time(..) fill(none)`` with ``GET /query?epoch=ms`` (its days are UTC days). Loaded with line protocol batches.

Ranges: whole buckets from the first sample's bucket to the last one's; at 1 min the last 6 days only (8,640
buckets: telehub answers at most 10,000 per request). Before anything is timed, every target's answer at
every interval is checked against the averages of the samples themselves (numpy); a difference beyond float
tolerance stops the benchmark without a report.

Timing: each query over one keep-alive HTTP connection (httpx), sequentially, after ``WARMUPS`` unmeasured
ones; per round, each interval, each target in turn (the order alternating between rounds), ``--queries``
each for telehub and ``--peer-queries`` (10) for InfluxDB, which answers in about a second here; ``--runs``
rounds. The latency is the client's wall time from sending the request to the last byte of the reply (not
decoding it). Server CPU (utime + stime of every server process) and the client's own CPU are per query over
the same batch. p99 is nearest-rank: over fewer than 100 queries it is the batch's slowest, and the report
says so.

    python -m benchmarks query [--runs 3] [--queries 200] [--peer-queries 10] [--days 7] [--target telehub,influxdb]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import procstat
from benchmarks.harness import summarize
from benchmarks.query_load import (
    INTERVALS,
    METRICS,
    Progress,
    QueryRange,
    QueryTarget,
    Samples,
    ask,
    make_samples,
    query_ranges,
    started,
    truth,
)
from benchmarks.query_report import p99_index, write_results
from benchmarks.report import benchmark_command, show_written

__all__ = ["WrongAnswers", "main", "run"]

TARGETS = ("telehub", "influxdb")
LABELS = {"telehub": "telehub", "influxdb": "InfluxDB 1.6, GROUP BY time()"}
# Timed queries per batch of the reference (InfluxDB) by default: about a second each here.
PEER_QUERIES = 10
WARMUPS = 5
REL_TOLERANCE = 1e-9
# telehub closes a quiet device's windows after its idle timeout (10 s by default): the queries are timed after
# it, on stored windows, and its counts must add up to the samples within the deadline.
IDLE_WAIT_S = 12.0
AGGREGATES_TIMEOUT_S = 120.0
RESULTS_DIR = Path(__file__).resolve().parent / "results"


class WrongAnswers(Exception):
    """A target's aggregates differ from the samples': nothing is timed or reported."""


def _wait_for_windows(target: QueryTarget, ranges: dict[str, QueryRange], samples: Samples, say: Progress) -> float:
    """Until the idle timeout has closed telehub's windows and every interval's counts add up to the samples in
    its range; the seconds waited after the load."""
    want = {
        interval: sum(count for count, _ in truth(samples, q.width_ms, q.from_ms, q.to_ms).values())
        for interval, q in ranges.items()
    }
    say(f"{target.name}: waiting for its windows to close (idle timeout) and its counts to add up")
    time.sleep(max(0.0, target.loaded_at + IDLE_WAIT_S - time.monotonic()))
    while True:
        have = {interval: round(sum(ask(target, query, "count").values())) for interval, query in ranges.items()}
        waited = time.monotonic() - target.loaded_at
        if have == want:
            return waited
        if waited > AGGREGATES_TIMEOUT_S:
            raise TimeoutError(
                f"{target.name}: counts {have} short of {want} {AGGREGATES_TIMEOUT_S:.0f} s after loading"
            )
        time.sleep(0.5)


def check_answers(target: QueryTarget, ranges: dict[str, QueryRange], samples: Samples) -> dict[str, Any]:
    """Every interval's averages against the samples' own; raises ``WrongAnswers`` on any difference."""
    checked = {}
    for interval, query in ranges.items():
        want = {key: avg for key, (_, avg) in truth(samples, query.width_ms, query.from_ms, query.to_ms).items()}
        have = ask(target, query, "avg")
        if have.keys() != want.keys():
            missing, extra = sorted(want.keys() - have.keys())[:3], sorted(have.keys() - want.keys())[:3]
            raise WrongAnswers(
                f"{target.name} {interval}: {len(have)} averages, want {len(want)}; missing {missing}, extra {extra}"
            )
        wrong = [
            (key, have[key], avg)
            for key, avg in want.items()
            if not math.isclose(have[key], avg, rel_tol=REL_TOLERANCE)
        ]
        if wrong:
            raise WrongAnswers(
                f"{target.name} {interval}: {len(wrong)} averages differ from the samples', e.g. {wrong[:3]}"
            )
        worst = max(abs(have[key] - avg) / abs(avg) for key, avg in want.items())
        checked[interval] = {"averages": len(want), "max_relative_difference": worst}
    return checked


def _time_batch(target: QueryTarget, query: QueryRange, queries: int) -> dict[str, float]:
    """``queries`` timed requests after ``WARMUPS``: latency percentiles and CPU per query."""
    url = target.url(query, "avg")
    for _ in range(WARMUPS):
        target.client.get(url)
    pids = target.running.server_processes()
    server_before = {pid: procstat.cpu_seconds(pid) for pid in pids}
    client_before, machine_before, began = time.process_time(), procstat.machine_times(), time.perf_counter()
    latencies, size = [], 0
    for _ in range(queries):
        sent = time.perf_counter()
        response = target.client.get(url)
        latencies.append(time.perf_counter() - sent)
        if response.status_code != 200:
            raise RuntimeError(f"{target.name} answered {response.status_code}: {response.text[:300]}")
        size = len(response.content)
    client_cpu, elapsed = time.process_time() - client_before, time.perf_counter() - began
    server_cpu = sum((procstat.cpu_seconds(pid) or b) - b for pid, b in server_before.items() if b is not None)
    busy_s = procstat.machine_times().busy_s - machine_before.busy_s
    ordered = sorted(latencies)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[p99_index(len(ordered))],
        "mean_ms": 1000 * statistics.fmean(ordered),
        "max_ms": 1000 * ordered[-1],
        "server_cpu_ms_per_query": 1000 * server_cpu / queries,
        "client_cpu_ms_per_query": 1000 * client_cpu / queries,
        # Cores busy with neither the server nor the client (other work on the machine: noise).
        "other_cores": max(0.0, (busy_s - server_cpu - client_cpu) / elapsed),
        "response_bytes": size,
    }


Measured = dict[str, dict[str, list[dict[str, float]]]]


def queries_per_batch(name: str, queries: int, peer_queries: int) -> int:
    """Timed queries per batch of target ``name``: ``queries`` for telehub, ``peer_queries`` for a reference."""
    return queries if name == "telehub" else peer_queries


def _measure(
    loaded: list[QueryTarget], ranges: dict[str, QueryRange], runs: int, queries: dict[str, int], say: Progress
) -> Measured:
    """Every run: each interval, each target in turn (alternating the order), ``queries[name]`` each;
    target -> interval -> runs."""
    measured: Measured = {target.name: {interval: [] for interval in ranges} for target in loaded}
    for number in range(runs):
        for interval, query in ranges.items():
            for target in loaded if number % 2 == 0 else loaded[::-1]:
                batch = _time_batch(target, query, queries[target.name])
                measured[target.name][interval].append(batch)
                figures = f"p50 {batch['p50_ms']:.2f} ms, p99 {batch['p99_ms']:.2f} ms"
                say(f"  run {number + 1}/{runs}, {interval}, {target.name}: {figures}")
    return measured


def run(
    *,
    targets: tuple[str, ...],
    runs: int,
    queries: int,
    days: float,
    peer_queries: int = PEER_QUERIES,
    say: Progress = print,
) -> dict[str, Any]:
    """Load (once per target, before the first run), check and time every target; the results writer's dict.
    Raises ``WrongAnswers`` when a check fails."""
    per_target = {name: queries_per_batch(name, queries, peer_queries) for name in targets}
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    samples = make_samples(days)
    ranges = query_ranges(samples)
    with tempfile.TemporaryDirectory(prefix="telehub-query-") as tmp, contextlib.ExitStack() as stack:
        loaded = [stack.enter_context(started(name, Path(tmp), samples, say)) for name in targets]
        for target in loaded:
            if target.name == "telehub":
                target.load["counts_complete_after_s"] = _wait_for_windows(target, ranges, samples, say)
        checks = {target.name: check_answers(target, ranges, samples) for target in loaded}
        say(f"every target's averages equal the samples' at {', '.join(ranges)}; timing")
        measured = _measure(loaded, ranges, runs, per_target, say)
    described = [
        {
            "target": target.name,
            "label": LABELS[target.name],
            "queries": per_target[target.name],
            "started_as": target.running.started_as,
            "load": target.load,
            "check": checks[target.name],
            "intervals": {i: {"runs": r, "summary": summarize(r, r[0])} for i, r in measured[target.name].items()},
        }
        for target in loaded
    ]
    parameters = {
        "days": days,
        "metrics": len(METRICS),
        "samples": samples.count,
        "queries": queries,
        "peer_queries": peer_queries,
        "runs": runs,
        "warmups": WARMUPS,
        "fn": "avg",
        "ranges": {interval: query.described() for interval, query in ranges.items()},
    }
    result = {"workload": "query", "started_at": started_at, "parameters": parameters, "targets": described}
    return result | {"ratios": _ratios(described)}


def _ratios(targets: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per interval: InfluxDB's median p50 (p99) over telehub's, so >1 means telehub is faster."""
    by_name = {t["target"]: t["intervals"] for t in targets}
    if not {"telehub", "influxdb"} <= by_name.keys():
        return {}
    ratio = {}
    for interval in INTERVALS:
        th, influx = by_name["telehub"][interval]["summary"], by_name["influxdb"][interval]["summary"]
        ratio[interval] = {p: influx[f"{p}_ms"]["median"] / th[f"{p}_ms"]["median"] for p in ("p50", "p99")}
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks query", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds over every target and interval (default 3)")
    parser.add_argument(
        "--queries", type=int, default=200, help="timed telehub queries per interval and run (default 200)"
    )
    parser.add_argument(
        "--peer-queries",
        type=int,
        default=PEER_QUERIES,
        help=f"timed queries per interval and run for InfluxDB (about 1 s each; default {PEER_QUERIES})",
    )
    parser.add_argument("--days", type=float, default=7.0, help="days of 1 Hz samples stored (default 7)")
    parser.add_argument(
        "--target", default=",".join(TARGETS), help=f"comma list of {', '.join(TARGETS)} (default both)"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help=f"where to write (default {RESULTS_DIR})")
    args = parser.parse_args(argv)
    targets = tuple(dict.fromkeys(name.strip() for name in args.target.split(",") if name.strip()))
    if not targets or any(name not in TARGETS for name in targets):
        parser.error(f"--target takes a comma list of {', '.join(TARGETS)}")
    if min(args.runs, args.queries, args.peer_queries, args.days) <= 0:
        parser.error("--runs, --queries, --peer-queries and --days must be positive")
    try:
        result = run(
            targets=targets, runs=args.runs, queries=args.queries, peer_queries=args.peer_queries, days=args.days
        )
    except WrongAnswers as exc:
        print(f"query: the answers are wrong, nothing reported: {exc}", file=sys.stderr)
        return 1
    command = benchmark_command("query", argv)
    files = write_results(result, args.results_dir, command)
    show_written(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
