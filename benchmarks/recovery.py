"""``recovery``: a dashboard away while 100,000 messages pass, then back with ``since`` (BENCHMARKS.md).

Workload, per case and run, against one ``telehub serve`` (started with ``TELEHUB_DASHBOARD_MAX_REPLAY`` raised
to ``--max-replay``, 200,000: at the default 10,000 a replay this long answers ``recovered: false``). First, the
history: the first device sends ``--history`` frames (default: ``--max-replay``), so that its stream and the
organization's already hold more entries than a replay may take, as a day of telemetry would: every run then
meets the same path of the server (with a shorter stream, it does not count the entries to replay at all).

1. A dashboard (``/api/v1/ws``, viewer API key, JSON frames or MessagePack) subscribes to the case's channel
   and receives ``--warmup`` frames per publishing device; it keeps the last message's ``offset`` and
   ``epoch``, then closes its socket.
2. While it is away, ``--messages`` (100,000) telemetry frames pass on its channel: the devices
   (``/api/v1/ws/device``, MessagePack, metric ``n`` = the frame's ``seq``) send as fast as acks allow, at most
   ``--window`` unacked each, until every frame is acked (stored). Case ``wildcard``: ``devices/+/telemetry``,
   ``--devices`` (4) devices share the messages. Case ``exact``: ``devices/<first>/telemetry``, the first device
   sends them all (the others are idle) with the window of all of them, so as many frames are in flight.
3. A new connection subscribes with ``since: {offset, epoch}``. As soon as the reply is read, the first device
   publishes one more frame, the marker: the dashboard is *live again* when the marker's message arrives,
   after the replay. Timed from sending the subscribe (perf_counter): the reply, the first and last replayed
   message, the marker. Server CPU (every process by role, ``/proc``) and the client's over the same span.
4. Checked before anything is reported (``ReplayMismatch`` otherwise, exit code 1): the reply says
   ``recovered: true``; the replayed messages are exactly the missed ones, per device ``n`` from the first
   missed to the last without a gap or a duplicate, offsets rising, the epoch unchanged; the marker is next;
   nothing more arrives within ``QUIET_S``.
5. Baseline: a new connection subscribes without ``since`` and the marker is published on its reply: the time
   to live for a dashboard that does not ask for what it missed (it gets no replay; the check is that only
   the marker arrives).

Every figure is the median with min-max over ``--runs`` (3). No peer is run: none of the references of
BENCHMARKS.md keeps history for a subscriber that comes back (Mosquitto and NATS core drop QoS 0 messages of
an absent subscriber; python-socketio's rooms have no history), so the baseline is telehub's own plain
re-subscribe.

    python -m benchmarks recovery [--runs 3] [--messages 100000] [--devices 4] [--case wildcard,exact]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from benchmarks import procstat, telehub_target
from benchmarks.fanout_peers import device_ids
from benchmarks.harness import DEFAULT_RESULTS_DIR, summarize
from benchmarks.loadgen import LoadSession, raise_open_files_limit
from benchmarks.loadrun import _cpu_by_pid
from benchmarks.recovery_clients import CountedDevice, Received, RecordingDashboard, frame_book, open_connection
from benchmarks.recovery_report import write_results
from benchmarks.report import benchmark_command, show_written
from benchmarks.servers import RunningTarget
from hub.fanout.broker import offset_key

__all__ = ["CASES", "ReplayMismatch", "check_replay", "main", "run"]

Progress = Callable[[str], None]
CASES = ("wildcard", "exact")
# After the marker, how long the dashboard listens for anything more (a duplicate would show there).
QUIET_S = 0.3
# The longest wait for a warm-up, a publishing phase, or a recovery to end.
PHASE_TIMEOUT_S = 300.0
# Figures summarized over the runs, per case.
SUMMARIZED = (
    "live_ms",
    "replay_msgs_per_s",
    "reply_ms",
    "first_replayed_ms",
    "replay_end_ms",
    "marker_after_replay_ms",
    "connect_ms",
    "server_cpu_us_per_message",
    "client_cpu_us_per_message",
    "server_cores",
    "other_cores",
    "plain_live_ms",
    "plain_reply_ms",
    "publish_frames_per_s",
    "replayed",
    "missed",
)


class ReplayMismatch(Exception):
    """What came back after ``since`` is not exactly what was missed: nothing is reported."""


@dataclass(frozen=True, kw_only=True)
class RecoveryOptions:
    runs: int = 3
    messages: int = 100_000
    devices: int = 4
    window: int = 64
    warmup: int = 10
    encoding: str = "json"
    max_replay: int = 200_000
    # Frames the first device sends before the first run (None: max_replay).
    history: int | None = None
    cases: tuple[str, ...] = CASES


@dataclass
class _Fleet:
    """The connected devices, the dashboards' key and where the server is."""

    host: str
    port: int
    key: str
    binary: bool
    devices: list[CountedDevice]
    server_processes: Callable[[], Mapping[int, str]]

    async def dashboard(self) -> tuple[float, RecordingDashboard]:
        return await open_connection(
            self.host,
            self.port,
            lambda: RecordingDashboard(host=self.host, port=self.port, key=self.key, binary=self.binary),
        )


