"""Work that must run before the server closes its connections (uvicorn closes WebSockets before the lifespan
shutdown, which would be too late to send devices their pending acks)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import uvicorn

__all__ = ["HubServer", "on_drain"]

log = logging.getLogger("telehub")
Drain = Callable[[], Awaitable[None]]
_drains: list[Drain] = []


def on_drain(drain: Drain) -> Callable[[], None]:
    """Run ``drain`` when the server starts shutting down; returns a function that unregisters it."""
    _drains.append(drain)
    return lambda: _drains.remove(drain) if drain in _drains else None


class HubServer(uvicorn.Server):
    """uvicorn's server, draining the hub (store, ack, close devices with 1012) before it closes sockets."""

    async def shutdown(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        for drain in list(_drains):
            try:
                await drain()
            except Exception:
                log.exception("draining before shutdown failed")
        await super().shutdown(sockets)  # type: ignore[arg-type]
