"""``soak``: telehub for 30 minutes at half of its peak fan-out load; memory, CPU and latency every minute.

One ``telehub serve`` with its embedded redis-server (``fanout_peers``/``telehub_target``, as for ``fanout``),
and the ``fanout`` load generator (``fanout_run``): ``--devices`` devices publish ``telemetry`` frames (three
metrics and ``sent_us``, their send time) at ``--rate`` frames/s each, without a pause, to ``--dashboards``
dashboards, half on ``devices/+/telemetry`` and half on the first device's channel. Every ``--interval``
seconds one sample is taken over the interval just past and printed as one line:

- memory at the end of the interval: the RSS (``VmRSS``, KiB) of the hub's processes and of the redis-server;
  Redis's own ``used_memory``, the part of it in streams (``MEMORY USAGE`` of every stream key: the stored
  frames and aggregates), the rest, and the entries in the streams;
- CPU over the interval: the hub's and redis-server's cores (CPU seconds per second), the load generator's,
  softirq and anything else;
- throughput: frames published and acked per second (every frame is stored before its ack), deliveries/s,
  and the share of the deliveries due that arrived;
- device-to-dashboard latency p50/p99/p999 over the interval (one delivery in ``--sample-every`` decoded);
- errors: frames the publisher had to skip (its window of unacked frames was full), dashboards the server
  closed (each reopened after the sample, counted as reopened), device connections lost; whether the window
  held the load as a ``fanout`` step must (``fanout.verdict``).

**The default load is half of peak for this shape.** ``results/fanout-latest.json`` (2026-11-22, 3 runs)
measured telehub with exactly this shape, 10 devices and 1,000 dashboards (500 on every device, 500 on the
first): the saturating rate was 64 frames/s per device at the median (54 to 91 over the runs, about 350,000
deliveries/s), and its half-rate step, 32 frames/s per device (about 177,000 deliveries/s; 320 frames/s
stored), was sustained in every run with the hub at about 1 core. So the defaults are 10 devices, 1,000
dashboards and 32 frames/s per device. Take a lower ``--rate`` (or fewer ``--dashboards``) on a slower machine.

At the end: JSON (every sample), Markdown (a row per sample and the verdict) and a PNG (memory, CPU, latency
and throughput over time), as ``soak-<time>.*`` and ``soak-latest.*`` (``soak_report``). The verdict, "no
upward trend", fits a least-squares line over the second half of the samples (the first half is warm-up) and
gives its slope per 10 minutes; see ``soak_report`` for the thresholds. The exit code is 1 when the hub's RSS
trends upward, or when the soak could not run to its end (an error, a device connection lost); 0 otherwise.

    python -m benchmarks soak [--minutes 30] [--interval 60] [--rate 32] [--devices 10] [--dashboards 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis

from benchmarks import fanout_peers, procstat
from benchmarks.connections_servers import rss_kib
from benchmarks.fanout import FanoutOptions, verdict
from benchmarks.fanout_run import RATE_DELAY_S, LoadGenerator, LoadShape, _figures, add_load_options, load_generator
from benchmarks.harness import DEFAULT_RESULTS_DIR
from benchmarks.loadrun import _cpu_by_pid
from benchmarks.report import benchmark_command, show_written
from benchmarks.soak_report import judge, write_results
from hub.embedded_redis import CONNECTION_FILE

__all__ = ["RedisProbe", "SoakOptions", "main", "run"]

Progress = Callable[[str], None]
DEFAULT_MINUTES = 30.0
DEFAULT_INTERVAL_S = 60.0
DEFAULT_DEVICES = 10
DEFAULT_DASHBOARDS = 1000
# Half of telehub's median saturating rate per device (64 frames/s) with 10 devices and 1,000 dashboards in
# results/fanout-latest.json: see the module's docstring.
DEFAULT_RATE_HZ = 32.0
# An interval's answers are awaited this long after it ends.
ANSWER_MARGIN_S = 60.0


@dataclass(frozen=True, kw_only=True)
class SoakOptions:
    minutes: float = DEFAULT_MINUTES
    interval_s: float = DEFAULT_INTERVAL_S
    rate_hz: float = DEFAULT_RATE_HZ
    shape: LoadShape
    latency_limit_ms: float = 500.0
    telehub_workers: int = 1
    results_dir: Path = DEFAULT_RESULTS_DIR

    @property
    def samples(self) -> int:
        return max(1, round(self.minutes * 60 / self.interval_s))


class RedisProbe:
    """The telehub data dir's redis-server (found through its ``redis.json``): memory as Redis counts it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pid: int | None = None
        self._client: redis.Redis | None = None

    def _connect(self) -> redis.Redis:
        if self._client is None:
            found = json.loads((self.data_dir / CONNECTION_FILE).read_text())
            self.pid = int(found["pid"])
            self._client = redis.Redis(
                host=found["host"], port=int(found["port"]), password=found["password"], socket_timeout=30
            )
        return self._client

    def read(self) -> dict[str, Any]:
        """``used_memory`` and its part in streams (KiB), the stream entries; ``redis_error`` if unreadable."""
        try:
            client = self._connect()
            memory = cast(dict[str, Any], client.info("memory"))
            persistence = cast(dict[str, Any], client.info("persistence"))
            keys = list(client.scan_iter(count=1000, _type="stream"))
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key, samples=0)  # every node of the stream, not an estimate
                pipe.xlen(key)
            answers = cast(list[int | None], pipe.execute())
        except (redis.RedisError, OSError, ValueError, KeyError) as exc:
            return {"redis_error": f"{type(exc).__name__}: {exc}"}
        streams_kib = sum(answer or 0 for answer in answers[0::2]) / 1024
        used_kib = int(memory["used_memory"]) / 1024
        return {
            "redis_used_memory_kib": used_kib,
            "redis_streams_kib": streams_kib,
            # Everything but the streams: keys, clients' buffers, the AOF buffer, Lua; should stay flat.
            "redis_other_kib": used_kib - streams_kib,
            "redis_says_rss_kib": int(memory["used_memory_rss"]) / 1024,
            "stream_keys": len(keys),
            "stream_entries": sum(answer or 0 for answer in answers[1::2]),
            "aof_kib": int(persistence.get("aof_current_size", 0)) / 1024,
        }

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _memory(servers: Mapping[int, str], probe: RedisProbe) -> dict[str, Any]:
    """RSS by role (the hub's processes, the redis-server) and Redis's own counts, now. A redis-server forked
    for an AOF rewrite shares its parent's pages: it is counted apart (``redis_forks``), not in the RSS."""
    counts = probe.read()
    rss = {"hub_rss_kib": 0.0, "redis_rss_kib": 0.0}
    forks = 0
    for pid, role in servers.items():
        if role == "redis" and probe.pid is not None and pid != probe.pid:
            forks += 1
            continue
        value = rss_kib(pid)
        if value is not None:
            rss["redis_rss_kib" if role == "redis" else "hub_rss_kib"] += value
    hub_processes = sum(1 for role in servers.values() if role != "redis")
    return {**rss, "hub_processes": hub_processes, "redis_forks": forks, **counts}


