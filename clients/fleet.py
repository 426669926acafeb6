"""A fleet of simulated devices, each a real ``DeviceClient``: what ``telehub simulate`` and ``telehub serve --demo``
run.

::

    specs = await provision_devices(rest, prefix="sim", count=10, device_type="sensor")
    fleet = Fleet("http://127.0.0.1:8080", specs, rate_hz=1.0, state_dir="sim-state")
    await fleet.start()
    ...
    print(fleet.snapshot().acked)
    await fleet.stop(flush_timeout=10)   # every frame sent is then acked or counted as not acked

Each device sends its ``SensorModel``'s metrics ``rate_hz`` times a second (the devices' ticks spread over
the first period, so a fleet does not send in bursts) and answers the commands ``ping``, ``reboot`` (sends a
``boot`` event), ``set_rate`` (``{"rate_hz": 5}``) and ``overheat`` (``{"duration_s": 30}``). A device that
falls behind (its buffer full while the hub is away) skips ticks instead of sending a burst later. Every
frame's outcome is counted in ``FleetStats``: acked (with its latency from queueing to ack), rejected by the
hub, or not acked when the fleet stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients.device import DeviceClient
from clients.errors import ApiError, ClientClosed, FrameRejected, SessionEnded
from clients.rest import RestClient
from clients.sensors import PROFILES, SensorModel

__all__ = ["Fleet", "FleetSnapshot", "FleetStats", "LatencyStats", "SimulatedDevice", "SimulatedDeviceSpec"]

# A device's rate may be set between these by its ``set_rate`` command (per second).
MIN_RATE_HZ = 0.01
MAX_RATE_HZ = 1000.0
# How far behind its schedule a device may fall before it skips ticks.
MAX_LAG_S = 1.0
MAX_OVERHEAT_S = 3600.0
Notice = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SimulatedDeviceSpec:
    device_id: str
    key: str
    type: str = "sensor"


class LatencyStats:
    """Latencies in ms, kept as counts per 5%-wide bucket: percentiles within 5%, in constant memory."""

    _BASE = math.log(1.05)

    def __init__(self) -> None:
        self.count = 0
        self.maximum = 0.0
        self._buckets: dict[int, int] = {}

    def add(self, ms: float) -> None:
        self.count += 1
        self.maximum = max(self.maximum, ms)
        bucket = int(math.log(max(ms, 0.1) / 0.1) / self._BASE)
        self._buckets[bucket] = self._buckets.get(bucket, 0) + 1

    def percentile(self, p: float) -> float | None:
        """The value under which ``p`` percent of the latencies fall (None: no latency yet)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return min(self.maximum, 0.1 * math.exp((bucket + 1) * self._BASE))
        return self.maximum


@dataclass(slots=True)
class FleetStats:
    """Counters of every frame's outcome; the latency of the frames acked since the last snapshot and overall."""

    sent: int = 0
    acked: int = 0
    rejected: int = 0
    not_acked: int = 0
    commands: int = 0
    ended: int = 0
    latency: LatencyStats = field(default_factory=LatencyStats)
    recent: LatencyStats = field(default_factory=LatencyStats)

    def track(self, future: asyncio.Future[int]) -> None:
        self.sent += 1
        future.add_done_callback(functools.partial(self._settled, time.monotonic()))

    def _settled(self, queued_at: float, future: asyncio.Future[int]) -> None:
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            if isinstance(error, FrameRejected):
                self.rejected += 1
            else:
                self.not_acked += 1
            return
        self.acked += 1
        ms = (time.monotonic() - queued_at) * 1000
        self.latency.add(ms)
        self.recent.add(ms)


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """The fleet at one moment (``elapsed_s`` since it started); ``recent`` covers the time since the previous
    snapshot."""

    elapsed_s: float
    devices: int
    online: int
    sent: int
    acked: int
    rejected: int
    not_acked: int
    # Frames queued and not acked yet: the lag between the fleet and the hub.
    pending: int
    reconnects: int
    ended: int
    commands: int
    recent: LatencyStats
    latency: LatencyStats

    @property
    def errors(self) -> int:
        return self.rejected + self.ended


