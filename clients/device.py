"""``DeviceClient``: device firmware's side of ``/api/v1/ws/device`` (API.md §4), exactly-once end to end.

::

    device = DeviceClient("http://hub:8080", "dk_…", state_path="telehub-seq.json")

    @device.command("reboot")                           # before connecting: queued commands come right away
    async def reboot(params: dict) -> str:
        return "rebooting"

    async with device:
        acked = await device.send({"temp": 21.5})      # queued; ``acked`` resolves with the seq once stored
        await device.flush()                            # everything queued so far is stored (or rejected)

Frames are MessagePack, numbered from a state file (clients.seqstate) and kept until acked: at most
``window`` unacked on the wire, at most ``max_buffered`` queued in all. ``send`` waits while the buffer is full
(``send_nowait`` raises ``BufferFull`` instead); nothing is dropped silently. The connection is kept up with
jittered exponential backoff; after a reconnect the frames the hub did not store are sent again, in order and
with the same seq, so each is stored exactly once. Close 4001 (key revoked, device deleted), 4003 (another
connection took over) and a refused handshake (401, 403, 404) end the session for good: waiting calls raise
``SessionEnded``. Close 1012 (a hub restarting) reconnects at once. websockets sends the heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import numpy.typing as npt
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from clients import frames
from clients.backoff import Backoff
from clients.commands import CommandHandler, CommandRouter
from clients.errors import BufferFull, ClientClosed, FrameRejected, SessionEnded
from clients.reconnect import keep_connected
from clients.seqstate import SeqState
from clients.urls import websocket_url
from clients.window import FrameWindow

__all__ = ["DeviceClient"]

log = logging.getLogger("telehub.clients")

SUBPROTOCOL = Subprotocol("telehub.v1")
# Close codes that end the session for good, and the one that asks for a quick reconnect.
FINAL_CLOSES = {4001: "the device key was revoked or the device deleted", 4003: "session_replaced"}
RESTARTING = 1012
Metrics = Mapping[str, float | int | bool]
ErrorCallback = Callable[[FrameRejected], None]


def _log_error(error: FrameRejected) -> None:
    log.warning("telehub: %s", error)


def _retrieve(future: asyncio.Future[int]) -> None:
    """Mark a frame's outcome as seen, so an unawaited rejection is not also logged as never retrieved."""
    if not future.cancelled():
        future.exception()


