"""The ``soak`` benchmark end to end for 15 seconds against telehub, and its trend criterion on made-up series.

No figure is checked against a goal (the machines are shared and noisy): only that frames went from the
devices through telehub to the dashboards in every sample, that memory, CPU and latency were read, and that
the reports are where they should be. Three samples are too few to judge a trend, so the verdict is "not
judged" and the exit code 0; the criterion itself is tested on series made here.
"""

from __future__ import annotations

import json
import random
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.soak_report import MIN_JUDGED, judge, trend

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 samples of 5 s: 2 devices at 20 frames/s each to 10 dashboards."""
    results = tmp_path_factory.mktemp("results")
    command = [sys.executable, "-m", "benchmarks", "soak", "--minutes", "0.25", "--interval", "5"]
    command += ["--devices", "2", "--dashboards", "10", "--rate", "20", "--sample-every", "2"]
    command += ["--results-dir", str(results)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # One progress line per sample, as they are taken.
    assert [line for line in done.stdout.splitlines() if line.startswith("soak ")][-1].startswith("soak 3/3 at ")
    return results


@pytest.fixture(scope="module")
def written(results_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((results_dir / "soak-latest.json").read_text())
    return result


def test_every_sample_saw_the_load(written: dict[str, Any]) -> None:
    assert written["workload"] == "soak"
    assert "error" not in written, written.get("traceback")
    assert written["parameters"]["samples_planned"] == 3
    samples = written["samples"]
    assert len(samples) == 3
    assert [s["t_min"] for s in samples] == sorted(s["t_min"] for s in samples)
    for sample in samples:
        assert 4.5 <= sample["elapsed_s"] <= 6.0
        assert sample["delivered"] > 0 and sample["deliveries_per_s"] > 0
        assert sample["acked"] > 0 and 20 <= sample["acked_per_s"] <= 60  # 2 devices at 20 frames/s
        assert 0.9 <= sample["delivered_share"] <= 1.1
        assert sample["latency_samples"] > 0 and sample["unparsed_samples"] == 0
        assert 0 < sample["p50_ms"] <= sample["p99_ms"] < 5000
        assert sample["dashboards_lost"] == sample["devices_lost"] == sample["reopened"] == 0
        assert sample["held"], sample["why_not"]


def test_memory_and_cpu_were_read(written: dict[str, Any]) -> None:
    for sample in written["samples"]:
        assert sample["hub_rss_kib"] > 10_000 and sample["redis_rss_kib"] > 1_000
        assert sample["hub_processes"] == 1
        assert "redis_error" not in sample
        assert 0 < sample["redis_streams_kib"] < sample["redis_used_memory_kib"]
        assert sample["redis_other_kib"] == pytest.approx(sample["redis_used_memory_kib"] - sample["redis_streams_kib"])
        assert sample["hub_cores"] > 0 and sample["redis_cores"] >= 0
        assert set(sample["server_cpu_s_by_role"]) == {"telehub", "redis"}
    entries = [s["stream_entries"] for s in written["samples"]]
    assert entries == sorted(entries) and entries[-1] > entries[0]  # every frame stored (retention is days)
    totals = written["totals"]
    published, acked = totals["publisher"]["published"], totals["publisher"]["acked"]
    # Frames still in flight when the load stops are not acked yet: at most a window per device.
    assert 0 < acked <= published <= acked + 64 * 2, totals["publisher"]


def test_too_short_to_judge(written: dict[str, Any]) -> None:
    verdict = written["verdict"]
    assert verdict["passed"] and not verdict["hub_rss_upward"] and not verdict["hub_rss_judged"]
    assert verdict["judged_samples"] == 2 < MIN_JUDGED
    assert verdict["text"].startswith("not judged")
    assert verdict["trends"]["hub_rss_kib"]["slope_per_10min"] is not None


def test_markdown_and_plot_are_written(results_dir: Path, written: dict[str, Any]) -> None:
    table = (results_dir / "soak-latest.md").read_text()
    assert "**Verdict: not judged" in table
    assert "| hub RSS (KiB), decides |" in table
    assert table.count("| yes |") == 3  # a row per sample, each held
    stamped = sorted(results_dir.glob("soak-2*.json"))
    assert len(stamped) == 1
    assert stamped[0].read_bytes() == (results_dir / "soak-latest.json").read_bytes()
    assert written["files"]["md"] == stamped[0].with_suffix(".md").name
    pytest.importorskip("matplotlib", reason="the plot needs the bench extra: pip install -e '.[bench]'")
    assert (results_dir / "soak-latest.png").read_bytes().startswith(b"\x89PNG")


def _samples(hub: list[float], *, redis_leak: float = 0.0) -> list[dict[str, Any]]:
    """Samples a minute apart with these hub RSS values; Redis's streams growing steadily, the rest growing by
    ``redis_leak`` KiB a minute."""
    return [
        {
            "t_min": float(minute + 1),
            "hub_rss_kib": rss,
            "redis_rss_kib": 10_000.0 + 7_000 * minute,
            "redis_used_memory_kib": 5_000 + (6_700 + redis_leak) * minute,
            "redis_streams_kib": 6_700.0 * minute,
            "redis_other_kib": 5_000 + redis_leak * minute,
            "acked": 19_200,
            "acked_per_s": 320.0,
            "deliveries_per_s": 176_000.0,
            "p99_ms": 100.0,
            "held": True,
        }
        for minute, rss in enumerate(hub)
    ]


def test_trend_flags_a_growing_series_and_passes_a_flat_one() -> None:
    minutes = [float(m) for m in range(16, 31)]
    growing = [150_000 + 500 * m for m in range(15)]  # 5,000 KiB per 10 min: 3.2% of the median
    assert trend(minutes, growing, 0.02)["upward"]
    assert trend(minutes, growing, 0.02)["slope_per_10min"] == pytest.approx(5_000)
    noisy = random.Random(10)
    flat = [150_000 + noisy.gauss(0, 1_000) for _ in range(15)]
    found = trend(minutes, flat, 0.02)
    assert found["judged"] and not found["upward"]
    assert abs(found["share_per_10min"]) < 0.02
    shrinking = [150_000 - 500 * m for m in range(15)]
    assert not trend(minutes, shrinking, 0.02)["upward"]
    few = trend(minutes[:4], growing[:4], 0.02)
    assert not few["judged"] and not few["upward"] and few["slope_per_10min"] == pytest.approx(5_000)
    assert trend(minutes, growing, None)["judged"] is False  # reported only


def test_a_steep_line_through_noise_is_not_a_trend() -> None:
    """The p99 of the 2026-11-22 soak's second half (ms): the fitted slope passes the threshold, but it is
    under two standard errors from zero, so it is noise; the same slope with little noise is a trend."""
    minutes = [16.0, 17.1, 18.1, 19.1, 20.1, 21.1, 22.1, 23.1, 24.1, 25.1, 26.1, 27.1, 28.1, 29.1, 30.1]
    spiky = [57.0, 57, 67, 89, 88, 102, 93, 63, 82, 60, 81, 111, 92, 69, 68]
    found = trend(minutes, spiky, 0.10)
    assert found["share_per_10min"] > 0.10 and found["t"] < 2 and not found["upward"]
    steady = [60 + 0.88 * m + (0.5 if m % 2 else -0.5) for m in range(15)]
    found = trend(minutes, steady, 0.10)
    assert found["share_per_10min"] > 0.10 and found["t"] > 2 and found["upward"]


def test_judge_decides_on_the_hub_rss_after_warm_up() -> None:
    # A warm-up climb in the first half, flat afterwards: passes.
    settled = judge(_samples([100_000 + 5_000 * m for m in range(15)] + [170_000.0] * 15))
    assert settled["passed"] and settled["hub_rss_judged"] and not settled["hub_rss_upward"]
    assert settled["judged_from_min"] == 16.0 and settled["judged_samples"] == 15
    assert settled["text"].startswith("no upward trend")
    # Redis grows with its streams, the rest is flat: reported, not a failure.
    assert settled["trends"]["redis_rss_kib"]["upward"] and not settled["trends"]["redis_other_kib"]["upward"]
    assert settled["stream_bytes_per_stored_frame"] == pytest.approx(6_700 * 1024 / 19_200)
    # Redis's memory outside the streams is judged against all of its memory: reported, never decisive.
    rest = settled["trends"]["redis_other_kib"]
    assert rest["relative_to"] == statistics.median(5_000 + 6_700 * m for m in range(15, 30))
    leaking_redis = judge(_samples([150_000.0] * 30, redis_leak=1_000))
    assert leaking_redis["trends"]["redis_other_kib"]["upward"] and leaking_redis["passed"]
    assert "redis_other_kib" in leaking_redis["upward"]
    # A steady climb: fails.
    leaking = judge(_samples([150_000 + 500 * m for m in range(30)]))
    assert not leaking["passed"] and leaking["hub_rss_upward"]
    assert leaking["text"].startswith("upward trend")
    # A soak that broke off fails whatever its trend.
    broken = judge(_samples([150_000.0] * 30), failed="RuntimeError: 1 device connection(s) lost")
    assert not broken["passed"] and broken["text"].startswith("failed")
    assert not judge([])["passed"]


def test_help_lists_the_soak_workload() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "soak" in result.stdout
    own = subprocess.run(
        [sys.executable, "-m", "benchmarks", "soak", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "--minutes" in own.stdout and "half of" in own.stdout


def test_ctrl_c_writes_what_was_sampled(tmp_path: Path) -> None:
    """Interrupted after its first sample, the soak still writes its reports, with the interruption as its
    error and a failed verdict (exit code 1), and stops the hub and the load it started."""
    command = [sys.executable, "-m", "benchmarks", "soak", "--minutes", "1", "--interval", "3"]
    command += ["--devices", "1", "--dashboards", "2", "--rate", "10", "--results-dir", str(tmp_path)]
    soak = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert soak.stdout is not None
    for line in soak.stdout:
        if line.startswith("soak 1/"):
            soak.send_signal(signal.SIGINT)
            break
    rest, _ = soak.communicate(timeout=60)
    assert soak.returncode == 1, rest
    written = json.loads((tmp_path / "soak-latest.json").read_text())
    assert written["error"].startswith("KeyboardInterrupt") and len(written["samples"]) >= 1
    assert written["verdict"]["passed"] is False
    data_dir = written["started_as"].split("--data-dir ")[1].split()[0]  # in the hub's and its Redis's command
    assert subprocess.run(["pgrep", "-f", data_dir], capture_output=True, check=False).returncode == 1
