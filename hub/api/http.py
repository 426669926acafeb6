"""Request and response plumbing shared by every endpoint: JSON bodies, principals, pagination envelopes."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from hub.auth.principal import Principal, Role
from hub.errors import BadRequest, PayloadTooLarge, Unauthenticated, UnsupportedMediaType, ValidationFailed

__all__ = [
    "JSONResponse",
    "int_param",
    "json_body",
    "offset_page",
    "page_params",
    "principal_of",
    "require_role",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 100


class JSONResponse(Response):
    """JSON through orjson (fast, strict UTF-8, no NaN)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def principal_of(request: Request) -> Principal:
    """The authenticated caller; 401 when the request carried no credential."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        auth_error: Unauthenticated | None = getattr(request.state, "auth_error", None)
        raise auth_error or Unauthenticated("send Authorization: Bearer <token> (a user JWT or an API key)")
    return principal


def require_role(request: Request, role: Role) -> Principal:
    principal = principal_of(request)
    principal.require(role)
    return principal


async def raw_body(request: Request, *, limit: int) -> bytes:
    """The body, read at most ``limit`` bytes far; 413 past that whatever Content-Length claimed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # cached for later readers (idempotency fingerprint)
    return body


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object: 415 for another media type, 400 for bad JSON or a non-object."""
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(f"send the body as application/json, not {media_type or 'nothing'}")
    limit: int = request.app.state.config.max_body_bytes
    body = await raw_body(request, limit=limit)
    if not body.strip():
        raise BadRequest("the body is empty; send a JSON object", code="invalid_json")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise ValidationFailed({"body": "must be a JSON object"})
    return value


def page_params(request: Request, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> tuple[int, int]:
    """``limit`` and ``offset`` from the query string, validated."""
    errors: dict[str, str] = {}
    limit = int_param(request, "limit", default, 1, maximum, errors)
    offset = int_param(request, "offset", 0, 0, 10**9, errors)
    if errors:
        raise ValidationFailed(errors)
    return limit, offset


def offset_page(data: list[Any], *, total: int, limit: int, offset: int) -> dict[str, Any]:
    """The registry list envelope of API.md §1."""
    return {"data": data, "meta": {"total": total, "limit": limit, "offset": offset}}


def int_param(request: Request, name: str, default: int, low: int, high: int, errors: dict[str, str]) -> int:
    """A whole-number query parameter in [low, high]; a problem is added to ``errors`` (reported together)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        errors[name] = f"must be a whole number from {low} to {high}"
        return default
    if not low <= value <= high:
        errors[name] = f"must be from {low} to {high}"
    return value