class DeviceClient:
    def __init__(
        self,
        url: str,
        device_key: str,
        *,
        state_path: str | os.PathLike[str] | None = None,
        window: int = 256,
        max_buffered: int = 10_000,
        seq_block: int = 1000,
        on_error: ErrorCallback | None = None,
        backoff: Backoff | None = None,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        max_frame_bytes: int = 1 << 20,
    ) -> None:
        self.url = websocket_url(url, "/ws/device")
        self._headers = {"Authorization": f"Bearer {device_key}"}
        self.seqs = SeqState(state_path, block=seq_block)
        self._window = FrameWindow(self.seqs, window=window, capacity=max_buffered)
        self._commands = CommandRouter(self._wake_sender)
        self.on_error = on_error or _log_error
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.max_frame_bytes = max_frame_bytes
        # From the latest hello: the device's id, and the hub's clock minus this one's (ms).
        self.device_id: str | None = None
        self.server_time_offset_ms = 0
        # Connections that reached hello, and frames written (resends included).
        self.connections = 0
        self.frames_written = 0
        # The close code of the latest connection that ended (None: none has).
        self.last_close_code: int | None = None
        self.ended: SessionEnded | None = None
        self._connected = asyncio.Event()
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    # Lifetime.

    async def __aenter__(self) -> DeviceClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(flush_timeout=10.0 if exc_info[0] is None else 0)

    def start(self) -> None:
        """Start connecting (and reconnecting) in the background; frames may be queued at once."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="telehub-device")

    async def close(self, *, flush_timeout: float = 10.0) -> None:
        """Wait up to ``flush_timeout`` s for queued frames to be acked, then close. Frames still unacked then
        are given up (their futures fail with ``ClientClosed``, and a warning says how many)."""
        if self._runner is None or isinstance(self.ended, ClientClosed):
            return
        if flush_timeout > 0 and len(self._window) and self.ended is None:
            with contextlib.suppress(TimeoutError, SessionEnded):
                await asyncio.wait_for(self.flush(), flush_timeout)
        self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner
        await self._commands.close()
        self.seqs.save()
        dropped = self._window.fail_all(ClientClosed())
        if dropped:
            log.warning("telehub: closed with %d frames not acked; they were not stored", dropped)
        self._end(ClientClosed())

    # Sending.

    async def send(self, metrics: Metrics, *, ts: int | datetime | None = None) -> asyncio.Future[int]:
        """Queue one data point (``ts`` defaults to now) and return once it is queued. The future resolves with
        its seq once the hub stored it, or fails with ``FrameRejected``."""
        return await self._queue(frames.telemetry_frame(metrics, self._ts(ts)))

    def send_nowait(self, metrics: Metrics, *, ts: int | datetime | None = None) -> asyncio.Future[int]:
        """``send`` without waiting: ``BufferFull`` when ``max_buffered`` frames are unacked."""
        return self._add(frames.telemetry_frame(metrics, self._ts(ts)))

    async def send_points(self, points: Iterable[tuple[int | datetime, Metrics]]) -> asyncio.Future[int]:
        """Several data points in one frame, each with its own ts."""
        stamped = [(self._ts(ts), metrics) for ts, metrics in points]
        return await self._queue(frames.points_frame(stamped))

    async def send_columns(self, ts: npt.ArrayLike, metrics: Mapping[str, npt.ArrayLike]) -> asyncio.Future[int]:
        """T samples of several metrics in one ``columns`` frame: ``ts`` int64 ms, each column T float64 values,
        sent as little-endian MessagePack bin (numpy arrays are copied once into the frame, never per sample)."""
        return await self._queue(frames.columns_frame(ts, metrics))

    async def send_event(self, name: str, data: Any = None, *, ts: int | datetime | None = None) -> asyncio.Future[int]:
        """A named event (``door_opened``) with any JSON-compatible ``data``."""
        return await self._queue(frames.event_frame(name, data, self._ts(ts)))

    async def flush(self) -> None:
        """Wait until every frame queued so far is stored or rejected (rejections go to their futures and
        ``on_error``). Raises ``SessionEnded`` if the session ends first."""
        pending = self._window.futures()
        if pending:
            await asyncio.wait(pending)
        if self.ended is not None and any(f.exception() is self.ended for f in pending if not f.cancelled()):
            raise self.ended

    @property
    def pending(self) -> int:
        """Frames queued and not yet acked."""
        return len(self._window)

    @property
    def in_flight(self) -> int:
        """Frames written on this connection and not yet acked."""
        return self._window.in_flight

    @property
    def acked_seq(self) -> int:
        return self._window.acked_seq

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Until the hub's hello on a connection (raises ``SessionEnded`` if the session ends instead)."""
        while not self._connected.is_set():
            if self.ended is not None:
                raise self.ended
            self._changed.clear()
            await self._changed.wait()

    def command(self, name: str) -> Callable[[CommandHandler], CommandHandler]:
        """Decorator: ``@device.command("reboot")`` on a function of the params (plain or async)."""

        def register(handler: CommandHandler) -> CommandHandler:
            self._commands.register(name, handler)
            return handler

        return register

    def _ts(self, ts: int | datetime | None) -> int:
        stamped = frames.timestamp_ms(ts)
        return stamped if stamped is not None else time.time_ns() // 1_000_000

    async def _queue(self, frame: frames.QueuedFrame) -> asyncio.Future[int]:
        while not self._window.has_room() and self.ended is None:
            self._changed.clear()
            await self._changed.wait()
        return self._add(frame)

    def _add(self, frame: frames.QueuedFrame) -> asyncio.Future[int]:
        if self.ended is not None:
            raise self.ended
        if len(frame) > self.max_frame_bytes:
            raise ValueError(f"a frame of {len(frame)} bytes is over the hub's limit of {self.max_frame_bytes}")
        if not self._window.has_room():
            raise BufferFull(f"{self._window.capacity} frames are waiting to be acked")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._window.add(frame, future)
        self._wake_sender()
        return future

    def _wake_sender(self) -> None:
        self._wake.set()

    def _notify(self) -> None:
        self._changed.set()

    def _end(self, error: SessionEnded) -> None:
        if self.ended is None:
            self.ended = error
            self._window.fail_all(error)
        self._notify()

    # The connection.

    async def _run(self) -> None:
        ended = await keep_connected(
            self.url,
            self._session,
            headers=self._auth_headers,
            subprotocols=[SUBPROTOCOL],
            backoff=self.backoff,
            final_statuses=(401, 403, 404),
            open_timeout=self.open_timeout,
            ping_interval=self.ping_interval,
            what="device",
        )
        log.error("telehub: %s; not reconnecting", ended)
        self._end(ended)

    async def _auth_headers(self) -> dict[str, str]:
        return self._headers

    async def _session(self, ws: ClientConnection) -> bool:
        """One connection from its hello to its end; True when the hub asked for a quick reconnect (1012)."""
        hello = frames.decode_message(await asyncio.wait_for(ws.recv(), self.open_timeout))
        if hello["type"] != "hello" or not isinstance(hello.get("last_seq"), int):
            raise ValueError(f"expected hello, got {hello!r}")
        self.device_id = str(hello.get("device_id"))
        self.server_time_offset_ms = int(hello.get("server_time", 0)) - time.time_ns() // 1_000_000
        self._window.reconnected(hello["last_seq"], self.device_id)
        self._commands.reconnected()
        self.connections += 1
        self.backoff.reset()
        self._connected.set()
        self._notify()
        self._wake_sender()
        sender = asyncio.get_running_loop().create_task(self._send_loop(ws), name="telehub-device-sender")
        try:
            async for data in ws:
                self._received(frames.decode_message(data))
        except ConnectionClosed:
            pass
        finally:
            self._connected.clear()
            self._notify()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
        code = self.last_close_code = ws.close_code
        if code in FINAL_CLOSES:
            raise SessionEnded(code, ws.close_reason or FINAL_CLOSES[code])
        log.info("telehub: device connection closed (%s %s); reconnecting", code, ws.close_reason)
        return code == RESTARTING

    async def _send_loop(self, ws: ClientConnection) -> None:
        """Command results first (small, and someone waits on them), then frames while the window has room.
        Should it fail (the seq state file cannot be written), the connection is closed and made again."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while (result := self._commands.next_unsent()) is not None:
                    await ws.send(result)
                while (wire := self._window.next_to_send()) is not None:
                    await ws.send(wire)
                    self.frames_written += 1
        except (ConnectionClosed, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("telehub: sending failed; reconnecting")
            await ws.close(1011, "device error")

    def _received(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "ack" and isinstance(message.get("seq"), int):
            if self._window.acked(message["seq"]):
                self._wake_sender()
                self._notify()
        elif kind == "error":
            error = FrameRejected(str(message.get("code")), str(message.get("message")), message.get("seq"))
            if error.seq is not None and self._window.rejected(error):
                self._wake_sender()
                self._notify()
            elif error.seq is None and self._commands.is_repeat_refusal(error.code, error.message):
                return
            try:
                self.on_error(error)
            except Exception:
                log.exception("telehub: the on_error callback failed")
        elif kind == "command":
            self._commands.received(message)
