"""The ``recovery`` and ``connections`` benchmarks end to end against telehub, with tiny sizes.

No figure is checked against a goal (the machines are shared and noisy); only that the replay was exactly what
was missed (the benchmark checks every message and fails otherwise), that memory and rates were measured, and
that the reports are where they should be. python-socketio is not run here: the test suite never needs the peers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import recovery
from benchmarks.recovery_clients import Received

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = 300
MAX_REPLAY = 1_000
CONNECTIONS = 50


def _run(module: str, arguments: list[str], results: Path) -> None:
    command = [sys.executable, "-m", module, *arguments, "--runs", "1", "--results-dir", str(results)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of each: 300 messages missed on each channel, after a history of 1,000 frames (the replay limit);
    50 idle devices and 50 idle dashboards."""
    results = tmp_path_factory.mktemp("results")
    replaying = ["--messages", str(MESSAGES), "--max-replay", str(MAX_REPLAY), "--devices", "2", "--warmup", "3"]
    _run("benchmarks.recovery", replaying, results)
    connections = ["--connections", str(CONNECTIONS), "--processes", "2", "--settle", "0.5", "--idle", "0.5"]
    connections += ["--target", "telehub"]
    _run("benchmarks.connections", connections, results)
    return results


def _written(results_dir: Path, workload: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((results_dir / f"{workload}-latest.json").read_text())
    return result


def test_the_replay_was_what_was_missed(results_dir: Path) -> None:
    written = _written(results_dir, "recovery")
    assert written["workload"] == "recovery"
    assert written["parameters"]["max_replay"] == MAX_REPLAY
    assert written["parameters"]["history"]["frames"] == MAX_REPLAY  # the streams are longer than the limit
    assert f"TELEHUB_DASHBOARD_MAX_REPLAY={MAX_REPLAY}" in written["started_as"]
    assert written["cases"].keys() == {"wildcard", "exact"}
    assert written["cases"]["wildcard"]["channel"] == "devices/+/telemetry"
    for case in written["cases"].values():
        (run,) = case["runs"]
        assert run["replayed"] == run["missed"] == MESSAGES
        assert 0 < run["reply_ms"] <= run["first_replayed_ms"] <= run["replay_end_ms"] <= run["live_ms"]
        assert run["replay_msgs_per_s"] > 0
        assert run["plain_live_ms"] > 0
        assert set(run["server_cpu_s_by_role"]) == {"telehub", "redis"}
        assert case["summary"]["live_ms"]["runs"] == 1


def test_idle_connections_were_measured(results_dir: Path) -> None:
    written = _written(results_dir, "connections")
    assert written["workload"] == "connections"
    (target,) = written["targets"]
    assert target["target"] == "telehub" and "error" not in target
    # Provisioned once, before the run, and the run's server started on a copy of that data dir.
    assert target["provisioned"]["devices"] == CONNECTIONS and target["provisioned"]["seconds"] > 0
    (run,) = target["runs"]
    assert run["dropped"] == {"devices": 0, "dashboards": 0}
    assert 0 <= run["baseline_steady_s"] <= 0.5 + 0.3  # --settle 0.5 at most, give or take one reading
    for kind in ("devices", "dashboards"):
        described = run["kinds"][kind]
        assert described["connections"] == CONNECTIONS
        assert 0 <= described["steady_s"] <= 0.5 + 0.3
        assert described["connects_per_s"] > 0
        assert described["server_kib_per_connection"] > 0
        assert described["kib_per_connection"] > 0
        assert target["summary"][f"{kind}_kib_per_connection"]["runs"] == 1


def test_markdown_and_plots_are_written(results_dir: Path) -> None:
    recovered = (results_dir / "recovery-latest.md").read_text()
    assert f"| {MESSAGES:,} (checked) |" in recovered
    assert "`recovered: false`" in recovered  # what the default replay limit would answer
    connected = (results_dir / "connections-latest.md").read_text()
    assert f"| telehub | {CONNECTIONS:,} idle devices | 1 |" in connected
    assert "budget 20 KiB" in connected
    for workload in ("recovery", "connections"):
        stamped = sorted(results_dir.glob(f"{workload}-2*.json"))
        assert len(stamped) == 1
        assert stamped[0].read_bytes() == (results_dir / f"{workload}-latest.json").read_bytes()
    pytest.importorskip("matplotlib", reason="the plot needs the bench extra: pip install -e '.[bench]'")
    for workload in ("recovery", "connections"):
        assert (results_dir / f"{workload}-latest.png").read_bytes().startswith(b"\x89PNG")


def test_more_messages_than_the_replay_limit_are_refused() -> None:
    with pytest.raises(SystemExit) as exited:
        recovery.main(["--messages", "300000", "--max-replay", "200000"])
    assert exited.value.code == 2


def _messages(*numbers: int, device: str = "d1") -> list[Received]:
    """Messages of ``device`` with these ``n``, offsets rising from 100-0, in the epoch ``e``."""
    channel = f"devices/{device}/telemetry"
    return [Received(0.0, channel, device, n, f"{100 + i}-0", "e") for i, n in enumerate(numbers)]


def _check(received: list[Received]) -> list[Received]:
    """``check_replay`` when n 5..8 of device d1 were missed after offset 99-0 and n 9 is the marker."""
    return recovery.check_replay(
        received,
        missed={"d1": (5, 8)},
        since=("99-0", "e"),
        result={"recovered": True},
        channel="devices/d1/telemetry",
        marker=("d1", 9),
    )


@pytest.mark.parametrize(
    ("numbers", "problem"),
    [
        ((5, 7, 8, 9), "a gap, n 6 was due"),
        ((5, 6, 6, 7, 8, 9), "a duplicate, n 7 was due"),
        ((5, 6, 7, 9), "3 messages replayed, 4 missed"),
        ((5, 6, 7, 8, 9, 8), "1 messages after the marker"),
    ],
)
def test_a_replay_that_is_not_what_was_missed_fails_loudly(numbers: tuple[int, ...], problem: str) -> None:
    with pytest.raises(recovery.ReplayMismatch, match=problem):
        _check(_messages(*numbers))


def test_a_replay_of_exactly_what_was_missed_passes() -> None:
    received = _messages(5, 6, 7, 8, 9)
    assert _check(received) == received[:4]
