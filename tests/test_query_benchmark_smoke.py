"""The ``query`` benchmark end to end against telehub, with tiny sizes: it loads, checks, times and writes.

No figure is checked (the machines are shared and noisy); only that the answers passed the check against the
samples, that every interval was timed, and that the reports are where they should be. InfluxDB is not run
here: the test suite never needs the peers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
INTERVALS = ("1m", "1h", "1d")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of 5 queries per interval over 0.02 days (1,728 s) of samples, telehub only."""
    results = tmp_path_factory.mktemp("results")
    command = [sys.executable, "-m", "benchmarks", "query", "--days", "0.02", "--queries", "5", "--runs", "1"]
    command += ["--target", "telehub", "--results-dir", str(results)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return results


@pytest.fixture(scope="module")
def written(results_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((results_dir / "query-latest.json").read_text())
    return result


def test_the_samples_were_loaded_and_the_answers_checked(written: dict[str, Any]) -> None:
    assert written["workload"] == "query"
    assert written["parameters"]["samples"] == 1_728 * 10
    (target,) = written["targets"]
    assert target["target"] == "telehub"
    assert target["load"]["samples"] == 17_280
    assert target["check"].keys() == set(INTERVALS)
    assert target["check"]["1m"]["averages"] == written["parameters"]["ranges"]["1m"]["buckets"] * 10
    assert all(check["max_relative_difference"] <= 1e-9 for check in target["check"].values())


def test_every_interval_was_timed(written: dict[str, Any]) -> None:
    (target,) = written["targets"]
    for interval in INTERVALS:
        (run,) = target["intervals"][interval]["runs"]
        assert 0 < run["p50_ms"] <= run["p99_ms"]
        assert run["response_bytes"] > 0
        assert target["intervals"][interval]["summary"]["p50_ms"]["runs"] == 1
    assert written["ratios"] == {}  # no InfluxDB, no ratio


def test_markdown_and_plot_are_written(results_dir: Path, written: dict[str, Any]) -> None:
    table = (results_dir / "query-latest.md").read_text()
    for interval in INTERVALS:
        assert f"| {interval} | telehub |" in table
    assert "median (min\N{EN DASH}max)" in table
    stamped = sorted(results_dir.glob("query-2*.json"))
    assert len(stamped) == 1
    assert stamped[0].read_bytes() == (results_dir / "query-latest.json").read_bytes()
    pytest.importorskip("matplotlib", reason="the plot needs the bench extra: pip install -e '.[bench]'")
    assert (results_dir / "query-latest.png").read_bytes().startswith(b"\x89PNG")


def test_help_lists_the_query_workload() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "query" in result.stdout