class SimulatedDevice:
    """One simulated device: a ``DeviceClient``, its sensor model and its command handlers."""

    def __init__(
        self,
        spec: SimulatedDeviceSpec,
        url: str,
        *,
        rate_hz: float,
        stats: FleetStats,
        rng: random.Random,
        state_dir: Path | None = None,
        notice: Notice | None = None,
    ) -> None:
        self.spec = spec
        self.rate_hz = rate_hz
        self.stats = stats
        self.model = SensorModel(PROFILES.get(spec.type, PROFILES["sensor"]), rng)
        self.boots = 1
        self.booted_at = time.monotonic()
        self._notice = notice or (lambda text: None)
        self._rate_changed = asyncio.Event()
        state_path = state_dir / f"{spec.device_id}.json" if state_dir is not None else None
        self.client = DeviceClient(url, spec.key, state_path=state_path, on_error=self._rejected)
        handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "ping": self._ping,
            "reboot": self._reboot,
            "set_rate": self._set_rate,
            "overheat": self._overheat,
        }
        for name, handler in handlers.items():
            self.client.command(name)(self._counted(handler))

    async def run(self, *, phase_s: float) -> None:
        """Send until cancelled; returns early if the hub ends the session for good (key revoked...)."""
        self.client.start()
        loop = asyncio.get_running_loop()
        last = loop.time()
        next_at = last + phase_s
        try:
            while True:
                rescheduled = await self._sleep_until(next_at)
                now = loop.time()
                self.stats.track(await self.client.send(self.model.step(now - last)))
                last = now
                next_at = now if rescheduled else max(next_at, now - MAX_LAG_S)
                next_at += 1 / self.rate_hz
        except SessionEnded as ended:
            self.stats.ended += 1
            self._notice(f"{self.spec.device_id}: {ended}{_advice(ended)}")

    async def _sleep_until(self, deadline: float) -> bool:
        """Sleep until ``deadline``; True when a ``set_rate`` command cut it short (the schedule starts again)."""
        self._rate_changed.clear()
        delay = deadline - asyncio.get_running_loop().time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rate_changed.wait(), delay)
        return self._rate_changed.is_set()

    def _rejected(self, error: FrameRejected) -> None:
        self._notice(f"{self.spec.device_id}: {error}")

    # Command handlers: the value is the command's result, an exception fails it with its message.

    def _counted(self, handler: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Awaitable[Any]]:
        async def answer(params: dict[str, Any]) -> Any:
            self.stats.commands += 1
            value = handler(params)
            return await value if inspect.isawaitable(value) else value

        return answer

    def _ping(self, params: dict[str, Any]) -> dict[str, Any]:
        uptime = round(time.monotonic() - self.booted_at, 1)
        return {"pong": True, "device_id": self.spec.device_id, "uptime_s": uptime, "rate_hz": self.rate_hz}

    async def _reboot(self, params: dict[str, Any]) -> dict[str, Any]:
        self.boots += 1
        self.booted_at = time.monotonic()
        self.model.reset()
        self.stats.track(await self.client.send_event("boot", {"boots": self.boots}))
        return {"rebooted": True, "boots": self.boots}

    def _set_rate(self, params: dict[str, Any]) -> dict[str, Any]:
        rate = _number(params, "rate_hz", MIN_RATE_HZ, MAX_RATE_HZ)
        self.rate_hz = rate
        self._rate_changed.set()
        return {"rate_hz": rate}

    def _overheat(self, params: dict[str, Any]) -> dict[str, Any]:
        duration = _number(params, "duration_s", 1.0, MAX_OVERHEAT_S) if "duration_s" in params else None
        return {"overheating_for_s": self.model.start_episode(duration)}


def _number(params: dict[str, Any], name: str, low: float, high: float) -> float:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"params.{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _advice(ended: SessionEnded) -> str:
    if ended.code == 4003:
        return " (another connection took over this device: is a second simulation using the same --prefix?)"
    if ended.code in (4001, 401):
        return " (its key was rotated or the device deleted: run the simulation again to get new keys)"
    return ""


