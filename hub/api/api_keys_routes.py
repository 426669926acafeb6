"""``/api-keys``: org-scoped keys for scripts and backends (admin only); the secret is shown once."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.api import schemas
from hub.api.http import JSONResponse, json_body, offset_page, page_params, require_role
from hub.api.params import LIST_PARAMS
from hub.api.spec import operation
from hub.api.validation import BodyReader
from hub.auth.principal import PERSON_ROLES, Role
from hub.services import Services

__all__ = ["routes"]


@operation(
    summary="Create an API key; the reply's key is shown only this once",
    tag="api-keys",
    body=schemas.API_KEY_CREATE,
    responses={201: schemas.API_KEY_CREATED},
    errors=(400, 403),
)
async def create_api_key(request: Request) -> JSONResponse:
    principal = require_role(request, Role.ADMIN)
    services: Services = request.app.state.services
    reader = BodyReader(await json_body(request), allowed=("name", "role"))
    name = reader.string("name", required=True, max_len=128)
    role = reader.string("role", required=True, choices=[r.value for r in PERSON_ROLES])
    reader.finish()
    assert name is not None and role is not None
    created = await services.api_keys.create(org_id=principal.org_id, name=name, role=Role(role))
    return JSONResponse(created, status_code=201)


@operation(
    summary="List the organization's API keys (never their secrets)",
    tag="api-keys",
    query=LIST_PARAMS,
    responses={200: schemas.offset_list(schemas.API_KEY)},
    errors=(400, 403),
)
async def list_api_keys(request: Request) -> JSONResponse:
    principal = require_role(request, Role.ADMIN)
    services: Services = request.app.state.services
    limit, offset = page_params(request)
    items, total = await services.api_keys.list(principal.org_id, limit=limit, offset=offset)
    return JSONResponse(offset_page(items, total=total, limit=limit, offset=offset))


@operation(
    summary="Revoke an API key; it stops working at once on every process",
    tag="api-keys",
    responses={204: None},
    errors=(403, 404),
)
async def revoke_api_key(request: Request) -> Response:
    principal = require_role(request, Role.ADMIN)
    services: Services = request.app.state.services
    await services.api_keys.revoke(principal.org_id, request.path_params["key_id"])
    return Response(status_code=204)


routes = [
    Route("/api-keys", create_api_key, methods=["POST"]),
    Route("/api-keys", list_api_keys, methods=["GET"]),
    Route("/api-keys/{key_id}", revoke_api_key, methods=["DELETE"]),
]
