"""Commands to devices (API.md §3): create (operator, with Idempotency-Key), read, cancel while queued, list.

A device key reads its own device's commands; every other path is the organization's, and another
organization's command or device is 404.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.api.cursors import cursor_page, decode_cursor
from hub.api.http import JSONResponse, int_param, json_body, principal_of, require_role
from hub.api.idempotency import IDEMPOTENCY_KEY_PARAM, idempotent
from hub.api.schemas import cursor_list, obj
from hub.api.spec import Param, operation
from hub.api.validation import BodyReader
from hub.auth.principal import Principal, Role
from hub.commands.records import COMMAND_PATTERN, STATUSES, public
from hub.commands.service import Commands
from hub.commands.store import MAX_QUEUED, NoDevice, QueueFull
from hub.errors import BadRequest, Conflict, NotFound, ValidationFailed
from hub.services import Services

__all__ = ["routes"]

PARAMS_MAX_BYTES = 16 * 1024
TIMEOUT_S = (1, 3600, 30)
TTL_S = (0, 604_800, 3600)
TIME = {"type": ["string", "null"], "format": "date-time"}
COMMAND = obj(
    {
        "command_id": {"type": "string"},
        "device_id": {"type": "string"},
        "command": {"type": "string"},
        "params": {"type": "object"},
        "status": {"enum": list(STATUSES)},
        "result": {"description": "what the device answered (any JSON), null until then"},
        "error": {"type": ["string", "null"]},
        "timeout_s": {"type": "integer"},
        "ttl_s": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "sent_at": TIME,
        "completed_at": TIME,
        "expires_at": {"type": "string", "format": "date-time", "description": "sent by then, or expired"},
    },
    required=["command_id", "device_id", "command", "params", "status", "result", "error", "created_at"],
    title="Command",
)
CREATE_BODY = obj(
    {
        "command": {"type": "string", "pattern": COMMAND_PATTERN.pattern},
        "params": {"type": "object", "description": f"at most {PARAMS_MAX_BYTES} bytes as JSON"},
        "timeout_s": {"type": "integer", "minimum": TIMEOUT_S[0], "maximum": TIMEOUT_S[1], "default": TIMEOUT_S[2]},
        "ttl_s": {"type": "integer", "minimum": TTL_S[0], "maximum": TTL_S[1], "default": TTL_S[2]},
    },
    required=["command"],
)
CREATED = obj({"command_id": {"type": "string"}, "status": {"enum": ["queued"]}}, required=["command_id", "status"])
LIST_QUERY = (
    Param("status", {"enum": list(STATUSES)}, "only commands in this status"),
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}, "page size"),
    Param("cursor", {"type": "string"}, "meta.next_cursor of the previous page"),
)


def _commands(request: Request) -> Commands:
    commands: Commands = request.app.state.device_ingest.commands
    return commands


async def _readable_device(request: Request, principal: Principal, device_id: str) -> None:
    """404 unless the caller may read ``device_id``'s commands: a device key its own, others the org's."""
    if principal.kind == "device":
        if principal.device_id != device_id:
            raise NotFound(f"no device {device_id}")
        return
    principal.require(Role.VIEWER)
    services: Services = request.app.state.services
    await services.devices.get(principal.org_id, device_id)


@operation(
    summary="Send a command to a device",
    tag="commands",
    body=CREATE_BODY,
    responses={202: CREATED},
    headers=(IDEMPOTENCY_KEY_PARAM,),
    errors=(400, 403, 404, 409, 413, 415),
    description=(
        "Stored `queued` before the answer, then written to the device as soon as it is connected (on any "
        "process), `sent` once written; the device's `command_result` makes it `completed` or `failed`. "
        "`timed_out`: sent, no result within `timeout_s`; `expired`: not sent within `ttl_s` (0: only if the "
        "device is connected now). Every change is on the `devices/{id}/commands` channel and a `command.*` event. "
        f"409 `command_queue_full` when the device has {MAX_QUEUED} commands queued."
    ),
)
async def create_command(request: Request) -> Response:
    principal = require_role(request, Role.OPERATOR)
    device_id: str = request.path_params["device_id"]

    async def create() -> Response:
        reader = BodyReader(await json_body(request), allowed=("command", "params", "timeout_s", "ttl_s"))
        command = reader.string("command", required=True, max_len=64, pattern=COMMAND_PATTERN)
        params = reader.json_object("params", max_bytes=PARAMS_MAX_BYTES)
        timeout_s = reader.integer("timeout_s", low=TIMEOUT_S[0], high=TIMEOUT_S[1], default=TIMEOUT_S[2])
        ttl_s = reader.integer("ttl_s", low=TTL_S[0], high=TTL_S[1], default=TTL_S[2])
        reader.finish()
        assert command is not None and timeout_s is not None and ttl_s is not None
        try:
            fields = await _commands(request).create(
                principal.org_id, device_id, command=command, params=params or {}, timeout_s=timeout_s, ttl_s=ttl_s
            )
        except NoDevice as exc:
            raise NotFound(str(exc)) from None
        except QueueFull:
            raise Conflict(
                f"the device has {MAX_QUEUED} commands queued; wait for it to take them, or cancel some",
                code="command_queue_full",
            ) from None
        return JSONResponse({"command_id": fields["command_id"], "status": fields["status"]}, status_code=202)

    return await idempotent(request, principal, create)


async def _command(request: Request, principal: Principal) -> dict[str, str]:
    command_id: str = request.path_params["command_id"]
    fields = await _commands(request).store.get(principal.org_id, command_id)
    if fields is None or (principal.kind == "device" and fields["device_id"] != principal.device_id):
        raise NotFound(f"no command {command_id}")
    return fields


@operation(summary="A command and its status", tag="commands", responses={200: COMMAND}, errors=(403, 404))
async def get_command(request: Request) -> JSONResponse:
    principal = principal_of(request)
    if principal.kind != "device":
        principal.require(Role.VIEWER)
    return JSONResponse(public(await _command(request, principal)))


@operation(
    summary="Cancel a command while it is queued",
    tag="commands",
    responses={200: COMMAND},
    errors=(403, 404, 409),
    description="409 `command_not_queued` once it was sent or has ended; the command is unchanged.",
)
async def cancel_command(request: Request) -> JSONResponse:
    principal = require_role(request, Role.OPERATOR)
    fields = await _command(request, principal)
    canceled, after = await _commands(request).cancel(principal.org_id, fields["command_id"], fields["device_id"])
    if not canceled:
        status = after["status"] if after else "gone"
        raise Conflict(f"the command is {status}: only a queued command can be canceled", code="command_not_queued")
    assert after is not None
    return JSONResponse(public(after))


@operation(
    summary="A device's commands, newest first",
    tag="commands",
    query=LIST_QUERY,
    responses={200: cursor_list(COMMAND)},
    errors=(400, 403, 404),
)
async def list_commands(request: Request) -> JSONResponse:
    principal = principal_of(request)
    device_id: str = request.path_params["device_id"]
    await _readable_device(request, principal, device_id)
    errors: dict[str, str] = {}
    limit = int_param(request, "limit", 50, 1, 100, errors)
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        errors["status"] = f"must be one of {', '.join(STATUSES)}"
    if errors:
        raise ValidationFailed(errors)
    before = _before(request)
    store = _commands(request).store
    found: list[dict[str, Any]] = []
    next_position: str | None = None
    # A status filter reads past the commands it skips, a page at a time, up to a bound.
    for _ in range(20):
        page = await store.page(principal.org_id, device_id, before=before, limit=limit)
        for sequence, fields in page:
            before = sequence
            if status is None or fields["status"] == status:
                found.append(public(fields))
                if len(found) == limit:
                    break
        if len(found) == limit or len(page) < limit:
            break
    if before is not None and (len(found) == limit or len(page) == limit):
        next_position = str(before)
    return JSONResponse(cursor_page(found, limit=limit, next_position=next_position, order="desc"))


def _before(request: Request) -> int | None:
    cursor = request.query_params.get("cursor")
    if not cursor:
        return None
    position = decode_cursor(cursor, "desc")
    if not position.isdigit():
        raise BadRequest("the cursor is not one this API returned", code="invalid_cursor")
    return int(position)


routes = [
    Route("/devices/{device_id}/commands", create_command, methods=["POST"]),
    Route("/devices/{device_id}/commands", list_commands, methods=["GET"]),
    Route("/commands/{command_id}", get_command, methods=["GET"]),
    Route("/commands/{command_id}", cancel_command, methods=["DELETE"]),
]
