"""``python -m benchmarks all`` and ``profile``: the plan's selection, the suite's summary, folded-stack counting.
(The workloads themselves are smoke-tested in their own modules; the suite only sequences them.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.profile import markdown, package_of, read_folded
from benchmarks.suite import PLAN, Outcome, chosen, summary

FOLDED = """\
<module> (telehub:8);main (hub/cli.py:40);flush (ingest/flusher.py:10);execute (redis/asyncio/client.py:5) 30
<module> (telehub:8);main (hub/cli.py:40);flush (ingest/flusher.py:12) 10
<module> (telehub:8);main (hub/cli.py:40);decode (ingest/codec.py:3);unpackb (msgpack/fallback.py:1) 60
"""


def test_the_plan_covers_every_workload_of_benchmarks_md_once() -> None:
    from benchmarks.__main__ import IN_PROCESS
    from benchmarks.workloads import WORKLOADS

    every = set(WORKLOADS) | set(IN_PROCESS) - {"all", "profile"}
    assert sorted(step.workload for step in PLAN) == sorted(every)
    # Three measured runs each: medians with min-max, as BENCHMARKS.md asks.
    assert all(step.args[step.args.index("--runs") + 1] == "3" for step in PLAN)


def test_only_and_skip_select_in_plan_order_and_unknown_names_are_refused() -> None:
    assert [s.workload for s in chosen("commands,fanout", None)] == ["fanout", "commands"]
    assert "connections" not in [s.workload for s in chosen(None, "connections")]
    assert len(chosen(None, None)) == len(PLAN)
    with pytest.raises(ValueError, match="unknown workload"):
        chosen("fanuot", None)


def test_the_summary_lists_each_workload_and_includes_its_table(tmp_path: Path) -> None:
    fanout, commands = chosen("fanout,commands", None)
    (tmp_path / "fanout-latest.md").write_text("# fanout: today\n\n| a |\n|---|\n| 1 |\n")
    text = summary([Outcome(fanout, 0, 61.0), Outcome(commands, 1, 5.0)], tmp_path, 66.0)
    assert "| fanout | `python -m benchmarks fanout --runs 3" in text
    assert "| 1:01 | [fanout-latest.md](fanout-latest.md) |" in text
    assert "| commands |" in text and "| 0:05 | failed |" in text
    assert "## fanout: today" in text and "| 1 |" in text


def test_dry_run_prints_every_command_and_runs_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "all", "--dry-run", "--results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(done.stdout.splitlines()) == len(PLAN) + 1
    assert "benchmarks fanout --runs 3" in done.stdout and "in all" in done.stdout
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
