"""The ASGI application: routes, the request gate, error handlers, and a lifespan owning Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, WebSocketRoute

from clients import log_redaction
from hub.api import (
    aggregate_routes,
    alerts_routes,
    api_keys_routes,
    auth_routes,
    commands_routes,
    devices_routes,
    docs_routes,
    health_routes,
    history_routes,
    provisioning_routes,
    readings_routes,
    users_routes,
    webhooks_routes,
)
from hub.api.middleware import RequestGate, error_response
from hub.bootstrap import bootstrap_organization
from hub.config import HubConfig
from hub.device_ingest import DeviceIngest, DeviceSocket
from hub.errors import TelehubError
from hub.fanout.endpoint import DashboardSocket
from hub.fanout.service import Fanout
from hub.layout import settle_when_reachable
from hub.lifecycle import on_drain
from hub.services import Services, open_redis
from hub.web import routes as web_routes
from hub.webhooks.service import Webhooks
from ingest.tasks import cancel_and_wait

__all__ = ["API_PREFIX", "app_from_env", "create_app"]

API_PREFIX = "/api/v1"
log = logging.getLogger("telehub")


def api_routes() -> list[BaseRoute]:
    return [
        *auth_routes.routes,
        *api_keys_routes.routes,
        *users_routes.routes,
        *devices_routes.routes,
        *provisioning_routes.routes,
        *readings_routes.routes,
        *history_routes.routes,
        *aggregate_routes.routes,
        *commands_routes.routes,
        *alerts_routes.routes,
        *webhooks_routes.routes,
        *health_routes.routes,
    ]


def create_app(config: HubConfig) -> Starlette:
    """The hub for one process; ``config.redis_url`` must point at a running Redis."""
    if not config.redis_url:
        raise ValueError("create_app needs config.redis_url; `telehub serve` starts an embedded Redis for you")
    # Wherever the hub runs, the protocol loggers' debug lines (handshake headers, frames) carry no credential.
    log_redaction.install()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        redis = open_redis(config.redis_url)
        settling: asyncio.Task[str | None] | None = None
        try:
            settling = app.state.layout_settling = await settle_when_reachable(redis, config.partitions)
            services = Services.build(config, redis)
            app.state.services = services
            await bootstrap_organization(services)
            ingest = app.state.device_ingest = DeviceIngest(config, redis, services.device_keys)
            await ingest.start()
            fanout = app.state.fanout = Fanout.from_config(config, ingest.frames_redis, services.authenticator)
            fanout.start()
            ingest.control_listeners.append(fanout.on_control)
            webhooks = app.state.webhooks = Webhooks(config, redis, node_id=ingest.node_id)
            await webhooks.start()
            forget_drains = [on_drain(ingest.drain), on_drain(fanout.drain)]
            try:
                # Lifespan state: uvicorn hands it to hub.websocket_dispatch, which serves the lean paths from it.
                yield {"device_ingest": ingest, "fanout": fanout}
            finally:
                for forget in forget_drains:
                    forget()
                await webhooks.stop()
                await fanout.stop()
                await ingest.stop()
        finally:
            await cancel_and_wait([settling])
            await redis.aclose()

    app = Starlette(
        routes=[
            Mount(
                API_PREFIX,
                routes=[
                    *api_routes(),
                    WebSocketRoute("/ws/device", DeviceSocket()),
                    WebSocketRoute("/ws", DashboardSocket()),
                ],
            ),
            health_routes.metrics_route,
            *docs_routes.routes,
            *web_routes.routes,
        ],
        middleware=[Middleware(RequestGate)],
        exception_handlers={TelehubError: error_response, HTTPException: error_response},
        lifespan=lifespan,
    )
    app.state.config = config
    return app


def app_from_env() -> Starlette:
    """Factory for uvicorn worker processes: the config travels in ``TELEHUB_*`` variables."""
    return create_app(HubConfig.from_env())