async def _publish(devices: Sequence[CountedDevice], counts: Sequence[int], window: int) -> float:
    """Each device sends its count of frames as fast as acks allow, at most ``window`` unacked; the seconds until
    all are acked."""
    for device, count in zip(devices, counts, strict=True):
        device.prepare(count)
    began = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(device.publish(count, window) for device, count in zip(devices, counts, strict=True))),
        PHASE_TIMEOUT_S,
    )
    return time.perf_counter() - began


async def _received(dashboard: RecordingDashboard, count: int) -> None:
    """Until ``dashboard`` has ``count`` messages."""
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while len(dashboard.received) < count:
        if dashboard.closed.done() or time.monotonic() > deadline:
            raise TimeoutError(f"the dashboard received {len(dashboard.received)} of {count} messages")
        await asyncio.sleep(0.01)


def check_replay(
    received: list[Received],
    *,
    missed: dict[str, tuple[int, int]],
    since: tuple[str, str],
    result: dict[str, Any],
    channel: str,
    marker: tuple[str, int],
) -> list[Received]:
    """The replayed messages, once they are checked to be exactly ``missed`` (device -> first and last ``n``),
    then the marker and nothing after it; raises ``ReplayMismatch`` with every difference found."""
    problems: list[str] = []
    if result.get("recovered") is not True:
        problems.append(f"the reply says recovered={result.get('recovered')!r}: {result}")
    at = next((i for i, r in enumerate(received) if (r.device, r.n) == marker), None)
    if at is None:
        raise ReplayMismatch(f"the marker {marker} never arrived; {len(received)} messages did")
    replay, after = received[:at], received[at + 1 :]
    expected = {device: first for device, (first, _) in missed.items()}
    last_offset = offset_key(since[0])
    for message in replay:
        where = f"message {message.device} n={message.n} offset {message.offset}"
        if message.epoch != since[1]:
            problems.append(f"{where}: epoch {message.epoch}, not {since[1]}")
        if offset_key(message.offset) <= last_offset:
            problems.append(f"{where}: its offset does not come after the one before")
        last_offset = offset_key(message.offset)
        if message.channel != f"devices/{message.device}/telemetry":
            problems.append(f"{where}: on channel {message.channel}")
        if message.device not in expected:
            problems.append(f"{where}: a device that published nothing while the dashboard was away")
        elif message.n != expected[message.device]:
            kind = "a duplicate" if message.n < expected[message.device] else "a gap"
            problems.append(f"{where}: {kind}, n {expected[message.device]} was due")
            expected[message.device] = max(expected[message.device], message.n + 1)
        else:
            expected[message.device] += 1
    for device, (_, last) in missed.items():
        if expected[device] != last + 1:
            problems.append(f"{device}: replayed up to n={expected[device] - 1}, the last missed is n={last}")
    total = sum(last - first + 1 for first, last in missed.values())
    if len(replay) != total:
        problems.append(f"{len(replay)} messages replayed, {total} missed")
    if after:
        problems.append(f"{len(after)} messages after the marker, e.g. {after[0]}")
    if problems:
        shown = "\n  ".join(problems[:20])
        raise ReplayMismatch(f"{len(problems)} problem(s) in the recovery of {channel}:\n  {shown}")
    return replay


