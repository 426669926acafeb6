"""One device connection: its bounded in-flight frames and the ordered messages the server owes it.

The receive loop (in the gateway) adds frames; the flusher calls :meth:`DeviceSession.flushed`; a writer task
sends what is owed in order: error frames as they happen, and cumulative acks, coalesced (a newer ack
replaces an unsent older one, since ``ack 17`` says everything ``ack 16`` does). A slow reader therefore
never blocks the flusher or other devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ingest import codec
from ingest.flag import Flag
from ingest.ports import DeviceIdentity

__all__ = ["Close", "DeviceSession", "Send"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
# Skipped seq ranges remembered per connection (a device skips a range after a reboot, rarely more often); an
# out-of-order frame into a range forgotten since is acked and not stored, like a resend.
MAX_SKIPPED_RANGES = 64


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclass(slots=True)
class _Outgoing:
    message: dict[str, Any]
    binary: bool
    # Resolved True once written to the socket (False if the connection ended first), for who waits on it.
    written: asyncio.Future[bool] | None = None


class DeviceSession:
    def __init__(self, device: DeviceIdentity, send: Send, *, max_in_flight: int, binary: bool) -> None:
        self.device = device
        self.connection_id = secrets.token_hex(8)
        # Its place among the device's connections over every process: None until the gateway has it from
        # Redis; the highest generation another connection announced meanwhile.
        self.generation: int | None = None
        self.announced_meanwhile = 0
        self._send = send
        self.max_in_flight = max_in_flight
        # Encoding of the latest frame: acks answer in it.
        self.binary = binary
        self.in_flight = 0
        self.acked_seq = 0
        # The highest seq received (from hello's last stored seq on), and the seqs skipped on this connection:
        # a frame in a skipped range comes out of order and was never stored, so it is refused, not acked.
        self.received_seq = 0
        self.skipped: deque[tuple[int, int]] = deque(maxlen=MAX_SKIPPED_RANGES)
        # Usually empty or one coalesced ack: a list costs less than a deque on an idle connection.
        self._outbox: list[_Outgoing | Close] = []
        self._wake = Flag()
        self._room = Flag(initially=True)
        self.closed = Flag()
        # The connection has ended (after the closing handshake, or however else it ended).
        self.ended = Flag()
        self._writer: asyncio.Task[None] | None = None

    def start(self, last_seq: int, server_time: int) -> None:
        self.acked_seq = self.received_seq = last_seq
        self.reply(codec.hello(self.device.device_id, last_seq, server_time), binary=self.binary)
        self._writer = asyncio.get_running_loop().create_task(self._write(), name=f"device-writer-{self.device}")

    # Receive side.

    def received(self, seq: int) -> bool:
        """Note a frame's seq; False if it was skipped earlier on this connection (sent out of order)."""
        if seq > self.received_seq:
            if seq != self.received_seq + 1:
                self.skipped.append((self.received_seq + 1, seq - 1))
            self.received_seq = seq
            return True
        # At or below the highest: a resend of a stored or in-flight frame (stored once), unless it was skipped.
        return not any(low <= seq <= high for low, high in self.skipped)

    def frame_added(self) -> None:
        self.in_flight += 1
        if self.in_flight >= self.max_in_flight:
            self._room.clear()

    def has_room(self) -> bool:
        return self._room.is_set()

    async def room(self) -> None:
        """Wait while this connection has its maximum of frames waiting to be stored."""
        if not self._room.is_set():
            await self._room.wait()

    def reply(self, message: dict[str, Any], *, binary: bool) -> None:
        self._enqueue(_Outgoing(message, binary))

    async def deliver(self, message: dict[str, Any]) -> bool:
        """Send ``message`` (in the device's encoding) after what is owed; True once it is written to the socket,
        False if the connection ended before."""
        if self.closed.is_set():
            return False
        written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._enqueue(_Outgoing(message, self.binary, written))
        return await written

    def refused(self) -> None:
        """A frame counted in flight was refused without being stored (its error frame says so): no ack."""
        self.in_flight -= 1
        if self.in_flight < self.max_in_flight:
            self._room.set()

    # Flusher side (AckTarget).

    def flushed(self, seq: int, count: int) -> None:
        self.in_flight -= count
        if self.in_flight < self.max_in_flight:
            self._room.set()
        # Every flushed frame is answered, a resent one (seq at or below what is stored) included: the ack is
        # cumulative, so it names the highest seq known stored.
        self.acked_seq = max(self.acked_seq, seq)
        last = self._outbox[-1] if self._outbox else None
        if isinstance(last, _Outgoing) and last.message.get("type") == "ack":
            last.message = codec.ack(self.acked_seq)
            last.binary = self.binary
            return
        self._enqueue(_Outgoing(codec.ack(self.acked_seq), self.binary))

    # Closing.

    def close(self, code: int, reason: str) -> None:
        """Send what is owed, then close with ``code`` (idempotent: the first close wins)."""
        if not any(isinstance(item, Close) for item in self._outbox) and not self.closed.is_set():
            self._enqueue(Close(code, reason))

    async def finish(self) -> None:
        """After the connection ended: stop the writer."""
        self.ended.set()
        self.closed.set()
        self._room.set()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
        for item in self._outbox:
            if isinstance(item, _Outgoing) and item.written is not None and not item.written.done():
                item.written.set_result(False)
        self._outbox.clear()

    def _enqueue(self, item: _Outgoing | Close) -> None:
        self._outbox.append(item)
        self._wake.set()

    async def _write(self) -> None:
        try:
            await self._write_owed()
        except Exception:  # the connection went away under us: the receive loop sees the disconnect
            self.closed.set()
            self._room.set()

    async def _write_owed(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                item = self._outbox.pop(0)
                if isinstance(item, Close):
                    await self._send({"type": "websocket.close", "code": item.code, "reason": item.reason})
                    self.closed.set()
                    self._room.set()
                    return
                encoded = codec.encode_message(item.message, binary=item.binary)
                try:
                    if isinstance(encoded, bytes):
                        await self._send({"type": "websocket.send", "bytes": encoded})
                    else:
                        await self._send({"type": "websocket.send", "text": encoded})
                except BaseException:
                    if item.written is not None and not item.written.done():
                        item.written.set_result(False)
                    raise
                if item.written is not None and not item.written.done():
                    item.written.set_result(True)