def _sample(load: LoadGenerator, probe: RedisProbe, options: SoakOptions, began: float) -> dict[str, Any]:
    """One interval: every load generator process counts over it, the controller reads the server's CPU at
    both ends and the memory at its end (as ``LoadGenerator.step`` does, without touching the rate)."""
    start = time.monotonic() + RATE_DELAY_S
    end = start + options.interval_s
    for process in load.processes:
        process.send({"op": "measure", "start": start, "end": end})
    servers = dict(load.target.running.server_processes())
    time.sleep(max(0.0, start - time.monotonic()))
    server_before, machine_before = _cpu_by_pid(servers), procstat.machine_times()
    time.sleep(max(0.0, end - time.monotonic()))
    server_after, machine_after = _cpu_by_pid(servers), procstat.machine_times()
    memory = _memory(dict(load.target.running.server_processes()), probe)
    deadline = end + ANSWER_MARGIN_S
    published = load.publisher.expect("measured", deadline)
    received = [process.expect("measured", deadline) for process in load.dashboards]
    server_cpu: dict[str, float] = {}
    for pid, before in server_before.items():
        if pid in server_after:
            server_cpu[servers[pid]] = server_cpu.get(servers[pid], 0.0) + server_after[pid] - before
    figures = _figures(
        options.rate_hz,
        published,
        received,
        server_cpu,
        busy_share=machine_after.busy_share_since(machine_before),
        softirq_cores=machine_after.softirq_cores_since(machine_before, end - start),
    )
    why_not = verdict(figures, FanoutOptions(shape=load.shape, latency_limit_ms=options.latency_limit_ms))
    return {
        "t_min": (end - began) / 60,
        **figures,
        "acked_per_s": figures["acked"] / figures["elapsed_s"],
        "hub_cores": figures.get("server_cores_telehub", 0.0),
        "redis_cores": figures.get("server_cores_redis", 0.0),
        "held": why_not is None,
        "why_not": why_not,
        **memory,
    }