async def _live_again(
    fleet: _Fleet, channel: str, marker_device: CountedDevice, since: tuple[str, str] | None
) -> dict[str, Any]:
    """A new dashboard subscribes (with ``since`` or not) and the marker is published on its reply: the times,
    the messages and the CPU spent."""
    connect_s, dashboard = await fleet.dashboard()
    try:
        marker_device.prepare(1)
        marker = (marker_device.device_id, marker_device.sent_seq + 1)
        published: list[asyncio.Future[None]] = []
        dashboard.on_reply = lambda _: published.append(marker_device.publish(1))
        seen = dashboard.watch(*marker)
        op: dict[str, Any] = {"op": "subscribe", "channel": channel}
        if since is not None:
            op["since"] = {"offset": since[0], "epoch": since[1]}
        pids = dict(fleet.server_processes())
        server_before, machine_before = _cpu_by_pid(pids), procstat.machine_times()
        client_before = time.process_time()
        sent, reply = dashboard.send(op)
        reply_at, result = await asyncio.wait_for(reply, PHASE_TIMEOUT_S)
        marker_at = await asyncio.wait_for(seen, PHASE_TIMEOUT_S)
        elapsed = time.perf_counter() - sent
        client_cpu = time.process_time() - client_before
        server_after, machine_after = _cpu_by_pid(pids), procstat.machine_times()
        await asyncio.wait_for(asyncio.gather(*published), PHASE_TIMEOUT_S)
        await asyncio.sleep(QUIET_S)
    finally:
        await dashboard.close()
    server_cpu: dict[str, float] = {}
    for pid, before in server_before.items():
        if pid in server_after:
            server_cpu[pids[pid]] = server_cpu.get(pids[pid], 0.0) + server_after[pid] - before
    busy_cores = (machine_after.busy_s - machine_before.busy_s) / elapsed
    return {
        "connect_s": connect_s,
        "sent": sent,
        "reply_at": reply_at,
        "marker_at": marker_at,
        "marker": marker,
        "result": result,
        "received": dashboard.received,
        "server_cpu_s_by_role": server_cpu,
        "client_cpu_s": client_cpu,
        "elapsed_s": elapsed,
        "busy_cores": busy_cores,
    }


