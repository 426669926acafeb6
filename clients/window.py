"""The frames a device has queued and the hub has not acked yet, in order: its offline buffer and its window.

Three parts of one queue, front to back: frames sent on the current connection and not acked (at most
``window`` of them), frames numbered on an earlier connection and not yet sent again, and frames never sent
(no seq yet). A frame gets its seq when it is first sent, so frames queued while offline are numbered after
the hub's ``hello`` has been heard. No I/O here: the device client moves the bytes and resolves nothing itself.

Each frame carries a future resolved with its seq once the hub acks it (stored) or failed with
``FrameRejected`` (its ``error`` frame). After a reconnect, frames at or below ``hello.last_seq`` were stored
(the ack was lost with the connection) and are resolved; the rest are sent again in order, with the same seq,
so the hub stores each exactly once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from clients.errors import FrameRejected
from clients.frames import QueuedFrame
from clients.seqstate import SeqState

__all__ = ["FrameWindow"]


@dataclass(slots=True)
class _Pending:
    frame: QueuedFrame
    future: asyncio.Future[int]
    seq: int = 0
    wire: bytes = b""


class FrameWindow:
    def __init__(self, seqs: SeqState, *, window: int, capacity: int) -> None:
        if not 1 <= window <= capacity:
            raise ValueError("need 1 <= window <= capacity")
        self.seqs = seqs
        self.window = window
        self.capacity = capacity
        self._frames: deque[_Pending] = deque()
        # How many frames at the front have a seq, and how many of those went out on this connection.
        self._numbered = 0
        self._sent = 0
        # The highest seq the hub said it stored.
        self.acked_seq = 0

    def __len__(self) -> int:
        return len(self._frames)

    def has_room(self) -> bool:
        return len(self._frames) < self.capacity

    @property
    def in_flight(self) -> int:
        return self._sent

    def add(self, frame: QueuedFrame, future: asyncio.Future[int]) -> None:
        self._frames.append(_Pending(frame, future))

    def futures(self) -> list[asyncio.Future[int]]:
        return [pending.future for pending in self._frames]

    def next_to_send(self) -> bytes | None:
        """The next frame to write on this connection, numbered if it is new; None while the window is full."""
        if self._sent >= self.window or self._sent >= len(self._frames):
            return None
        pending = self._frames[self._sent]
        if self._sent == self._numbered:
            pending.seq = self.seqs.take()
            pending.wire = pending.frame.numbered(pending.seq)
            self._numbered += 1
        self._sent += 1
        return pending.wire

    def acked(self, seq: int) -> int:
        """The hub's ``ack``: every frame up to ``seq`` is stored. Resolves them; how many there were."""
        self.acked_seq = max(self.acked_seq, seq)
        done = 0
        while self._numbered and self._frames[0].seq <= seq:
            pending = self._pop_front()
            if not pending.future.done():
                pending.future.set_result(pending.seq)
            done += 1
        return done

    def rejected(self, error: FrameRejected) -> bool:
        """The hub's ``error`` for ``error.seq``: that frame is dropped and its future fails. False if unknown."""
        for index in range(self._numbered):
            pending = self._frames[index]
            if pending.seq == error.seq:
                del self._frames[index]
                self._numbered -= 1
                if index < self._sent:
                    self._sent -= 1
                if not pending.future.done():
                    pending.future.set_exception(error)
                return True
        return False

    def reconnected(self, last_stored: int, device_id: str) -> int:
        """A new connection's ``hello``: frames at or below ``last_stored`` were stored (resolved); the others
        go out again from the front. The seq continues after both this state and the hub's. Returns how many
        frames were found stored."""
        self._sent = 0
        stored = self.acked(last_stored)
        self.seqs.continue_after(last_stored, device_id)
        return stored

    def fail_all(self, error: BaseException) -> int:
        """Give up on every frame (the client closed or the session ended); how many there were."""
        count = len(self._frames)
        for pending in self._frames:
            if not pending.future.done():
                pending.future.set_exception(error)
        self._frames.clear()
        self._numbered = self._sent = 0
        return count

    def _pop_front(self) -> _Pending:
        pending = self._frames.popleft()
        self._numbered -= 1
        if self._sent:
            self._sent -= 1
        return pending
