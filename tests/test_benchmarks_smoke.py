"""The benchmark harness end to end against the floor, with tiny parameters: it runs, counts and writes.

No figure is checked (the machines are shared and noisy); only that every frame sent was acked and that the
reports are where they should be. telehub's own target is not run here: it needs the device endpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import BenchmarkOptions, run_benchmark
from benchmarks.workloads import WORKLOADS
from benchmarks.wsclient import OP_BINARY, OP_PING, OP_TEXT, FrameParser

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=sorted(WORKLOADS))
def floor_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of one workload against the floor: 5 devices, 1 s, 2 load generator processes."""
    results_dir = tmp_path_factory.mktemp("results")
    options = BenchmarkOptions(
        workload=request.param,
        targets=("floor",),
        runs=1,
        seconds=1.0,
        devices=5,
        window=8,
        processes=2,
        results_dir=results_dir,
        command="pytest smoke",
    )
    return run_benchmark(options, say=lambda line: None)


def test_every_frame_sent_is_acked(floor_run: dict[str, Any]) -> None:
    (target,) = floor_run["targets"]
    assert "error" not in target, target.get("traceback")
    (run,) = target["runs"]
    assert run["acked_frames"] > 0
    assert run["sent"] == run["acked_total"]
    assert run["errors"] == run["unresolved"] == run["lost_frames"] == run["lost_connections"] == 0
    assert len(run["workers"]) == 2
    assert sum(worker["devices"] for worker in run["workers"]) == 5
    assert run["server_cpu_s_by_role"].keys() == {"floor"}
    assert target["summary"]["frames_per_s"]["runs"] == 1


def test_json_and_markdown_are_written(floor_run: dict[str, Any]) -> None:
    files = {kind: Path(path) for kind, path in floor_run["files"].items()}
    written = json.loads(files["json"].read_text())
    assert written["workload"] == floor_run["workload"]
    assert written["targets"][0]["runs"][0]["acked_frames"] == floor_run["targets"][0]["runs"][0]["acked_frames"]
    table = files["md"].read_text()
    assert "| floor | 1 |" in table
    assert "median (min\N{EN DASH}max)" in table
    assert files["latest_json"].read_bytes() == files["json"].read_bytes()
    assert files["latest_md"].read_text() == table


def test_plot_is_written(floor_run: dict[str, Any]) -> None:
    pytest.importorskip("matplotlib", reason="the plot needs the bench extra: pip install -e '.[bench]'")
    png = Path(floor_run["files"]["png"])
    assert png.read_bytes().startswith(b"\x89PNG")
    assert Path(floor_run["files"]["latest_png"]).read_bytes() == png.read_bytes()


def test_help_lists_the_workloads() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    for name in WORKLOADS:
        assert name in result.stdout


def test_frame_parser_joins_fragments_and_reads_long_frames() -> None:
    parser = FrameParser()
    long_payload = b"x" * 70_000
    data = (
        b"\x01\x03abc"  # text, not final
        + b"\x89\x02hi"  # a ping between the fragments
        + b"\x80\x03def"  # final continuation
        + b"\x82\x7f"
        + len(long_payload).to_bytes(8, "big")
        + long_payload
    )
    # Fed a byte at a time at first, then the rest at once: frames are whole only when they are complete.
    messages = [message for byte in data[:7] for message in parser.feed(bytes([byte]))] + parser.feed(data[7:])
    assert messages == [(OP_PING, b"hi"), (OP_TEXT, b"abcdef"), (OP_BINARY, long_payload)]
