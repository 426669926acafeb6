"""Stopping background tasks that await Redis.

redis-py wraps each reply's read in ``asyncio.timeout(socket_timeout)``; on Python 3.11 a cancellation that
lands while a reply completes is then sometimes swallowed, and the task runs on (measured: 7.4 with a socket
timeout, most cancels of a loop of commands lost; 8.0 and 8.1 even without one). A second cancel a moment later
lands, so every service stops its tasks here, cancelling again until they end (tests/test_redis_client.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]

log = logging.getLogger("telehub")


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any] | None], *, rounds: int = 40, round_s: float = 0.05
) -> None:
    """Cancel ``tasks`` and wait for them to end, cancelling again those still running after each ``round_s``;
    after ``rounds`` the rest are logged and left. Their exceptions are not raised (they end a stopping service)."""
    pending = {task for task in tasks if task is not None and not task.done()}
    for _ in range(rounds):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=round_s)
    log.warning("%d background tasks did not stop: %s", len(pending), sorted(t.get_name() for t in pending))
