"""``python -m benchmarks all`` and ``profile``: the plan's selection, the suite's summary, folded-stack counting;
and the options the suite's plan relies on: ``query``'s fewer reference queries (and how its report labels
them), ``connections``' memory reading once steady. (The workloads themselves are smoke-tested in their own
modules; the suite only sequences them.)"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from benchmarks import query, query_report
from benchmarks.connections_servers import steady_rss
from benchmarks.profile import markdown, package_of, read_folded
from benchmarks.query_load import QueryTarget, make_samples, query_ranges
from benchmarks.suite import PLAN, Outcome, chosen, command_of, summary

FOLDED = """\
<module> (telehub:8);main (hub/cli.py:40);flush (ingest/flusher.py:10);execute (redis/asyncio/client.py:5) 30
<module> (telehub:8);main (hub/cli.py:40);flush (ingest/flusher.py:12) 10
<module> (telehub:8);main (hub/cli.py:40);decode (ingest/codec.py:3);unpackb (msgpack/fallback.py:1) 60
"""


def test_the_plan_covers_every_workload_of_benchmarks_md_once() -> None:
    from benchmarks.__main__ import IN_PROCESS
    from benchmarks.workloads import WORKLOADS

    # Not BENCHMARKS.md workloads: the suite itself, tools, the 30-minute soak, and issue 11's scaling curve
    # (12 hub starts; run on its own: python -m benchmarks scaling).
    every = set(WORKLOADS) | set(IN_PROCESS) - {"all", "profile", "budgets", "soak", "scaling"}
    assert sorted(step.workload for step in PLAN if not step.label) == sorted(every)
    assert len({step.name for step in PLAN}) == len(PLAN)
    # Three measured runs each: medians with min-max, as BENCHMARKS.md asks.
    assert all(step.args[step.args.index("--runs") + 1] == "3" for step in PLAN)


def test_the_workers_2_step_writes_to_its_own_subdirectory(tmp_path: Path) -> None:
    (step,) = chosen("ingest-rows-workers-2", None)
    assert step.workload == "ingest-rows"
    command = command_of(step, tmp_path)
    assert command[command.index("--telehub-workers") + 1] == "2"
    assert command[command.index("--target") + 1] == "telehub"
    assert command.count("--results-dir") == 1 and command[-1] == str(tmp_path / "workers-2")
    # The plain step keeps the suite's results dir, and each name selects only its own step.
    (plain,) = chosen("ingest-rows", None)
    assert not plain.label and command_of(plain, tmp_path)[-1] == str(tmp_path)
    assert step not in chosen(None, "ingest-rows-workers-2")


def test_only_and_skip_select_in_plan_order_and_unknown_names_are_refused() -> None:
    assert [s.workload for s in chosen("commands,fanout", None)] == ["fanout", "commands"]
    assert "connections" not in [s.workload for s in chosen(None, "connections")]
    assert len(chosen(None, None)) == len(PLAN)
    with pytest.raises(ValueError, match="unknown step"):
        chosen("fanuot", None)


def test_the_summary_lists_each_workload_and_includes_its_table(tmp_path: Path) -> None:
    fanout, commands = chosen("fanout,commands", None)
    (tmp_path / "fanout-latest.md").write_text("# fanout: today\n\n| a |\n|---|\n| 1 |\n")
    text = summary([Outcome(fanout, 0, 61.0), Outcome(commands, 1, 5.0)], tmp_path, 66.0)
    assert "| fanout | `python -m benchmarks fanout --runs 3" in text
    assert "| 1:01 | [fanout-latest.md](fanout-latest.md) |" in text
    assert "| commands |" in text and "| 0:05 | failed |" in text
    assert "## fanout: today" in text and "| 1 |" in text


def test_the_summary_links_a_labelled_step_to_its_subdirectory(tmp_path: Path) -> None:
    plain, workers = chosen("ingest-rows,ingest-rows-workers-2", None)
    (tmp_path / "ingest-rows-latest.md").write_text("# ingest-rows: one worker\n")
    (tmp_path / "workers-2").mkdir()
    (tmp_path / "workers-2" / "ingest-rows-latest.md").write_text("# ingest-rows: two workers\n\n| 2 |\n")
    text = summary([Outcome(plain, 0, 118.0), Outcome(workers, 0, 46.0)], tmp_path, 164.0)
    assert "| ingest-rows | `python -m benchmarks ingest-rows --runs 3 --seconds 10` | 1:58 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| ingest-rows-workers-2 |"))
    assert "--telehub-workers 2" in row and "--results-dir <results>/workers-2" in row
    assert row.endswith("| 0:46 | [workers-2/ingest-rows-latest.md](workers-2/ingest-rows-latest.md) |")
    assert "## ingest-rows: one worker" in text
    assert "## ingest-rows-workers-2: two workers" in text and "| 2 |" in text


def test_dry_run_prints_every_command_and_runs_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "all", "--dry-run", "--results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(done.stdout.splitlines()) == len(PLAN) + 1
    assert "benchmarks fanout --runs 3" in done.stdout and "in all" in done.stdout
    (workers,) = [line for line in done.stdout.splitlines() if "ingest-rows-workers-2" in line]
    assert "--telehub-workers 2" in workers and workers.endswith(f"--results-dir {tmp_path / 'workers-2'}")
    assert "--queries 40 --peer-queries 10" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_folded_stacks_are_counted_inclusive_self_and_by_package() -> None:
    profile = read_folded(FOLDED.splitlines())
    assert profile.samples == 100
    assert profile.inclusive["main (hub/cli.py)"] == 100
    # Two lines of one function add up; a function counts once per stack.
    assert profile.inclusive["flush (ingest/flusher.py)"] == 40
    assert profile.own["flush (ingest/flusher.py)"] == 10
    assert profile.own["unpackb (msgpack/fallback.py)"] == 60
    assert profile.packages == {"msgpack": 60, "redis": 30, "ingest": 10}
    text = markdown("ingest-rows", profile, 0.9, 0.3, "python -m benchmarks profile")
    assert "hub 0.90 cores, its redis-server 0.30 cores" in text
    assert "| 60.0% | msgpack |" in text


@pytest.mark.parametrize(
    ("file", "package"),
    [
        ("redis/asyncio/connection.py", "redis"),
        ("hub/app.py", "hub"),
        ("/usr/lib/python3.11/asyncio/tasks.py", "asyncio"),
        ("/w/.venv/lib/python3.11/site-packages/websockets/frames.py", "websockets"),
    ],
)
def test_package_of_a_frame(file: str, package: str) -> None:
    assert package_of(file) == package


# query: InfluxDB answers in about a second, so it runs fewer queries per cell than telehub; the report says so.


def _fake_target(name: str, asked: list[str]) -> QueryTarget:
    def get(url: str) -> SimpleNamespace:
        asked.append(name)
        return SimpleNamespace(status_code=200, content=b"{}", text="")

    running = SimpleNamespace(server_processes=dict)
    client = SimpleNamespace(get=get)
    return QueryTarget(name, cast(Any, running), cast(Any, client), lambda q, fn: "/q", lambda body, fn: {}, {}, 0.0)


def test_query_times_each_target_with_its_own_number_of_queries() -> None:
    asked: list[str] = []
    targets = [_fake_target("telehub", asked), _fake_target("influxdb", asked)]
    ranges = query_ranges(make_samples(0.01))
    counts = {name: query.queries_per_batch(name, 6, 2) for name in ("telehub", "influxdb")}
    assert counts == {"telehub": 6, "influxdb": 2}
    measured = query._measure(targets, ranges, 2, counts, lambda _: None)
    # Per run and interval: the unmeasured warm-ups, then the target's own count.
    assert asked.count("telehub") == 2 * len(ranges) * (query.WARMUPS + 6)
    assert asked.count("influxdb") == 2 * len(ranges) * (query.WARMUPS + 2)
    assert all(len(runs) == 2 for intervals in measured.values() for runs in intervals.values())


def test_query_refuses_a_peer_query_count_that_is_not_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        query.main(["--peer-queries", "0"])
    assert exited.value.code == 2 and "--peer-queries" in capsys.readouterr().err


def _query_result(telehub_queries: int, influx_queries: int) -> dict[str, Any]:
    def summary(value: float) -> dict[str, Any]:
        figures = [key for key, _ in query_report.COLUMNS] + ["response_bytes"]
        return {"summary": {key: {"median": value, "min": value, "max": value, "runs": 3} for key in figures}}

    ranges = {i: {"from": "a", "to": "b", "buckets": 8, "days": 7.0} for i in ("1m", "1h", "1d")}
    targets = [
        {"target": name, "label": label, "queries": count, "started_as": name, "intervals": {}}
        | {"load": {"samples": 10, "seconds": 1.0, "samples_per_s": 10.0}}
        for name, label, count in (
            ("telehub", "telehub", telehub_queries),
            ("influxdb", "InfluxDB 1.6, GROUP BY time()", influx_queries),
        )
    ]
    for target, value in zip(targets, (10.0, 800.0), strict=True):
        target["intervals"] = {interval: summary(value) for interval in ranges}
    return {
        "started_at": "today",
        "command": "python -m benchmarks query",
        "machine": {"cpus": 2, "memory_gib": 1.0, "kernel": "k", "python": "3.11"},
        "parameters": {"days": 7, "metrics": 10, "samples": 10, "queries": telehub_queries, "runs": 3}
        | {"peer_queries": influx_queries, "warmups": 5, "ranges": ranges},
        "targets": targets,
        "ratios": {interval: {"p50": 80.0, "p99": 80.0} for interval in ranges},
    }


def test_the_query_report_says_how_many_queries_each_cell_is_over(tmp_path: Path) -> None:
    text = query_report.markdown(_query_result(200, 10))
    mark = query_report.MAX_MARK
    telehub = next(line for line in text.splitlines() if line.startswith("| 1h | telehub |"))
    influx = next(line for line in text.splitlines() if line.startswith("| 1h | InfluxDB"))
    # A queries/run column; the reference's p99 over 10 queries is its slowest, and marked so.
    assert telehub.startswith("| 1h | telehub | 200 | ") and mark not in telehub
    assert influx.startswith("| 1h | InfluxDB 1.6, GROUP BY time() | 10 | 800 (800\N{EN DASH}800) | 800 (800")
    assert influx.split(" | ")[4].endswith(mark)
    note = next(line for line in text.splitlines() if line.startswith(mark))
    assert "the slowest of 10" in note and "telehub" not in note
    assert f"- 1h: p50 \N{MULTIPLICATION SIGN}80.00, p99{mark} " in text
    assert "queries/run: telehub 200, influxdb 10" in text
    pytest.importorskip("matplotlib", reason="the plot needs the bench extra: pip install -e '.[bench]'")
    query_report._plot(_query_result(40, 10), tmp_path / "query.png")
    assert (tmp_path / "query.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(("queries", "is_max"), [(10, True), (40, True), (99, True), (100, False), (200, False)])
def test_a_nearest_rank_p99_is_the_max_below_100_queries(queries: int, is_max: bool) -> None:
    assert query_report.p99_is_max(queries) is is_max
    assert query_report.p99_index(queries) == (queries - 1 if is_max else round(0.99 * queries) - 1)


# connections: the memory is read once it holds steady, at most --settle seconds after the last open.


def _reader(totals: list[float]) -> tuple[list[float], Any]:
    read: list[float] = []
    values = itertools.chain(totals, itertools.repeat(totals[-1]))

    def rss() -> dict[str, float]:
        read.append(next(values))
        return {"server": read[-1], "redis": 0.0}

    return read, rss


def test_memory_steady_for_the_steady_span_is_read_at_once() -> None:
    read, rss = _reader([5_000.0, 5_100.0])
    began = time.monotonic()
    reading, waited = asyncio.run(steady_rss(rss, 5.0, steady_kib=256, steady_s=0.2, every_s=0.05))
    assert reading == {"server": 5_100.0, "redis": 0.0}
    assert 0.2 <= waited < 1.0 and time.monotonic() - began < 1.0
    assert len(read) >= 4  # a reading every 0.05 s over the steady 0.2 s


def test_memory_still_moving_is_read_when_settle_is_over() -> None:
    read, rss = _reader([float(1_000 * n) for n in range(1_000)])
    reading, waited = asyncio.run(steady_rss(rss, 0.3, steady_kib=256, steady_s=0.1, every_s=0.05))
    assert 0.3 <= waited < 0.6
    assert reading["server"] == read[-1] and len(read) >= 4


def test_a_jump_in_memory_restarts_the_steady_span() -> None:
    # Steady, then a jump of 1 MiB after the third reading: the span starts again from the jump.
    read, rss = _reader([0.0, 0.0, 0.0, 1_024.0])
    reading, waited = asyncio.run(steady_rss(rss, 5.0, steady_kib=256, steady_s=0.2, every_s=0.05))
    assert reading["server"] == 1_024.0 and waited >= 0.3
    assert read[-5:] == [1_024.0] * 5  # steady for 0.2 s after the jump, read every 0.05 s


def test_no_settle_reads_memory_once_at_once() -> None:
    read, rss = _reader([7.0])
    reading, waited = asyncio.run(steady_rss(rss, 0.0))
    assert reading == {"server": 7.0, "redis": 0.0} and waited < 0.05
    assert read == [7.0]
