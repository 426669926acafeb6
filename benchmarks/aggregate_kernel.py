"""``aggregate-kernel``: telehub's window aggregation against polars ``group_by`` and pandas ``groupby``.

Workload (BENCHMARKS.md): 10,000 series (2,500 devices x 4 metrics) at 10 Hz, each with its own phase, for
``seconds`` of event time; a sample arrives 0-30 ms after its timestamp and micro-batches are cut every 20 ms
of arrival time (2,000 samples each), aggregated into 1 s and 1 min windows. Arrays are made before the
clock starts; each target then processes every micro-batch in order, and the figure is samples/s over the
whole pass. Targets, each run once per round, rounds interleaved so that noise hits all alike:

- ``telehub WindowState``: ``add`` + ``close`` per micro-batch: group-by, merge into the open windows,
  per-device watermarks (5 s allowed lateness), emit the windows due, late and idle bookkeeping.
- ``telehub aggregate``: only the stateless group-by per micro-batch and resolution.
- ``polars group_by`` / ``pandas groupby``: only the per-batch group-by by (series, window start) with
  count, sum, min, max, per resolution: less work than telehub does, so the ratio favours them.
- ``polars + state`` / ``pandas + state``: the same job as ``WindowState`` written the way a data engineer
  would: group-by the batch, concat with the open windows and group-by again, join per-device watermarks,
  split due windows from open ones. Its emitted windows are checked equal to telehub's after the runs.

Everything runs single-threaded in a child process started with ``POLARS_MAX_THREADS=1`` and
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS=1`` set before numpy or polars is imported.

    python -m benchmarks aggregate-kernel [--runs 3] [--seconds 10] [--kernels]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import benchmark_command, show_written

__all__ = ["run"]

SINGLE_THREAD_ENV = {
    "POLARS_MAX_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
DEVICES = 2_500
METRICS = 4
RATE_HZ = 10
BATCH_MS = 20
MAX_DELAY_MS = 30
RESOLUTIONS_MS = (1_000, 60_000)
ALLOWED_LATENESS_MS = 5_000
T0_MS = 1_800_000_000_000
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def run(runs: int = 3, seconds: float = 10.0) -> dict[str, Any]:
    """Measure every target ``runs`` times in a single-threaded child process; the results writer's dict."""
    env = {**os.environ, **SINGLE_THREAD_ENV}
    command = [sys.executable, "-m", "benchmarks.aggregate_kernel", "--child", "--runs", str(runs)]
    command += ["--seconds", str(seconds)]
    child = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise RuntimeError(f"aggregate-kernel child failed:\n{child.stderr}")
    result: dict[str, Any] = json.loads(child.stdout)
    return result


# Everything below runs in the child, after the environment is set.


def _workload(seconds: float) -> tuple[list[tuple[Any, ...]], int]:
    """Micro-batches ``(device, series, ts, value, now_ms)`` in arrival order, and the sample count."""
    import numpy as np

    rng = np.random.default_rng(7)
    series_count = DEVICES * METRICS
    period = 1000 // RATE_HZ
    ticks = int(seconds * RATE_HZ)
    phase = rng.integers(0, period, series_count)
    series = np.tile(np.arange(series_count, dtype=np.int64), ticks)
    ts = T0_MS + np.repeat(np.arange(ticks, dtype=np.int64) * period, series_count) + np.tile(phase, ticks)
    arrival = ts + rng.integers(0, MAX_DELAY_MS + 1, ts.size)
    order = np.argsort(arrival, kind="stable")
    series, ts, arrival = series[order], ts[order], arrival[order]
    device = series // METRICS
    values = 20.0 + 5.0 * np.sin(ts / 10_000.0 + series) + rng.normal(0.0, 0.1, ts.size)
    cuts = np.searchsorted(arrival, np.arange(T0_MS, int(arrival[-1]) + BATCH_MS + 1, BATCH_MS), side="left")
    batches = []
    for begin, end in itertools.pairwise(cuts):
        if end > begin:
            now_ms = int(arrival[end - 1])
            batches.append((device[begin:end], series[begin:end], ts[begin:end], values[begin:end], now_ms))
    return batches, int(ts.size)


def _telehub_state(batches: list[tuple[Any, ...]]) -> list[Any]:
    from aggregation import WindowState

    state = WindowState(RESOLUTIONS_MS, allowed_lateness_ms=ALLOWED_LATENESS_MS)
    emitted = []
    for device, series, ts, values, now_ms in batches:
        state.add(device, series, ts, values, now_ms=now_ms)
        emitted.append(state.close(now_ms))
    return emitted