async def _case(fleet: _Fleet, case: str, options: RecoveryOptions, say: Progress) -> dict[str, Any]:
    """One run of one case: warm-up, away, back with ``since``, then the plain baseline."""
    first = fleet.devices[0]
    channel = "devices/+/telemetry" if case == "wildcard" else f"devices/{first.device_id}/telemetry"
    publishers = fleet.devices if case == "wildcard" else [first]
    # As many frames in flight in both cases: the one device of the exact case has the window of them all.
    window = options.window * len(fleet.devices) // len(publishers)
    # Warm-up: the dashboard is live and gets a few frames of every publisher, the last of which it keeps.
    _, dashboard = await fleet.dashboard()
    try:
        _, reply = dashboard.send({"op": "subscribe", "channel": channel})
        await asyncio.wait_for(reply, PHASE_TIMEOUT_S)
        await _publish(publishers, [options.warmup] * len(publishers), window)
        await _received(dashboard, options.warmup * len(publishers))
    finally:
        await dashboard.close()
    kept = dashboard.received[-1]
    since = (kept.offset, kept.epoch)
    # Away: the messages pass.
    shares = [
        options.messages // len(publishers) + (i < options.messages % len(publishers)) for i in range(len(publishers))
    ]
    missed = {d.device_id: (d.sent_seq + 1, d.sent_seq + share) for d, share in zip(publishers, shares, strict=True)}
    publish_s = await _publish(publishers, shares, window)
    say(f"  {case}: {options.messages:,} messages published while away in {publish_s:.1f} s; resubscribing")
    back = await _live_again(fleet, channel, first, since)
    replay = check_replay(
        back["received"], missed=missed, since=since, result=back["result"], channel=channel, marker=back["marker"]
    )
    plain = await _live_again(fleet, channel, first, None)
    if [(r.device, r.n) for r in plain["received"]] != [plain["marker"]]:
        raise ReplayMismatch(
            f"a plain subscribe to {channel} got {len(plain['received'])} messages, not the marker only"
        )
    sent = back["sent"]
    # 0 when the whole replay came in the same read as the reply (too short to time).
    replaying_s = replay[-1].at - back["reply_at"]
    server_cpu = sum(back["server_cpu_s_by_role"].values())
    return {
        "channel": channel,
        "missed": sum(high - low + 1 for low, high in missed.values()),
        "replayed": len(replay),
        "publish_s": publish_s,
        "publish_frames_per_s": options.messages / publish_s,
        "connect_ms": 1000 * back["connect_s"],
        "reply_ms": 1000 * (back["reply_at"] - sent),
        "first_replayed_ms": 1000 * (replay[0].at - sent),
        "replay_end_ms": 1000 * (replay[-1].at - sent),
        "live_ms": 1000 * (back["marker_at"] - sent),
        "marker_after_replay_ms": 1000 * (back["marker_at"] - replay[-1].at),
        "replay_msgs_per_s": len(replay) / replaying_s if replaying_s > 0 else None,
        "server_cpu_s_by_role": back["server_cpu_s_by_role"],
        "server_cpu_us_per_message": 1e6 * server_cpu / len(replay),
        "server_cores": server_cpu / back["elapsed_s"],
        "client_cpu_us_per_message": 1e6 * back["client_cpu_s"] / len(replay),
        "client_cores": back["client_cpu_s"] / back["elapsed_s"],
        # Busy cores (/proc/stat) that neither the server nor this client account for: other work on the machine.
        "other_cores": max(
            0.0, back["busy_cores"] - server_cpu / back["elapsed_s"] - back["client_cpu_s"] / back["elapsed_s"]
        ),
        "plain_live_ms": 1000 * (plain["marker_at"] - plain["sent"]),
        "plain_reply_ms": 1000 * (plain["reply_at"] - plain["sent"]),
        "plain_connect_ms": 1000 * plain["connect_s"],
    }


