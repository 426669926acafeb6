"""The ``scaling`` benchmark end to end with tiny sizes: 1 and 2 hub processes, on one Redis and on a local
Redis Cluster, ``ingest-rows`` and ``fanout``; it measures every point and writes the curve and the ratios.

No figure is checked against a goal (the machines are shared and noisy, and 2 processes need not beat 1 on
2 cores): only that every point measured a positive throughput with the hub on the store it names, that the
ratios are taken to the 1-process point of the same workload and Redis, and that the reports are written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.scaling import ratios

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("ingest-rows", "fanout")
MODES = ("single", "cluster")


@pytest.fixture(scope="module")
def run_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """8 points: ingest-rows with 20 devices for 1 s; fanout with 2 devices to 4 dashboards, 2 half-second steps."""
    results = tmp_path_factory.mktemp("results")
    command = [sys.executable, "-m", "benchmarks", "scaling", "--processes", "1,2", "--redis", "single,cluster"]
    command += ["--seconds", "1", "--devices", "20", "--window", "16", "--loadgen-processes", "1"]
    command += ["--fanout-devices", "2", "--dashboards", "4", "--fanout-seconds", "0.5", "--fanout-settle", "0.2"]
    command += ["--start-rate", "5", "--max-steps", "2", "--sample-every", "2", "--latency-limit-ms", "5000"]
    command += ["--results-dir", str(results)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return results, done.stdout


@pytest.fixture(scope="module")
def written(run_output: tuple[Path, str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((run_output[0] / "scaling-latest.json").read_text())
    return result


def test_every_point_was_measured(written: dict[str, Any]) -> None:
    assert written["workload"] == "scaling"
    points = written["points"]
    assert sorted((p["workload"], p["redis"], p["processes"]) for p in points) == sorted(
        (w, m, n) for w in WORKLOADS for m in MODES for n in (1, 2)
    )
    for point in points:
        assert "error" not in point, point.get("traceback")
        (run,) = point["runs"]
        assert point["throughput"]["median"] > 0 and point["throughput"]["runs"] == 1
        assert point["server_cores"]["median"] > 0
        assert point["server_processes"]["telehub"] >= point["processes"]
        if point["workload"] == "ingest-rows":
            assert point["throughput"]["median"] == run["frames_per_s"]
            assert run["errors"] == 0 and run["lost_connections"] == 0
        else:
            assert point["throughput"]["median"] == run["deliveries_per_s"]
            assert run["step_figures"][run["saturation_step"]]["sustained"]


def test_the_hub_ran_on_the_store_named(written: dict[str, Any]) -> None:
    """One redis-server (the hub's embedded one) or the cluster's three nodes, counted in the server's CPU."""
    assert set(written["stores"]) == set(MODES)
    for point in written["points"]:
        assert point["server_processes"]["redis"] == (1 if point["redis"] == "single" else 3)
        if point["workload"] == "ingest-rows":  # every acked frame was written to Redis
            assert point["server_cores_by_role"]["redis"] > 0


def test_ratios_are_to_one_process(written: dict[str, Any]) -> None:
    by_point = {(p["workload"], p["redis"], p["processes"]): p for p in written["points"]}
    for workload in WORKLOADS:
        for mode in MODES:
            one, two = by_point[(workload, mode, 1)], by_point[(workload, mode, 2)]
            assert one["ratio"] == 1.0
            assert two["ratio"] == pytest.approx(two["throughput"]["median"] / one["throughput"]["median"])
            assert two["ratio"] > 0


def test_markdown_plot_and_progress(run_output: tuple[Path, str], written: dict[str, Any]) -> None:
    results, stdout = run_output
    text = (results / "scaling-latest.md").read_text()
    assert "python -m benchmarks scaling --processes 1,2" in text
    assert f"{written['machine']['cpus']} CPUs" in text and "load generator" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == 8 and all("frames/s" in row or "deliveries/s" in row for row in rows)
    assert sum("\N{MULTIPLICATION SIGN}1.00 |" in row for row in rows) >= 4
    assert (results / "scaling-latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stamped = sorted(path.suffix for path in results.glob("scaling-2*"))
    assert stamped == [".json", ".md", ".png"]
    assert "scaling: point 8/8" in stdout


def test_ratios_skip_what_has_no_base() -> None:
    def point(workload: str, redis: str, processes: int, median: float | None) -> dict[str, Any]:
        found: dict[str, Any] = {"workload": workload, "redis": redis, "processes": processes}
        if median is not None:
            found["throughput"] = {"median": median}
        return found

    points = [
        point("fanout", "single", 1, 100.0),
        point("fanout", "single", 2, 150.0),
        point("fanout", "single", 4, None),  # failed
        point("fanout", "cluster", 1, None),  # failed: no base for the others
        point("fanout", "cluster", 2, 80.0),
    ]
    ratios(points)
    assert [p["ratio"] for p in points] == [1.0, 1.5, None, None, None]
