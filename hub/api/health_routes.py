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
from hub.layout import layout_check
from hub.services import Services

__all__ = ["metrics_route", "routes"]

# Redis answering slower than this marks the hub degraded.
DEGRADED_LATENCY_MS = 250.0
CHECK_TIMEOUT_S = 2.0

CHECK: schemas.Schema = {
    "type": "object",
    "properties": {
        "status": {"enum": ["healthy", "degraded", "unhealthy"]},
        # redis
        "latency_ms": {"type": "number"},
        "error": {"type": "string"},
        # ingest
        "frames_waiting": {"type": "integer", "minimum": 0},
        "reading": {"type": "boolean"},
        "retrying": {"type": "boolean"},
        # hub
        "devices": {"type": "integer", "minimum": 0},
        "dashboards": {"type": "integer", "minimum": 0},
        "accepting": {"type": "boolean"},
        # layout
        "partitions": {"type": "integer", "minimum": 1},
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


def ingest_check(app: Any) -> dict[str, Any]:
    """The ingest loop: frames received and not yet stored, whether connections may read more, and whether a
    write is being retried. Degraded while the store lags or fails (Redis slow or down): devices are held back
    by TCP backpressure and unacked, nothing is dropped."""
    ingest = getattr(app.state, "device_ingest", None)
    if ingest is None:
        return {"status": "healthy", "frames_waiting": 0, "reading": True, "retrying": False}
    flusher = ingest.flusher
    waiting, reading, retrying = int(flusher.waiting_frames), bool(flusher.has_room()), bool(flusher.retrying)
    lagging = retrying or not reading or waiting > flusher.policy.max_waiting_frames // 10
    return {
        "status": "degraded" if lagging else "healthy",
        "frames_waiting": waiting,
        "reading": reading,
        "retrying": retrying,
    }


def hub_check(app: Any) -> dict[str, Any]:
    """This process's connections: device sessions and dashboard sessions, and whether it takes new ones."""
    ingest = getattr(app.state, "device_ingest", None)
    fanout = getattr(app.state, "fanout", None)
    accepting = fanout is None or bool(fanout.accepting)
    return {
        "status": "healthy" if accepting else "degraded",
        "devices": 0 if ingest is None else len(ingest.gateway.sessions),
        "dashboards": 0 if fanout is None else len(fanout.sessions),
        "accepting": accepting,
    }


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
    summary=(
        "Health of the hub and its parts (Redis, the key layout, the ingest loop, this process's connections); "
        "503 when unhealthy"
    ),
    tag="health",
    responses={200: HEALTH, 503: HEALTH},
    auth=False,
)
async def health(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    checks = {
        "redis": await redis_check(services),
        "layout": layout_check(getattr(request.app.state, "layout_settling", None)),
        "ingest": ingest_check(request.app),
        "hub": hub_check(request.app),
    }
    return health_reply(checks)


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
