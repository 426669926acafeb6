"""The gate every HTTP request passes: request id, credential, rate limit, error envelope, metrics.

A pure ASGI middleware (no per-request task or body buffering). Errors raised inside endpoints are turned
into the envelope by :func:`error_response` (registered as Starlette exception handlers); anything that
escapes them is logged with its traceback here and answered as a 500 that shows no internals.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.http import JSONResponse
from hub.auth.authenticator import bearer_token
from hub.errors import MethodNotAllowed, NotFound, RateLimited, TelehubError, Unavailable

if TYPE_CHECKING:
    from hub.services import Services

__all__ = ["RequestGate", "error_response", "http_error_response"]

log = logging.getLogger("telehub.http")

REQUESTS = Counter("telehub_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram("telehub_http_request_seconds", "HTTP request latency", ["method", "route"])


# Redis unreachable: a 503 the client may retry, not a 500.
STORE_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class RequestGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = new_request_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        extra_headers: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id.encode())]
        status_seen = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status_seen, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_seen = message["status"]
                message["headers"] = [*message.get("headers", []), *extra_headers]
            await send(message)

        try:
            services: Services = scope["app"].state.services
            await self._admit(scope, state, services, extra_headers)
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if response_started:
                log.exception("request %s failed after its response started", request_id)
                raise
            response = error_response_for(exc, request_id)
            await response(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            REQUESTS.labels(scope["method"], template, str(status_seen)).inc()
            LATENCY.labels(scope["method"], template).observe(time.perf_counter() - started)

    async def _admit(
        self,
        scope: Scope,
        state: dict[str, Any],
        services: Services,
        extra_headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Resolve the credential (kept for the endpoint) and take one token from its rate bucket."""
        request = Request(scope)
        rate_key = "ip:" + (scope["client"][0] if scope.get("client") else "unknown")
        try:
            token = bearer_token(request.headers.get("authorization"))
            if token is not None:
                principal = await services.authenticator.resolve(token)
                state["principal"] = principal
                rate_key = principal.rate_key
        except TelehubError as exc:
            # Kept for endpoints that need a caller; unauthenticated endpoints still work.
            state["auth_error"] = exc
        try:
            decision = await services.rate_limiter.hit(rate_key)
        except STORE_DOWN:
            # Fail open: an outage must not hide /health; endpoints that need Redis answer 503 themselves.
            log.warning("rate limiter skipped: Redis is unreachable")
            return
        extra_headers.extend((k.lower().encode(), v.encode()) for k, v in decision.headers().items())
        if not decision.allowed:
            raise RateLimited(decision.retry_after, f"rate limit exceeded; retry in {decision.retry_after} s")


def error_response_for(exc: Exception, request_id: str) -> Response:
    if isinstance(exc, RateLimited):
        return JSONResponse(exc.body(request_id), status_code=exc.status, headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, TelehubError):
        return JSONResponse(exc.body(request_id), status_code=exc.status)
    if isinstance(exc, STORE_DOWN):
        log.warning("request %s failed: Redis is unreachable (%s)", request_id, type(exc).__name__)
        unavailable = Unavailable("the store is unreachable; retry shortly")
        return JSONResponse(unavailable.body(request_id), status_code=503, headers={"Retry-After": "1"})
    if isinstance(exc, HTTPException):
        return http_error_response(exc, request_id)
    log.error("request %s failed", request_id, exc_info=exc)
    return JSONResponse(TelehubError().body(request_id), status_code=500)


def http_error_response(exc: HTTPException, request_id: str) -> Response:
    """Starlette's own 404/405 (routing) in the contract's envelope."""
    error: TelehubError
    if exc.status_code == 404:
        error = NotFound("no such path")
    elif exc.status_code == 405:
        error = MethodNotAllowed()
    else:
        error = TelehubError(str(exc.detail), code=_code_for_status(exc.status_code), status=exc.status_code)
    response = JSONResponse(error.body(request_id), status_code=error.status)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def error_response(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for TelehubError and HTTPException raised inside endpoints."""
    return error_response_for(exc, request.state.request_id)


def _code_for_status(status: int) -> str:
    return {400: "bad_request", 413: "payload_too_large", 415: "unsupported_media_type"}.get(status, "error")
