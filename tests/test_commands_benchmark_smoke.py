"""The ``commands`` benchmark end to end against telehub, with tiny sizes: it measures, checks and writes.

No figure is checked against a goal (the machines are shared and noisy); only that commands went from REST to
the devices and their results came back over both WebSocket and REST, in the order the moments happen, and
that the reports are where they should be. Also the checks the benchmark makes before it reports anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from benchmarks import rest_floor
from benchmarks.commands import CommandMismatch, _check_changes, percentile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("results")
    command = [sys.executable, "-m", "benchmarks", "commands", "--runs", "1", "--devices", "4"]
    command += ["--idle-commands", "20", "--seconds", "1", "--settle", "0.2", "--concurrency", "4"]
    command += ["--results-dir", str(results)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return results


@pytest.fixture(scope="module")
def written(results_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((results_dir / "commands-latest.json").read_text())
    return result


def test_idle_round_trips_were_timed_in_order(written: dict[str, Any]) -> None:
    assert written["workload"] == "commands"
    (run,) = written["runs"]
    for quantile in ("p50", "p99"):
        accepted, device = run[f"idle_accepted_{quantile}_ms"], run[f"idle_device_{quantile}_ms"]
        assert accepted > 0
        assert 0 < device < run[f"idle_ws_{quantile}_ms"]
        assert device < run[f"idle_rest_{quantile}_ms"]


def test_commands_completed_at_saturation(written: dict[str, Any]) -> None:
    (run,) = written["runs"]
    assert run["completed"] > 0 and run["posted"] >= run["completed"]
    assert run["commands_per_s"] == pytest.approx(run["completed"] / written["parameters"]["seconds"])
    assert 0 < run["load_ws_p50_ms"] <= run["load_ws_p99_ms"]
    assert run["server_cpu_us_per_command"] > 0
    assert run["hub_cpu_us_per_command"] > 0 and run["redis_cpu_us_per_command"] > 0
    split = run["hub_cpu_us_per_command"] + run["redis_cpu_us_per_command"]
    assert split == pytest.approx(run["server_cpu_us_per_command"])
    assert written["summary"]["commands_per_s"]["runs"] == 1


def test_the_rest_floor_was_measured_under_the_same_load(written: dict[str, Any]) -> None:
    (run,) = written["runs"]
    assert run["floor_requests_per_s"] > 0
    assert run["floor_server_cpu_us_per_request"] > 0 and run["floor_client_cpu_us_per_request"] > 0
    assert written["floor_started_as"].startswith("python -m benchmarks.rest_floor --port ")


def test_the_rest_floor_answers_a_command_as_the_hub_does() -> None:
    with TestClient(rest_floor.app) as http:
        accepted = http.post("/api/v1/devices/d1/commands", json={"command": "ping", "params": {}})
        refused = http.post("/api/v1/devices/d1/commands", json={"params": {}})
    assert accepted.status_code == 202
    assert accepted.json()["status"] == "queued" and accepted.json()["command_id"].startswith("cmd_")
    assert refused.status_code == 422


def test_markdown_and_plot_are_written(results_dir: Path) -> None:
    text = (results_dir / "commands-latest.md").read_text()
    assert "commands/s" in text and "Against the targets" in text and "python -m benchmarks commands" in text
    assert "## REST floor" in text and "the floor's requests/s" in text
    assert (results_dir / "commands-latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_changes_must_cover_every_command() -> None:
    _check_changes(Counter(queued=3, sent=3, completed=3), 3)
    for wrong in (
        Counter(queued=3, sent=2, completed=3),  # a completed command never shown sent
        Counter(queued=3, sent=3, completed=2),  # a result the dashboard never saw
        Counter(queued=2, sent=3, completed=3),
        Counter(queued=3, sent=4, completed=3),  # a command marked sent twice
        Counter(queued=3, sent=3, completed=3, timed_out=1),
    ):
        with pytest.raises(CommandMismatch):
            _check_changes(wrong, 3)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
