"""``GET /health``, ``GET /health/redis`` (no auth) and the Prometheus ``/metrics`` page."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub import __version__
from hub.api import schemas
from hub.api.http import JSONResponse
from hub.api.spec import operation
from hub.services import Services

__all__ = ["metrics_route", "routes"]

# Redis answering slower than this marks the hub degraded.
DEGRADED_LATENCY_MS = 250.0
CHECK_TIMEOUT_S = 2.0

CHECK: schemas.Schema = {
    "type": "object",
    "properties": {
        "status": {"enum": ["healthy", "degraded", "unhealthy"]},
        "latency_ms": {"type": "number"},
    },
    "required": ["status"],
}
HEALTH: schemas.Schema = schemas.obj(
    {
        "status": {"enum": ["healthy", "degraded", "unhealthy"]},
        "version": {"type": "string"},
        "checks": {"type": "object", "additionalProperties": CHECK},
    },
    required=["status", "version", "checks"],
    title="Health",
)


async def redis_check(services: Services) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(services.redis.ping(), CHECK_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError) as exc:
        return {"status": "unhealthy", "error": type(exc).__name__}
    latency = round((time.perf_counter() - started) * 1000, 3)
    return {"status": "degraded" if latency > DEGRADED_LATENCY_MS else "healthy", "latency_ms": latency}


def overall(checks: dict[str, dict[str, Any]]) -> str:
    statuses = {check["status"] for check in checks.values()}
    for status in ("unhealthy", "degraded"):
        if status in statuses:
            return status
    return "healthy"


def health_reply(checks: dict[str, dict[str, Any]]) -> JSONResponse:
    status = overall(checks)
    body = {"status": status, "version": __version__, "checks": checks}
    return JSONResponse(body, status_code=503 if status == "unhealthy" else 200)


@operation(
    summary="Health of the hub and its parts; 503 when unhealthy",
    tag="health",
    responses={200: HEALTH, 503: HEALTH},
    auth=False,
)
async def health(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    return health_reply({"redis": await redis_check(services)})


@operation(
    summary="Health of the Redis connection alone; 503 when unreachable",
    tag="health",
    responses={200: HEALTH, 503: HEALTH},
    auth=False,
)
async def health_redis(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    return health_reply({"redis": await redis_check(services)})


@operation(
    summary="Prometheus metrics (text exposition format)",
    tag="health",
    responses={200: {"type": "string"}},
    response_media_type="text/plain",
    auth=False,
)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/health/redis", health_redis, methods=["GET"]),
]
metrics_route = Route("/metrics", metrics, methods=["GET"])