class Fleet:
    """Simulated devices streaming into one hub (see the module docstring)."""

    def __init__(
        self,
        url: str,
        specs: list[SimulatedDeviceSpec],
        *,
        rate_hz: float,
        state_dir: str | Path | None = None,
        seed: int | None = None,
        notice: Notice | None = None,
    ) -> None:
        if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"the rate must be {MIN_RATE_HZ:g} to {MAX_RATE_HZ:g} frames/s per device")
        self.url = url
        self.rate_hz = rate_hz
        self.stats = FleetStats()
        self._rng = random.Random(seed)
        directory = Path(state_dir) if state_dir is not None else None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self.devices = [
            SimulatedDevice(
                spec,
                url,
                rate_hz=rate_hz,
                stats=self.stats,
                rng=random.Random(self._rng.random()),
                state_dir=directory,
                notice=notice,
            )
            for spec in specs
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._started = time.monotonic()

    async def start(self) -> None:
        """Connect every device and start sending (returns at once; connections are made in the background)."""
        self._started = time.monotonic()
        period = 1 / self.rate_hz
        self._tasks = [
            asyncio.get_running_loop().create_task(device.run(phase_s=self._rng.uniform(0, period)))
            for device in self.devices
        ]

    @property
    def all_ended(self) -> bool:
        """Every device's session ended for good: nothing more will be sent."""
        return bool(self.devices) and all(
            device.client.ended is not None and not isinstance(device.client.ended, ClientClosed)
            for device in self.devices
        )

    def snapshot(self) -> FleetSnapshot:
        clients = [device.client for device in self.devices]
        stats = self.stats
        recent, stats.recent = stats.recent, LatencyStats()
        return FleetSnapshot(
            elapsed_s=time.monotonic() - self._started,
            devices=len(clients),
            online=sum(client.connected for client in clients),
            sent=stats.sent,
            acked=stats.acked,
            rejected=stats.rejected,
            not_acked=stats.not_acked,
            pending=sum(client.pending for client in clients),
            reconnects=sum(max(0, client.connections - 1) for client in clients),
            ended=stats.ended,
            commands=stats.commands,
            recent=recent,
            latency=stats.latency,
        )

    async def stop(self, *, flush_timeout: float, interrupted: asyncio.Event | None = None) -> None:
        """Stop sending, wait up to ``flush_timeout`` s (or until ``interrupted`` is set) for what was sent to be
        acked, and close every device. Frames still unacked then count as ``not_acked``."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if flush_timeout > 0:
            flushing = asyncio.gather(*(device.client.flush() for device in self.devices), return_exceptions=True)
            waiters: set[asyncio.Future[Any]] = {flushing}
            if interrupted is not None:
                waiters.add(asyncio.ensure_future(interrupted.wait()))
            await asyncio.wait(waiters, timeout=flush_timeout, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        await asyncio.gather(*(device.client.close(flush_timeout=0) for device in self.devices))
        await asyncio.sleep(0)  # the outcome callbacks of the frames given up run before anyone reads the stats


async def provision_devices(
    rest: RestClient,
    *,
    prefix: str,
    count: int,
    device_type: str,
    concurrency: int = 4,
    on_ready: Callable[[int, bool], None] | None = None,
) -> list[SimulatedDeviceSpec]:
    """Devices ``<prefix>-0001``… made (or reused when they exist) over REST, each with a new key: rotating
    closes any connection an earlier run left. ``on_ready(done, created)`` after each device. A device that
    already exists keeps its registry type, and is simulated as that type when it is one of ``PROFILES``."""
    width = max(4, len(str(count)))
    ids = [f"{prefix}-{n:0{width}d}" for n in range(1, count + 1)]
    specs: dict[str, SimulatedDeviceSpec] = {}
    gate = asyncio.Semaphore(concurrency)

    async def prepare(device_id: str) -> None:
        async with gate:
            kind, created = device_type, True
            try:
                await _retrying(
                    lambda: rest.create_device(
                        id=device_id, name=f"Simulated {device_type} {device_id}", type=device_type, tags=["simulated"]
                    )
                )
            except ApiError as exc:
                if exc.code != "device_exists":
                    raise
                created = False
                existing = await _retrying(lambda: rest.get_device(device_id))
                kind = existing["type"] if existing["type"] in PROFILES else device_type
            key = await _retrying(lambda: rest.rotate_device_key(device_id))
            specs[device_id] = SimulatedDeviceSpec(device_id, key, kind)
            if on_ready is not None:
                on_ready(len(specs), created)

    await asyncio.gather(*(prepare(device_id) for device_id in ids))
    return [specs[device_id] for device_id in ids]


async def _retrying(call: Callable[[], Awaitable[Any]], *, attempts: int = 120) -> Any:
    """``call()``, waiting out the hub's rate limit (429) when it is met: provisioning many devices meets it."""
    for _ in range(attempts - 1):
        try:
            return await call()
        except ApiError as exc:
            if exc.status != 429:
                raise
        await asyncio.sleep(1.0)
    return await call()
