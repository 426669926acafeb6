"""The ``fanout`` benchmark end to end against telehub, with tiny sizes: it searches, measures and writes.

No figure is checked against a goal (the machines are shared and noisy); only that frames went from the
devices through telehub to the dashboards, that latency was sampled from the frames' send times, that the
CPU was counted for the hub and its redis-server, and that the reports are where they should be. The
references are not run here: the test suite never needs the peers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of at most 3 one-second steps, 10 devices to 20 dashboards, telehub only."""
    results = tmp_path_factory.mktemp("results")
    command = [sys.executable, "-m", "benchmarks", "fanout", "--target", "telehub", "--runs", "1"]
    command += ["--seconds", "1", "--settle", "0.3", "--dashboards", "20", "--start-rate", "5", "--max-steps", "3"]
    command += ["--latency-limit-ms", "5000", "--sample-every", "5", "--results-dir", str(results)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return results


@pytest.fixture(scope="module")
def written(results_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((results_dir / "fanout-latest.json").read_text())
    return result


def test_frames_reached_the_dashboards(written: dict[str, Any]) -> None:
    assert written["workload"] == "fanout"
    assert written["parameters"]["dashboards_every_device"] == 10
    (target,) = written["targets"]
    assert target["target"] == "telehub" and "error" not in target
    (run,) = target["runs"]
    assert 1 <= run["steps"] <= 3
    saturation = run["step_figures"][run["saturation_step"]]
    assert saturation["sustained"]
    assert run["deliveries_per_s"] == saturation["deliveries_per_s"] > 0
    assert 0.9 <= saturation["delivered_share"] <= 1.1
    assert saturation["acked"] > 0  # telehub acks the frames it stored
    totals = run["totals"]
    assert totals["publisher"]["published"] > 0
    assert sum(d["dashboards"] for d in totals["dashboards"]) == 20
    assert all(d["lost"] == 0 for d in totals["dashboards"])


def test_latency_was_sampled_at_half_of_saturation(written: dict[str, Any]) -> None:
    (run,) = written["targets"][0]["runs"]
    half = run["half"]
    assert half["rate_hz"] == run["saturation_rate_hz"] / 2
    assert half["latency_samples"] > 0
    assert half["unparsed_samples"] == 0
    assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["p999_ms"] < 5000


def test_server_and_load_generator_cpu_were_counted(written: dict[str, Any]) -> None:
    (target,) = written["targets"]
    (run,) = target["runs"]
    saturation = run["step_figures"][run["saturation_step"]]
    assert set(saturation["server_cpu_s_by_role"]) == {"telehub", "redis"}
    assert saturation["server_cores"] > 0
    assert len(saturation["loadgen_cores_by_process"]) == 3  # the publisher and 2 dashboard processes
    assert target["summary"]["deliveries_per_s"]["runs"] == 1
    assert written["ratios"] == {}  # no reference, no ratio


def test_markdown_and_plot_are_written(results_dir: Path) -> None:
    table = (results_dir / "fanout-latest.md").read_text()
    assert "| telehub | 1 |" in table
    assert "The references do less work than telehub" in table
    stamped = sorted(results_dir.glob("fanout-2*.json"))
    assert len(stamped) == 1
    assert stamped[0].read_bytes() == (results_dir / "fanout-latest.json").read_bytes()
    pytest.importorskip("matplotlib", reason="the plot needs the bench extra: pip install -e '.[bench]'")
    assert (results_dir / "fanout-latest.png").read_bytes().startswith(b"\x89PNG")


def test_help_lists_the_fanout_workload() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "fanout" in result.stdout
