"""The ``--demo`` devices streaming into the server that made them, from a thread of the ``telehub serve`` process.

The fleet is ``telehub simulate``'s (clients.fleet), run by one thread with an event loop of its own, so it is
the same whether uvicorn serves in this process (``--workers 1``) or supervises worker processes: it runs
once, in the process the user started, never once per worker. It waits until the server accepts connections
on its own port, then connects over loopback like any device. With one worker it is stopped
first when the server shuts down (``hub.lifecycle.on_drain``): every frame it sent is acked before devices are
closed. With several, the supervisor's workers stop on their own, so it is stopped after them, giving up the
frames sent since the last ack (a second at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from clients.fleet import Fleet, SimulatedDeviceSpec
from hub.demo import DEMO_RATE_HZ, DemoDevice

__all__ = ["DemoFleet"]

log = logging.getLogger("telehub.demo")
POLL_S = 0.1
JOIN_MARGIN_S = 5.0


class DemoFleet:
    def __init__(
        self, url: str, devices: Sequence[DemoDevice], *, state_dir: Path, rate_hz: float = DEMO_RATE_HZ
    ) -> None:
        self.url = url
        self.specs = [SimulatedDeviceSpec(d.device_id, d.key, d.type) for d in devices]
        self.state_dir = state_dir
        self.rate_hz = rate_hz
        self._thread = threading.Thread(target=self._main, name="telehub-demo", daemon=True)
        # Guards the hand-over between stop() (any thread) and the fleet's loop starting.
        self._lock = threading.Lock()
        self._stop_requested = False
        self._flush_timeout = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def start(self) -> None:
        # The SDK logs each reconnect at info; the demo's devices are not what a server's log is about.
        logging.getLogger("telehub.clients").setLevel(logging.WARNING)
        self._thread.start()

    def stop(self, *, flush_timeout: float = 0.0) -> None:
        """Stop streaming, waiting up to ``flush_timeout`` s for the frames sent to be acked; returns once the
        thread ended (or a few seconds after that timeout). Safe to call more than once, from any thread."""
        with self._lock:
            if self._stop_requested:
                return
            self._stop_requested = True
            self._flush_timeout = flush_timeout
            if self._loop is not None and self._stopping is not None:
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread.is_alive():
            self._thread.join(flush_timeout + JOIN_MARGIN_S)

    async def drain(self) -> None:
        """``on_drain``: stop while the server still serves, so every frame sent is acked."""
        await asyncio.to_thread(self.stop, flush_timeout=5.0)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception:
            log.exception("demo: the simulated devices failed")

    async def _run(self) -> None:
        stopping = asyncio.Event()
        with self._lock:
            self._loop, self._stopping = asyncio.get_running_loop(), stopping
            if self._stop_requested:
                return
        if not await self._wait_listening(stopping):
            return
        fleet = Fleet(self.url, self.specs, rate_hz=self.rate_hz, state_dir=self.state_dir, notice=log.warning)
        await fleet.start()
        log.info("demo: %d simulated devices stream %g frame/s each into %s", len(self.specs), self.rate_hz, self.url)
        await stopping.wait()
        # What is given up is counted below; the SDK need not warn about it device by device.
        logging.getLogger("telehub.clients").setLevel(logging.ERROR)
        await fleet.stop(flush_timeout=self._flush_timeout)
        done = fleet.snapshot()
        log.info(
            "demo: devices stopped: %d frames sent, %d acked, %d not acked, %d commands answered",
            done.sent,
            done.acked,
            done.not_acked,
            done.commands,
        )

    async def _wait_listening(self, stopping: asyncio.Event) -> bool:
        """Until the server accepts connections on its port (True), or the demo is stopped first (False)."""
        where = urlsplit(self.url)
        while not stopping.is_set():
            try:
                _, writer = await asyncio.open_connection(where.hostname, where.port)
            except OSError:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), POLL_S)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        return False
