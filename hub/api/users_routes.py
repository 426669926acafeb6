"""``/users``: the organization's people (admin only)."""

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
from hub.errors import Conflict
from hub.services import Services

__all__ = ["routes"]

ROLE_NAMES = [r.value for r in PERSON_ROLES]


@operation(
    summary="Create a user in the caller's organization",
    tag="users",
    body=schemas.USER_CREATE,
    responses={201: schemas.USER},
    errors=(400, 403, 409),
)
async def create_user(request: Request) -> JSONResponse:
    principal = require_role(request, Role.ADMIN)
    services: Services = request.app.state.services
    reader = BodyReader(await json_body(request), allowed=("email", "password", "role"))
    email = reader.string("email", required=True, max_len=320)
    password = reader.string("password", required=True, max_len=1024)
    role = reader.string("role", required=True, choices=ROLE_NAMES)
    reader.finish()
    assert email is not None and password is not None and role is not None
    user = await services.users.create(org_id=principal.org_id, email=email, password=password, role=Role(role))
    return JSONResponse(user, status_code=201)


@operation(
    summary="List the organization's users",
    tag="users",
    query=LIST_PARAMS,
    responses={200: schemas.offset_list(schemas.USER)},
    errors=(400, 403),
)
async def list_users(request: Request) -> JSONResponse:
    principal = require_role(request, Role.ADMIN)
    services: Services = request.app.state.services
    limit, offset = page_params(request)
    users, total = await services.users.list(principal.org_id, limit=limit, offset=offset)
    return JSONResponse(offset_page(users, total=total, limit=limit, offset=offset))


@operation(summary="Delete a user", tag="users", responses={204: None}, errors=(403, 404, 409))
async def delete_user(request: Request) -> Response:
    principal = require_role(request, Role.ADMIN)
    services: Services = request.app.state.services
    user_id = request.path_params["user_id"]
    if principal.kind == "user" and user_id == principal.id:
        raise Conflict("you cannot delete yourself; ask another admin", code="cannot_delete_self")
    await services.users.delete(principal.org_id, user_id)
    return Response(status_code=204)


routes = [
    Route("/users", create_user, methods=["POST"]),
    Route("/users", list_users, methods=["GET"]),
    Route("/users/{user_id}", delete_user, methods=["DELETE"]),
]
