"""Webhooks (API.md §3, §6): create (the secret shown once), list, delete, and each one's delivery log.

Admin only. Another organization's webhook is 404. A URL that resolves to a private, loopback or
link-local address is refused (400 ``url_not_allowed``) unless ``TELEHUB_WEBHOOK_ALLOW_PRIVATE=1``.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.api.cursors import cursor_page, decode_cursor
from hub.api.http import JSONResponse, int_param, json_body, offset_page, page_params, require_role
from hub.api.params import LIST_PARAMS
from hub.api.schemas import TIMESTAMP, Schema, cursor_list, obj, offset_list
from hub.api.spec import Param, operation
from hub.api.validation import BodyReader
from hub.auth.principal import Role
from hub.errors import BadRequest, Conflict, NotFound, ValidationFailed
from hub.webhooks.events import EVENT_TYPES
from hub.webhooks.service import Webhooks
from hub.webhooks.signing import new_secret
from hub.webhooks.ssrf import MAX_URL_CHARS, Refused, url_problem
from hub.webhooks.store import MAX_WEBHOOKS, TooManyWebhooks

__all__ = ["routes"]

SECRET_CHARS = (16, 256)
STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
URL: Schema = {"type": "string", "format": "uri", "maxLength": MAX_URL_CHARS}
EVENTS: Schema = {"type": "array", "items": {"enum": list(EVENT_TYPES)}, "minItems": 1, "uniqueItems": True}
WEBHOOK_FIELDS: dict[str, Schema] = {"id": {"type": "string"}, "url": URL, "events": EVENTS, "created_at": TIMESTAMP}
WEBHOOK = obj(WEBHOOK_FIELDS, required=list(WEBHOOK_FIELDS), title="Webhook")
CREATED = obj(
    {**WEBHOOK_FIELDS, "secret": {"type": "string", "description": "signs the deliveries; shown only here"}},
    required=[*WEBHOOK_FIELDS, "secret"],
)
CREATE_BODY = obj(
    {
        "url": URL,
        "events": EVENTS,
        "secret": {
            "type": "string",
            "minLength": SECRET_CHARS[0],
            "maxLength": SECRET_CHARS[1],
            "description": "a whsec_… secret is made when none is given",
        },
    },
    required=["url", "events"],
)
ATTEMPT = obj(
    {
        "delivery_id": {"type": "string", "description": "the Telehub-Delivery header; the same on every attempt"},
        "event_id": {"type": ["string", "null"], "description": "the body's id"},
        "type": {"enum": list(EVENT_TYPES)},
        "attempt": {"type": "integer", "minimum": 1},
        "status_code": {"type": ["integer", "null"], "description": "null when no answer came"},
        "error": {"type": ["string", "null"], "description": "timeout, connection error, or SSRF refusal"},
        "duration_ms": {"type": "integer"},
        "created_at": TIMESTAMP,
        "outcome": {"enum": ["delivered", "retrying", "failed"]},
        "next_retry_at": {"type": ["string", "null"], "format": "date-time"},
    },
    required=["delivery_id", "type", "attempt", "status_code", "error", "duration_ms", "created_at", "outcome"],
    title="DeliveryAttempt",
)
DELIVERIES_QUERY = (
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}, "page size"),
    Param("cursor", {"type": "string"}, "meta.next_cursor of the previous page"),
)


def _webhooks(request: Request) -> Webhooks:
    webhooks: Webhooks = request.app.state.webhooks
    return webhooks


@operation(
    summary="Create a webhook; the reply's secret is shown only this once",
    tag="webhooks",
    body=CREATE_BODY,
    responses={201: CREATED},
    errors=(400, 403, 409, 413, 415),
    description=(
        "Deliveries are `POST url` with `{id, type, created_at, org_id, data}` and the headers `Telehub-Event`, "
        '`Telehub-Delivery` and `Telehub-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, '
        "retried with exponential backoff until a 2xx. 400 `url_not_allowed` for a URL that does not resolve "
        "or resolves to a private, loopback or link-local address; 409 `too_many_webhooks` past "
        f"{MAX_WEBHOOKS} per organization."
    ),
)
async def create_webhook(request: Request) -> JSONResponse:
    principal = require_role(request, Role.ADMIN)
    reader = BodyReader(await json_body(request), allowed=("url", "events", "secret"))
    url = reader.string("url", required=True, max_len=MAX_URL_CHARS)
    events = reader.string_list("events", max_items=len(EVENT_TYPES), max_len=64)
    secret = reader.string("secret", max_len=SECRET_CHARS[1])
    if url is not None and (problem := url_problem(url)) is not None:
        reader.errors["url"] = problem
    if events is None and "events" not in reader.errors:
        reader.errors["events"] = "is required"
    elif events is not None and (not events or any(e not in EVENT_TYPES for e in events)):
        reader.errors["events"] = f"must be a non-empty list of: {', '.join(EVENT_TYPES)}"
    if secret is not None and len(secret) < SECRET_CHARS[0]:
        reader.errors["secret"] = f"must be at least {SECRET_CHARS[0]} characters"
    reader.finish()
    assert url is not None and events is not None
    webhooks = _webhooks(request)
    try:
        await webhooks.guard.target(url)
    except Refused as exc:
        raise BadRequest(
            f"this URL may not be called: {exc}", code="url_not_allowed", details={"url": str(exc)}
        ) from None
    try:
        created = await webhooks.store.create(principal.org_id, url=url, events=events, secret=secret or new_secret())
    except TooManyWebhooks:
        raise Conflict(
            f"the organization has {MAX_WEBHOOKS} webhooks; delete one first", code="too_many_webhooks"
        ) from None
    webhooks.organization_changed()
    return JSONResponse(created, status_code=201)


@operation(
    summary="List the organization's webhooks (never their secrets)",
    tag="webhooks",
    query=LIST_PARAMS,
    responses={200: offset_list(WEBHOOK)},
    errors=(400, 403),
)
async def list_webhooks(request: Request) -> JSONResponse:
    principal = require_role(request, Role.ADMIN)
    limit, offset = page_params(request)
    items, total = await _webhooks(request).store.page(principal.org_id, limit=limit, offset=offset)
    return JSONResponse(offset_page(items, total=total, limit=limit, offset=offset))


@operation(
    summary="Delete a webhook; its pending deliveries are dropped",
    tag="webhooks",
    responses={204: None},
    errors=(403, 404),
)
async def delete_webhook(request: Request) -> Response:
    principal = require_role(request, Role.ADMIN)
    webhook_id: str = request.path_params["webhook_id"]
    if not await _webhooks(request).store.delete(principal.org_id, webhook_id):
        raise NotFound(f"no webhook {webhook_id}")
    return Response(status_code=204)


@operation(
    summary="A webhook's delivery attempts, newest first",
    tag="webhooks",
    query=DELIVERIES_QUERY,
    responses={200: cursor_list(ATTEMPT)},
    errors=(400, 403, 404),
    description="One entry per attempt (the last 1,000 are kept); `next_retry_at` is set while retries remain.",
)
async def list_deliveries(request: Request) -> JSONResponse:
    principal = require_role(request, Role.ADMIN)
    webhook_id: str = request.path_params["webhook_id"]
    errors: dict[str, str] = {}
    limit = int_param(request, "limit", 50, 1, 100, errors)
    if errors:
        raise ValidationFailed(errors)
    cursor = request.query_params.get("cursor")
    before = decode_cursor(cursor, "desc") if cursor else None
    if before is not None and not STREAM_ID.fullmatch(before):
        raise BadRequest("the cursor is not one this API returned", code="invalid_cursor")
    store = _webhooks(request).store
    if not await store.exists(principal.org_id, webhook_id):
        raise NotFound(f"no webhook {webhook_id}")
    page = await store.deliveries(principal.org_id, webhook_id, limit=limit, before=before)
    next_position = page[-1][0] if len(page) == limit else None
    return JSONResponse(
        cursor_page([attempt for _, attempt in page], limit=limit, next_position=next_position, order="desc")
    )


routes = [
    Route("/webhooks", create_webhook, methods=["POST"]),
    Route("/webhooks", list_webhooks, methods=["GET"]),
    Route("/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"]),
    Route("/webhooks/{webhook_id}/deliveries", list_deliveries, methods=["GET"]),
]
