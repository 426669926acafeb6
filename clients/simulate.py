"""``telehub simulate``: a fleet of simulated devices streaming into a hub, with live progress (API.md §7).

Devices ``<prefix>-0001``… are made over REST with the token (or reused when they exist) and given new keys,
then each streams its sensor model's metrics through a ``DeviceClient`` and answers ``ping``, ``reboot``,
``set_rate`` and ``overheat`` (clients.fleet). The progress line shows frames acked per second, the total
acked, the lag (frames queued and not acked yet, and the ack latency), reconnects and errors. Ctrl-C or
SIGTERM stops sending and waits up to ``--flush-timeout`` for every frame sent to be acked (a second Ctrl-C
stops at once); the summary then accounts for every frame: acked, rejected by the hub, or not acked. The exit
status is 0 only when every frame was acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx

from clients.fleet import MAX_RATE_HZ, MIN_RATE_HZ, Fleet, FleetSnapshot, SimulatedDeviceSpec, provision_devices
from clients.preflight import ToolError, check_access, require_token, unreachable
from clients.progress import NoticeHandler, ProgressDisplay, plural, progress_line, summary_lines
from clients.rest import RestClient

__all__ = ["SimulateOptions", "run_simulate"]

# Notices printed about individual frames and sessions; past this they are only counted.
MAX_NOTICES = 20


@dataclass(frozen=True, kw_only=True)
class SimulateOptions:
    url: str
    token: str | None
    devices: int = 10
    rate_hz: float = 1.0
    prefix: str = "sim"
    device_type: str = "sensor"
    # None: until Ctrl-C or SIGTERM.
    duration_s: float | None = None
    # Where each device's seq state file is kept (None: in memory; the hub's hello then says where to go on).
    state_dir: Path | None = None
    seed: int | None = None
    # Between progress updates; None: 1 s on a terminal, 5 s otherwise.
    interval_s: float | None = None
    flush_timeout_s: float = 10.0


def run_simulate(options: SimulateOptions, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        return asyncio.run(_simulate(options, ProgressDisplay(out, err)))
    except ToolError as exc:
        err.write(f"telehub simulate: {exc.message}\n")
        return exc.exit_code


async def _simulate(options: SimulateOptions, display: ProgressDisplay) -> int:
    if not MIN_RATE_HZ <= options.rate_hz <= MAX_RATE_HZ:
        raise ToolError(f"--rate must be from {MIN_RATE_HZ:g} to {MAX_RATE_HZ:g} frames/s per device", exit_code=2)
    token = require_token(options.token, role="operator", doing="simulate (it creates its devices over REST)")
    specs = await _prepare_devices(options, token, display)
    notices = _limited(display.notice)
    with _sdk_logs_to(display):
        fleet = Fleet(
            options.url,
            specs,
            rate_hz=options.rate_hz,
            state_dir=options.state_dir,
            seed=options.seed,
            notice=notices,
        )
        with _stop_signals() as (stop, hurry):
            await fleet.start()
            display.show(
                f"streaming {options.rate_hz:g} frame/s from each of {plural(len(specs), 'device')}; "
                + ("Ctrl-C to stop" if options.duration_s is None else f"for {options.duration_s:g} s")
            )
            display.finish()
            before = await _report_until_stopped(fleet, options, display, stop)
            final = fleet.snapshot()
            display.show(progress_line(final, before) + "  stopping")
            display.finish()
            if final.pending:
                display.notice(
                    f"waiting up to {options.flush_timeout_s:g} s for {final.pending:,} frame(s) to be acked "
                    "(Ctrl-C again to give up)"
                )
            logging.getLogger("telehub.clients").setLevel(logging.ERROR)  # the summary counts what is given up
            await fleet.stop(flush_timeout=options.flush_timeout_s, interrupted=hurry)
    summary = fleet.snapshot()
    for line in summary_lines(summary, options.url):
        display.out.write(line + "\n")
    display.out.flush()
    if fleet.all_ended:
        display.notice("telehub simulate: every device's session ended; nothing more could be sent")
    clean = not (summary.not_acked or summary.rejected or summary.ended)
    return 0 if clean else 1


async def _prepare_devices(options: SimulateOptions, token: str, display: ProgressDisplay) -> list[SimulatedDeviceSpec]:
    created = 0

    def ready(done: int, made: bool) -> None:
        nonlocal created
        created += made
        if display.tty:
            display.show(f"preparing devices {done:,}/{options.devices:,}")

    async with RestClient(options.url, token=token) as rest:
        await check_access(rest, options.url, role="operator", doing="create and simulate devices")
        try:
            specs = await provision_devices(
                rest, prefix=options.prefix, count=options.devices, device_type=options.device_type, on_ready=ready
            )
        except httpx.TransportError as exc:
            raise unreachable(options.url, exc) from None
    display.show(
        f"{plural(len(specs), 'device')} {specs[0].device_id}..{specs[-1].device_id} ready on {options.url} "
        f"({created:,} created, {len(specs) - created:,} reused; new device keys)"
    )
    display.finish()
    return specs


async def _report_until_stopped(
    fleet: Fleet, options: SimulateOptions, display: ProgressDisplay, stop: asyncio.Event
) -> FleetSnapshot | None:
    """Show progress every interval until a signal, the duration's end, or the end of every session; the
    last snapshot shown."""
    loop = asyncio.get_running_loop()
    interval = options.interval_s or (1.0 if display.tty else 5.0)
    deadline = loop.time() + options.duration_s if options.duration_s is not None else None
    before: FleetSnapshot | None = None
    while not stop.is_set() and not fleet.all_ended:
        wait = interval if deadline is None else min(interval, deadline - loop.time())
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
        if stop.is_set() or (deadline is not None and loop.time() >= deadline):
            break
        now = fleet.snapshot()
        display.show(progress_line(now, before))
        before = now
    return before


@contextlib.contextmanager
def _stop_signals() -> Iterator[tuple[asyncio.Event, asyncio.Event]]:
    """Events set by the first Ctrl-C / SIGTERM (stop, flush, summarize) and the second (give up flushing)."""
    loop = asyncio.get_running_loop()
    stop, hurry = asyncio.Event(), asyncio.Event()

    def signalled() -> None:
        (hurry if stop.is_set() else stop).set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows' loop, nor off the main thread
            loop.add_signal_handler(sig, signalled)
            installed.append(sig)
    try:
        yield stop, hurry
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _sdk_logs_to(display: ProgressDisplay) -> Iterator[None]:
    """The SDK's warnings as notices under the progress line."""
    logger = logging.getLogger("telehub.clients")
    handler = NoticeHandler(display)
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _limited(notice: Callable[[str], None]) -> Callable[[str], None]:
    shown = 0

    def limited(text: str) -> None:
        nonlocal shown
        shown += 1
        if shown <= MAX_NOTICES:
            notice(text)
        if shown == MAX_NOTICES:
            notice(f"(after {MAX_NOTICES} notices, further errors are only counted in the progress line)")

    return limited