def _reopen(load: LoadGenerator) -> int:
    """Reopen the dashboards the server closed (a drain that waits for no quiet); how many."""
    deadline = time.monotonic() + ANSWER_MARGIN_S
    for process in load.dashboards:
        process.send({"op": "drain", "quiet_s": 0.0, "timeout_s": 0.0})
    return sum(int(process.expect("drained", deadline)["reopened"]) for process in load.dashboards)


def _line(sample: dict[str, Any], number: int, count: int) -> str:
    latency = f"p50 {sample['p50_ms']:.1f} ms, p99 {sample['p99_ms']:.1f} ms" if "p99_ms" in sample else "no latency"
    redis_used = f" (used {sample['redis_used_memory_kib']:,.0f})" if "redis_used_memory_kib" in sample else ""
    troubles = [
        f"{sample[key]:,} {label}"
        for key, label in (
            ("skipped", "frames skipped"),
            ("dashboards_lost", "dashboards closed"),
            ("reopened", "reopened"),
            ("devices_lost", "devices lost"),
        )
        if sample.get(key)
    ]
    return (
        f"soak {number}/{count} at {sample['t_min']:.1f} min: hub {sample['hub_rss_kib']:,.0f} KiB, "
        f"redis {sample['redis_rss_kib']:,.0f} KiB{redis_used}; hub {sample['hub_cores']:.2f} + redis "
        f"{sample['redis_cores']:.2f} cores, load generator {sample['loadgen_cores']:.2f}; "
        f"{sample['deliveries_per_s']:,.0f} deliveries/s, {sample['acked_per_s']:,.0f} acked frames/s; {latency}"
        + ("; " + ", ".join(troubles) if troubles else "")
        + ("" if sample["held"] else f"; load not held: {sample['why_not']}")
    )


def _soak(load: LoadGenerator, probe: RedisProbe, options: SoakOptions, say: Progress, into: dict[str, Any]) -> None:
    """Publish at the rate without a pause and take the samples (appended to ``into`` as they come)."""
    servers = dict(load.target.running.server_processes())
    into["idle"] = _memory(servers, probe)
    began = load.set_rate(options.rate_hz)
    count = options.samples
    for number in range(1, count + 1):
        sample = _sample(load, probe, options, began)
        sample["reopened"] = _reopen(load)
        into["samples"].append(sample)
        say(_line(sample, number, count))
        if sample["devices_lost"]:
            raise RuntimeError(f"{sample['devices_lost']} device connection(s) lost: the load is no longer whole")
    into["totals"] = load.stop()