async def _measure_all(
    running: RunningTarget, options: RecoveryOptions, say: Progress
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Connect the devices, send the history, then every run of every case; the history and case -> runs."""
    endpoint = running.endpoint
    session = LoadSession(window=options.window)
    session.running = True
    session.book = frame_book()
    ids = device_ids(options.devices)
    devices: list[CountedDevice] = []
    for device_id, key in zip(ids, endpoint.credentials, strict=True):
        make = functools.partial(
            CountedDevice,
            session,
            device_id=device_id,
            host=endpoint.host,
            port=endpoint.port,
            path=endpoint.path,
            credential=key,
        )
        _, device = await open_connection(endpoint.host, endpoint.port, make)
        devices.append(device)
    fleet = _Fleet(
        endpoint.host,
        endpoint.port,
        str(endpoint.options["dashboard_key"]),
        options.encoding == "msgpack",
        devices,
        running.server_processes,
    )
    measured: dict[str, list[dict[str, Any]]] = {case: [] for case in options.cases}
    history: dict[str, Any] = {"frames": options.max_replay if options.history is None else options.history}
    try:
        if history["frames"]:
            say(f"recovery: the first device sends {history['frames']:,} frames of history")
            window = options.window * len(devices)
            history["seconds"] = await _publish(devices[:1], [history["frames"]], window)
        for number in range(1, options.runs + 1):
            for case in options.cases:
                say(f"recovery: run {number}/{options.runs}, case {case}")
                figures = await _case(fleet, case, options, say)
                measured[case].append(figures)
                say(
                    f"  {case}: {figures['replayed']:,} replayed = missed; live again in {figures['live_ms']:,.0f} ms "
                    f"({figures['replay_msgs_per_s']:,.0f} messages/s); "
                    f"plain re-subscribe {figures['plain_live_ms']:.1f} ms"
                )
    finally:
        await asyncio.gather(*(device.close() for device in devices))
    return history, measured


def run(options: RecoveryOptions, *, say: Progress = print) -> dict[str, Any]:
    """Start telehub, measure every case ``options.runs`` times; the results writer's dict. Raises
    ``ReplayMismatch`` when a replay is not exactly what was missed."""
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    env = {"TELEHUB_DASHBOARD_MAX_REPLAY": str(options.max_replay)}
    with tempfile.TemporaryDirectory(prefix="telehub-recovery-") as tmp:
        say(
            f"recovery: starting telehub with {options.devices} devices "
            f"(TELEHUB_DASHBOARD_MAX_REPLAY={options.max_replay})"
        )
        with telehub_target.started(
            devices=options.devices, workdir=Path(tmp), dashboard_role="viewer", env=env
        ) as running:
            history, measured = uvloop.run(_measure_all(running, options, say))
            started_as = f"TELEHUB_DASHBOARD_MAX_REPLAY={options.max_replay} {running.started_as}"
    cases = {
        case: {"channel": runs[0]["channel"], "runs": runs, "summary": summarize(runs, SUMMARIZED)}
        for case, runs in measured.items()
    }
    parameters = {
        "runs": options.runs,
        "messages": options.messages,
        "devices": options.devices,
        "window": options.window,
        "warmup": options.warmup,
        "encoding": options.encoding,
        "max_replay": options.max_replay,
        "history": history,
        "quiet_s": QUIET_S,
    }
    return {
        "workload": "recovery",
        "started_at": started_at,
        "parameters": parameters,
        "started_as": started_as,
        "cases": cases,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks recovery", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of every case (default 3)")
    parser.add_argument(
        "--messages", type=int, default=100_000, help="messages on the channel while the dashboard is away (100,000)"
    )
    parser.add_argument("--devices", type=int, default=4, help="devices publishing on the wildcard channel (default 4)")
    parser.add_argument("--window", type=int, default=64, help="unacked frames per device (default 64)")
    parser.add_argument("--warmup", type=int, default=10, help="frames per device before the dashboard leaves (10)")
    parser.add_argument("--encoding", choices=("json", "msgpack"), default="json", help="the dashboard's (json)")
    parser.add_argument(
        "--max-replay", type=int, default=200_000, help="TELEHUB_DASHBOARD_MAX_REPLAY of the server (default 200,000)"
    )
    parser.add_argument(
        "--history",
        type=int,
        help="frames the first device sends before the first run (default: --max-replay; 0 for none)",
    )
    parser.add_argument("--case", default=",".join(CASES), help=f"comma list of {', '.join(CASES)} (default both)")
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help=f"where to write (default {DEFAULT_RESULTS_DIR})"
    )
    args = parser.parse_args(argv)
    cases = tuple(dict.fromkeys(name.strip() for name in args.case.split(",") if name.strip()))
    if not cases or any(case not in CASES for case in cases):
        parser.error(f"--case takes a comma list of {', '.join(CASES)}")
    if min(args.runs, args.messages, args.devices, args.window, args.warmup) <= 0 or (args.history or 0) < 0:
        parser.error("--runs, --messages, --devices, --window and --warmup must be positive, --history not negative")
    if args.messages > args.max_replay:
        parser.error(
            f"--messages {args.messages} over --max-replay {args.max_replay}: the server answers recovered: false"
        )
    options = RecoveryOptions(
        runs=args.runs,
        messages=args.messages,
        devices=args.devices,
        window=args.window,
        warmup=args.warmup,
        encoding=args.encoding,
        max_replay=args.max_replay,
        history=args.history,
        cases=cases,
    )
    raise_open_files_limit()
    try:
        result = run(options)
    except ReplayMismatch as exc:
        print(f"recovery: the replay is not what was missed, nothing reported: {exc}", file=sys.stderr)
        return 1
    command = benchmark_command("recovery", argv)
    files = write_results(result, args.results_dir, command)
    show_written(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
