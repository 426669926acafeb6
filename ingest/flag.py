"""A set/clear flag to wait on, for objects kept per connection.

``asyncio.Event`` allocates a deque of waiters (about 600 bytes) when it is made, used or not; a connection
holds several, and an idle connection never waits on most of them. ``Flag`` behaves the same (``set``,
``clear``, ``is_set``, ``wait``) but makes a future only for a task that actually waits.
"""

from __future__ import annotations

import asyncio
from typing import Literal

__all__ = ["Flag"]


class Flag:
    __slots__ = ("_set", "_waiters")

    def __init__(self, *, initially: bool = False) -> None:
        self._set = initially
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> Literal[True]:
        """Return once the flag is set (at once if it is)."""
        if self._set:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True
