"""The loop both WebSocket clients run: connect, hold a session, wait a jittered backoff, connect again, until a
session ends for good (a refused credential, a close the hub means as final, an unexpected error)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from clients.backoff import Backoff
from clients.errors import SessionEnded
from clients.log_redaction import redacted_logger

__all__ = ["CLOSE_TIMEOUT_S", "keep_connected"]

log = logging.getLogger("telehub.clients")
# websockets logs every handshake header (Authorization) and frame previews at debug: through a filtered logger.
protocol_log = redacted_logger("telehub.clients.websocket")

# How long closing waits for the hub's close frame (behind unread messages it may never come).
CLOSE_TIMEOUT_S = 2.0
# One session on an open connection; it returns True when a quick reconnect is right (a hub restarting),
# or raises SessionEnded to stop.
Session = Callable[[ClientConnection], Awaitable[bool]]


async def keep_connected(
    url: str,
    session: Session,
    *,
    headers: Callable[[], Awaitable[dict[str, str]]],
    subprotocols: Sequence[Subprotocol] | None,
    backoff: Backoff,
    final_statuses: Collection[int],
    open_timeout: float,
    ping_interval: float | None,
    what: str,
) -> SessionEnded:
    """Run sessions until one ends for good, and return why. A handshake refused with one of
    ``final_statuses`` ends it; other refusals and lost connections are retried after ``backoff``."""
    while True:
        quick = False
        try:
            async with connect(
                url,
                additional_headers=await headers(),
                subprotocols=subprotocols,
                open_timeout=open_timeout,
                ping_interval=ping_interval,
                ping_timeout=ping_interval,
                close_timeout=CLOSE_TIMEOUT_S,
                max_size=None,
                compression=None,
                logger=protocol_log,
            ) as ws:
                quick = await session(ws)
        except SessionEnded as exc:
            return exc
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in final_statuses:
                return SessionEnded(status, exc.response.body.decode(errors="replace") or str(exc))
            log.warning("telehub: %s handshake refused with %d; retrying", what, status)
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ValueError) as exc:
            log.info("telehub: %s connection failed or lost (%r); retrying", what, exc)
        except Exception as exc:
            log.exception("telehub: %s session failed", what)
            return SessionEnded(1011, f"unexpected error: {exc!r}")
        await asyncio.sleep(backoff.next_delay() / (10 if quick else 1))