def run(options: SoakOptions, say: Progress) -> dict[str, Any]:
    """Start telehub and the load, take the samples; the results (with ``error`` if the soak broke off)."""
    shape = options.shape
    result: dict[str, Any] = {
        "workload": "soak",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "parameters": {
            "minutes": options.minutes,
            "interval_s": options.interval_s,
            "samples_planned": options.samples,
            "rate_hz": options.rate_hz,
            **shape.parameters(),
            "latency_limit_ms": options.latency_limit_ms,
            "telehub_workers": options.telehub_workers,
        },
        "samples": [],
    }
    output: Callable[[], str] | None = None
    with tempfile.TemporaryDirectory(prefix="telehub-soak-") as tmp:
        workdir = Path(tmp)
        probe = RedisProbe(workdir / "telehub-data")
        try:
            say(f"soak: starting telehub with {shape.devices} devices")
            with fanout_peers.started(
                "telehub", devices=shape.devices, workdir=workdir, telehub_workers=options.telehub_workers
            ) as target:
                result["started_as"] = target.running.started_as
                output = target.running.output
                say(
                    f"soak: connecting {shape.dashboards:,} dashboards; then {options.samples} samples of "
                    f"{options.interval_s:g} s at {options.rate_hz:g} frames/s per device"
                )
                with load_generator(target, shape, workdir) as load:
                    _soak(load, probe, options, say, result)
        except (Exception, KeyboardInterrupt) as exc:  # Ctrl-C too: what was sampled is still written
            result["error"] = f"{type(exc).__name__}: {exc}"
            result["traceback"] = traceback.format_exc(limit=8)
            if output is not None:
                result["server_output"] = output()
            say(f"soak: failed: {result['error'].splitlines()[0]}")
        finally:
            probe.close()
    result["verdict"] = judge(result["samples"], failed=result.get("error"))
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks soak",
        description=__doc__.split("\n\n")[0],
        epilog="Default load: half of telehub's saturating rate for this shape in results/fanout-latest.json "
        "(64 frames/s per device with 10 devices and 1,000 dashboards). Exit code 1: the hub's RSS trends "
        "upward, or the soak broke off.",
    )
    add = parser.add_argument
    add("--minutes", type=float, default=DEFAULT_MINUTES, help=f"how long (default {DEFAULT_MINUTES:g})")
    add("--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds per sample (default 60)")
    add("--rate", type=float, default=DEFAULT_RATE_HZ, help=f"frames/s per device (default {DEFAULT_RATE_HZ:g})")
    add("--devices", type=int, default=DEFAULT_DEVICES, help=f"publishing devices (default {DEFAULT_DEVICES})")
    add("--dashboards", type=int, default=DEFAULT_DASHBOARDS, help="dashboards, half on every device (default 1000)")
    add_load_options(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    positive = ("minutes", "interval", "rate", "devices", "processes", "sample_every", "window", "latency_limit_ms")
    if any(not getattr(args, name) > 0 or math.isinf(getattr(args, name)) for name in positive):
        parser.error(", ".join("--" + name.replace("_", "-") for name in positive) + " must be positive")
    if args.dashboards < 2:
        parser.error("--dashboards must be at least 2 (one on every device, one on the first)")
    shape = LoadShape(
        devices=args.devices,
        dashboards=args.dashboards,
        processes=args.processes,
        seconds=args.interval,
        settle_s=0.0,
        sample_every=args.sample_every,
        window=args.window,
        encoding=args.encoding,
        connect_concurrency=args.connect_concurrency,
    )
    options = SoakOptions(
        minutes=args.minutes,
        interval_s=args.interval,
        rate_hz=args.rate,
        shape=shape,
        latency_limit_ms=args.latency_limit_ms,
        telehub_workers=args.telehub_workers,
        results_dir=args.results_dir,
    )
    result = run(options, lambda line: print(line, flush=True))
    command = benchmark_command("soak", argv)
    files = write_results(result, args.results_dir, command)
    show_written(files)
    return 0 if result["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
