"""A device's frame sequence (API.md §4 ``seq``), kept in a small state file so a restarted device continues it.

The file holds the highest seq *reserved*. Before numbering past it, the next ``block`` seqs are reserved by
rewriting the file atomically (a temporary file, fsync, rename, fsync of the directory). A crash therefore
never reuses a seq (it skips at most the unused rest of one block, and the hub only needs seqs to grow), and
the file is written once per block, not once per frame. A clean close writes the last seq used, so the next
run continues without a gap.

Why keep it at all when ``hello`` says the last seq stored: frames of an older connection may still be on
their way into the store when a restarted device connects again (another hub process, a slow flush). If the
device numbered new frames from ``hello`` alone they could reuse those seqs and be taken for duplicates.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import orjson

__all__ = ["MAX_SEQ", "SeqState"]

log = logging.getLogger("telehub.clients")

# The contract's largest seq: exact as a double (Lua on the hub, JavaScript clients).
MAX_SEQ = 2**53 - 1


class SeqState:
    """Hands out seqs 1, 2, 3… in order, persisted to ``path`` (None: in memory only, this run)."""

    def __init__(self, path: str | os.PathLike[str] | None, *, block: int = 1000) -> None:
        if block < 1:
            raise ValueError("block must be at least 1")
        self.path = Path(path) if path is not None else None
        self.block = block
        # The device the file's seqs belong to (learned from hello), so a file copied to another device is noticed.
        self.device_id: str | None = None
        self._reserved = 0
        self._last = 0
        if self.path is not None:
            self._load(self.path)

    @property
    def last(self) -> int:
        """The last seq handed out (or continued from)."""
        return self._last

    def take(self) -> int:
        """The next seq, reserving a block on disk first when the reservation is used up."""
        seq = self._last + 1
        if seq > MAX_SEQ:
            raise OverflowError("the device's seq passed 2**53-1")
        if seq > self._reserved:
            self._reserve(min(MAX_SEQ, seq + self.block - 1))
        self._last = seq
        return seq

    def continue_after(self, last_stored: int, device_id: str) -> None:
        """The hub's ``hello``: continue from ``last_stored + 1`` when that is ahead of this state (a device that
        lost its state), and from this state otherwise (frames may still be on their way to the store)."""
        if self.device_id is not None and self.device_id != device_id:
            log.warning(
                "seq state %s belongs to device %s, not %s: continuing from the hub's last seq %d",
                self.path,
                self.device_id,
                device_id,
                last_stored,
            )
            self._last = self._reserved = last_stored
        learned = self.device_id != device_id
        self.device_id = device_id
        if last_stored > self._last:
            self._last = last_stored
        if learned or self._reserved < self._last:
            self._reserve(max(self._reserved, self._last))

    def save(self) -> None:
        """A clean stop: record the last seq used, so the next run continues right after it."""
        self._reserve(self._last)

    # The file.

    def _load(self, path: Path) -> None:
        try:
            state = orjson.loads(path.read_bytes())
            reserved = int(state["reserved"])
            device_id = state.get("device_id")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("seq state %s is unreadable (%s): continuing from the hub's last seq", path, exc)
            return
        self._reserved = self._last = max(0, min(reserved, MAX_SEQ))
        self.device_id = device_id if isinstance(device_id, str) else None

    def _reserve(self, reserved: int) -> None:
        self._reserved = reserved
        if self.path is None:
            return
        body = orjson.dumps({"device_id": self.device_id, "reserved": reserved})
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        _fsync_directory(self.path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (not possible everywhere: Windows has no directory fds)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