def _telehub_aggregate(batches: list[tuple[Any, ...]]) -> list[Any]:
    from aggregation import aggregate

    return [[aggregate(s, ts, v, width) for width in RESOLUTIONS_MS] for _, s, ts, v, _ in batches]


def _polars_group_by(batches: list[tuple[Any, ...]]) -> list[Any]:
    import polars as pl

    out = []
    for device, series, ts, values, _ in batches:
        frame = pl.DataFrame({"device": device, "series": series, "ts": ts, "value": values})
        for width in RESOLUTIONS_MS:
            out.append(
                frame.group_by("series", (pl.col("ts") // width * width).alias("start")).agg(
                    pl.len().alias("count"),
                    pl.col("value").sum().alias("sum"),
                    pl.col("value").min().alias("min"),
                    pl.col("value").max().alias("max"),
                )
            )
    return out


def _polars_state(batches: list[tuple[Any, ...]]) -> list[Any]:
    import polars as pl

    keys = ["device", "series", "start"]
    merge = [pl.col("count").sum(), pl.col("sum").sum(), pl.col("min").min(), pl.col("max").max()]
    schema = {"device": pl.Int64, "series": pl.Int64, "start": pl.Int64, "count": pl.UInt32}
    schema |= {"sum": pl.Float64, "min": pl.Float64, "max": pl.Float64}
    open_windows = {width: pl.DataFrame(schema=schema) for width in RESOLUTIONS_MS}
    watermarks = pl.DataFrame(schema={"device": pl.Int64, "watermark": pl.Int64})
    emitted = []
    for device, series, ts, values, _ in batches:
        frame = pl.DataFrame({"device": device, "series": series, "ts": ts, "value": values})
        seen = frame.group_by("device").agg((pl.col("ts").max() - ALLOWED_LATENESS_MS).alias("watermark"))
        watermarks = pl.concat([watermarks, seen]).group_by("device").agg(pl.col("watermark").max())
        closed = {}
        for width in RESOLUTIONS_MS:
            batch = frame.group_by("device", "series", (pl.col("ts") // width * width).alias("start")).agg(
                pl.len().alias("count"),
                pl.col("value").sum().alias("sum"),
                pl.col("value").min().alias("min"),
                pl.col("value").max().alias("max"),
            )
            merged = pl.concat([open_windows[width], batch]).group_by(keys).agg(merge)
            merged = merged.join(watermarks, on="device", how="left")
            due = pl.col("start") + width <= pl.col("watermark")
            closed[width] = merged.filter(due).drop("watermark")
            open_windows[width] = merged.filter(~due).drop("watermark")
        emitted.append(closed)
    return emitted


def _pandas_groupby(batches: list[tuple[Any, ...]]) -> list[Any]:
    import pandas as pd

    out = []
    for device, series, ts, values, _ in batches:
        frame = pd.DataFrame({"device": device, "series": series, "ts": ts, "value": values})
        for width in RESOLUTIONS_MS:
            start = frame["ts"] // width * width
            out.append(frame.groupby([frame["series"], start], sort=False)["value"].agg(["count", "sum", "min", "max"]))
    return out


def _pandas_state(batches: list[tuple[Any, ...]]) -> list[Any]:
    import pandas as pd

    keys = ["device", "series", "start"]
    merge = {"count": "sum", "sum": "sum", "min": "min", "max": "max"}
    columns = [*keys, "count", "sum", "min", "max"]
    open_windows = {width: pd.DataFrame(columns=columns).astype("int64") for width in RESOLUTIONS_MS}
    for width in RESOLUTIONS_MS:
        open_windows[width] = open_windows[width].astype({"sum": "float64", "min": "float64", "max": "float64"})
    watermarks = pd.Series(dtype="int64")
    emitted = []
    for device, series, ts, values, _ in batches:
        frame = pd.DataFrame({"device": device, "series": series, "ts": ts, "value": values})
        seen = frame.groupby("device")["ts"].max() - ALLOWED_LATENESS_MS
        watermarks = pd.concat([watermarks, seen]).groupby(level=0).max()
        closed = {}
        for width in RESOLUTIONS_MS:
            frame["start"] = frame["ts"] // width * width
            batch = frame.groupby(keys, sort=False)["value"].agg(["count", "sum", "min", "max"]).reset_index()
            merged = pd.concat([open_windows[width], batch]).groupby(keys, sort=False).agg(merge).reset_index()
            due = merged["start"] + width <= merged["device"].map(watermarks)
            closed[width] = merged[due]
            open_windows[width] = merged[~due]
        emitted.append(closed)
    return emitted


TARGETS: dict[str, Callable[[list[tuple[Any, ...]]], list[Any]]] = {
    "telehub WindowState": _telehub_state,
    "telehub aggregate": _telehub_aggregate,
    "polars group_by": _polars_group_by,
    "polars + state": _polars_state,
    "pandas groupby": _pandas_groupby,
    "pandas + state": _pandas_state,
}
RATIOS = (
    ("telehub WindowState", "polars group_by"),
    ("telehub WindowState", "polars + state"),
    ("telehub WindowState", "pandas groupby"),
    ("telehub WindowState", "pandas + state"),
    ("telehub aggregate", "polars group_by"),
)


def _closed_rows(emitted: list[Any], kind: str) -> dict[int, set[tuple[int, int, int]]]:
    """(series, start, count) of every emitted window per resolution, to compare the stateful targets."""
    rows: dict[int, set[tuple[int, int, int]]] = {width: set() for width in RESOLUTIONS_MS}
    for closed in emitted:
        for width, windows in closed.items():
            if kind == "telehub":
                triples = zip(windows.series.tolist(), windows.start.tolist(), windows.count.tolist(), strict=True)
            elif kind == "polars":
                triples = windows.select("series", "start", "count").iter_rows()
            else:
                triples = windows[["series", "start", "count"]].itertuples(index=False, name=None)
            rows[width].update((int(s), int(t), int(c)) for s, t, c in triples)
    return rows


def _measure(runs: int, seconds: float) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    import polars as pl

    batches, samples = _workload(seconds)
    timings: dict[str, list[float]] = {name: [] for name in TARGETS}
    cpu_share: dict[str, list[float]] = {name: [] for name in TARGETS}
    last: dict[str, list[Any]] = {}
    for target in TARGETS.values():
        target(batches[:20])  # warm up imports and caches
    for _ in range(runs):
        for name, target in TARGETS.items():
            wall, cpu = time.perf_counter(), time.process_time()
            last[name] = target(batches)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            timings[name].append(samples / wall)
            cpu_share[name].append(cpu / wall)
    reference = _closed_rows(last["telehub WindowState"], "telehub")
    same_as_polars = _closed_rows(last["polars + state"], "polars") == reference
    same_as_pandas = _closed_rows(last["pandas + state"], "pandas") == reference
    targets = [
        {"name": name, "runs": rates, "median": statistics.median(rates), "min": min(rates), "max": max(rates)}
        for name, rates in timings.items()
    ]
    medians = {t["name"]: t["median"] for t in targets}
    ratios = {f"{ours} / {theirs}": medians[ours] / medians[theirs] for ours, theirs in RATIOS}
    notes = [
        f"{samples:,} samples in {len(batches)} micro-batches of {BATCH_MS} ms "
        f"({samples // len(batches):,} samples each on average) from {DEVICES * METRICS:,} series "
        f"({DEVICES:,} devices x {METRICS} metrics) at {RATE_HZ} Hz, {seconds:g} s, into 1 s and 1 min windows; "
        f"{runs} runs per target, interleaved",
        f"single-threaded: child process with {', '.join(f'{k}={v}' for k, v in SINGLE_THREAD_ENV.items())}; "
        f"polars thread pool {pl.thread_pool_size()}; CPU/wall per target (median): "
        + ", ".join(f"{name} {statistics.median(shares):.2f}" for name, shares in cpu_share.items()),
        f"emitted windows of the stateful targets equal telehub's: polars {same_as_polars}, pandas {same_as_pandas}",
        f"numpy {np.__version__}, polars {pl.__version__}, pandas {pd.__version__}, Python {sys.version.split()[0]}",
    ]
    return {"workload": "aggregate-kernel", "figure": "samples/s", "targets": targets, "ratios": ratios, "notes": notes}


def _kernel_figures() -> list[str]:
    """Dense indexing against sort-and-reduce on three batch shapes (quoted in aggregation/windows.py)."""
    import numpy as np

    # The two private kernels of aggregation.windows, compared on identical keys.
    from aggregation.windows import _dense_reduce, _sorted_reduce

    rng = np.random.default_rng(3)
    lines = []
    for samples, series, span_ms in ((2_000, 10_000, 20), (200_000, 10_000, 2_000), (2_000, 1_000_000, 20)):
        s = rng.integers(0, series, samples)
        index = (T0_MS + rng.integers(0, span_ms, samples)) // 1000
        key = (index - index.min()) * series + s
        cells = int(index.max() - index.min() + 1) * series
        values = rng.normal(size=samples)
        repeat = max(3, 200_000 // samples)
        figures = []
        for dense in (True, False):
            for attempt in range(repeat + 1):
                if attempt == 1:
                    start = time.perf_counter()  # the first call only warms up
                if dense:
                    _dense_reduce(key, cells, None, values, values, values)
                else:
                    _sorted_reduce(key, None, values, values, values)
            figures.append((time.perf_counter() - start) / repeat * 1000)
        lines.append(
            f"{samples:,} samples over {series:,} series, {span_ms} ms at 1 s windows: "
            f"dense {figures[0]:.3f} ms, sort {figures[1]:.3f} ms"
        )
    return lines


def _table(result: dict[str, Any]) -> str:
    lines = ["| target | runs | samples/s median (min-max) |", "|---|---:|---:|"]
    for target in result["targets"]:
        lines.append(
            f"| {target['name']} | {len(target['runs'])} | {target['median']:,.0f} "
            f"({target['min']:,.0f}-{target['max']:,.0f}) |"
        )
    lines += ["", *(f"- {name}: x{ratio:.2f}" for name, ratio in result["ratios"].items())]
    lines += ["", *(f"- {note}" for note in result["notes"])]
    return "\n".join(lines)


def write_results(result: dict[str, Any], results_dir: Path, command: str) -> dict[str, Path]:
    """JSON, Markdown and a PNG bar chart under ``results_dir``, stamped, plus ``aggregate-kernel-latest.*``."""
    import platform

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result = {**result, "command": command, "started_at": started, "machine": _machine()}
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / f"aggregate-kernel-{started}"
    files = {"json": stem.with_suffix(".json"), "md": stem.with_suffix(".md"), "png": stem.with_suffix(".png")}
    files["json"].write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    header = [
        f"# aggregate-kernel: {started}",
        "",
        f"Command: `{command}`. Machine: {m['cpus']} CPUs, Linux {m['kernel']}, Python {platform.python_version()}, "
        f"numpy {m['numpy']}, polars {m['polars']}, pandas {m['pandas']}; every target single-threaded. "
        "Each cell: median (min-max) over the runs.",
        "",
    ]
    files["md"].write_text("\n".join(header) + _table(result) + "\n")
    figure, axis = plt.subplots(figsize=(8, 4))
    names = [t["name"] for t in result["targets"]]
    medians = [t["median"] for t in result["targets"]]
    errors = [[t["median"] - t["min"] for t in result["targets"]], [t["max"] - t["median"] for t in result["targets"]]]
    axis.barh(names, medians, xerr=errors, color="#3b7dd8")
    axis.set_xscale("log")
    axis.set_xlabel("samples/s (median, min-max; log scale)")
    axis.set_title("aggregate-kernel: 1 s and 1 min windows, 10,000 series at 10 Hz")
    figure.tight_layout()
    figure.savefig(files["png"], dpi=110)
    plt.close(figure)
    for kind, path in files.items():
        (results_dir / f"aggregate-kernel-latest.{kind}").write_bytes(path.read_bytes())
    return files


def _machine() -> dict[str, Any]:
    import importlib.metadata
    import platform

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "numpy": version("numpy"),
        "polars": version("polars"),
        "pandas": version("pandas"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks aggregate-kernel", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs per target (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of event time per run (default 10)")
    parser.add_argument("--kernels", action="store_true", help="also time the dense and sort kernels")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help=f"where to write (default {RESULTS_DIR})")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs <= 0 or args.seconds <= 0:
        parser.error("--runs and --seconds must be positive")
    if args.child:
        print(json.dumps(_measure(args.runs, args.seconds)))
        return 0
    if args.kernels:
        os.environ.update(SINGLE_THREAD_ENV)
        print("\n".join(_kernel_figures()), end="\n\n")
    result = run(args.runs, args.seconds)
    command = benchmark_command("aggregate-kernel", argv)
    files = write_results(result, args.results_dir, command)
    show_written(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
