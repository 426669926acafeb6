"""``/devices``: the organization's device registry and device key rotation (operator writes, viewer reads)."""

from __future__ import annotations

from typing import Any, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.alerts.service import Alerts
from hub.api import device_schemas as ds
from hub.api.http import JSONResponse, json_body, offset_page, page_params, raw_body, require_role
from hub.api.idempotency import IDEMPOTENCY_KEY_PARAM, idempotent
from hub.api.schemas import offset_list
from hub.api.spec import operation
from hub.api.validation import BodyReader
from hub.auth.principal import Role
from hub.errors import NotFound, ValidationFailed
from hub.registry.devices import DEVICE_ID_PATTERN, DEVICE_TYPE_PATTERN, EDITABLE_FIELDS, STATUSES, DeviceFields
from hub.services import Services

__all__ = ["read_device_fields", "routes"]

# A device body is small (metadata is at most 8 KiB); anything past this is refused before parsing.
DEVICE_BODY_LIMIT = 64 * 1024
# Fields that may be null (cleared); name and type may not.
CLEARABLE_FIELDS = ("manufacturer", "model", "location", "metadata", "tags")


@operation(
    summary="Register a device",
    tag="devices",
    body=ds.DEVICE_CREATE,
    responses={201: ds.DEVICE},
    headers=(IDEMPOTENCY_KEY_PARAM,),
    errors=(400, 403, 409, 413, 415),
    description=(
        "409 `device_exists` when the id is taken in the organization. With an Idempotency-Key: "
        "409 `idempotency_key_reused` (another body) or `idempotency_in_progress` (first attempt still running)."
    ),
)
async def create_device(request: Request) -> Response:
    principal = require_role(request, Role.OPERATOR)
    services: Services = request.app.state.services

    async def create() -> Response:
        body = await device_body(request)
        reader = BodyReader(body, allowed=("id", *EDITABLE_FIELDS))
        device_id = reader.string("id", max_len=64, pattern=DEVICE_ID_PATTERN)
        fields = read_device_fields(reader, partial=False)
        device = await services.devices.create(principal.org_id, fields, device_id=device_id)
        return JSONResponse(device, status_code=201)

    return await idempotent(request, principal, create)


@operation(
    summary="List the organization's devices in creation order",
    tag="devices",
    query=ds.DEVICE_LIST_QUERY,
    responses={200: offset_list(ds.DEVICE)},
    errors=(400, 403),
    description="`meta.total` counts the devices that match the filters.",
)
async def list_devices(request: Request) -> JSONResponse:
    principal = require_role(request, Role.VIEWER)
    services: Services = request.app.state.services
    errors: dict[str, Any] = {}
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        errors["status"] = "must be online or offline"
    device_type = request.query_params.get("type") or None
    if device_type is not None and (len(device_type) > ds.TYPE_MAX or not DEVICE_TYPE_PATTERN.fullmatch(device_type)):
        errors["type"] = f"must match {DEVICE_TYPE_PATTERN.pattern}, at most {ds.TYPE_MAX} characters"
    name_contains = request.query_params.get("q") or None
    if name_contains is not None and len(name_contains) > ds.NAME_MAX:
        errors["q"] = f"must be at most {ds.NAME_MAX} characters"
    limit, offset = 0, 0
    try:
        limit, offset = page_params(request)
    except ValidationFailed as exc:
        errors.update(exc.details)
    if errors:
        raise ValidationFailed(dict(sorted(errors.items())))
    devices, total = await services.devices.list(
        principal.org_id,
        status=status,
        device_type=device_type,
        name_contains=name_contains,
        limit=limit,
        offset=offset,
    )
    return JSONResponse(offset_page(devices, total=total, limit=limit, offset=offset))


@operation(summary="Get a device", tag="devices", responses={200: ds.DEVICE}, errors=(403, 404))
async def get_device(request: Request) -> JSONResponse:
    principal = require_role(request, Role.VIEWER)
    services: Services = request.app.state.services
    return JSONResponse(await services.devices.get(principal.org_id, request.path_params["device_id"]))


@operation(
    summary="Update a device: only the fields sent change",
    tag="devices",
    body=ds.DEVICE_UPDATE,
    responses={200: ds.DEVICE},
    errors=(400, 403, 404, 413, 415),
)
async def update_device(request: Request) -> JSONResponse:
    return await _update(request)


@operation(
    summary="Update a device (a synonym of PATCH: partial, only the fields sent change)",
    tag="devices",
    body=ds.DEVICE_UPDATE,
    responses={200: ds.DEVICE},
    errors=(400, 403, 404, 413, 415),
)
async def replace_device(request: Request) -> JSONResponse:
    return await _update(request)


async def _update(request: Request) -> JSONResponse:
    principal = require_role(request, Role.OPERATOR)
    services: Services = request.app.state.services
    device_id: str = request.path_params["device_id"]
    reader = BodyReader(await device_body(request), allowed=("id", *EDITABLE_FIELDS))
    if reader.has("id") and reader.body["id"] != device_id:
        reader.errors["id"] = "is immutable: it cannot be changed"
    changes = read_device_fields(reader, partial=True)
    return JSONResponse(await services.devices.update(principal.org_id, device_id, changes))


@operation(
    summary="Delete a device; its key is revoked and its connection closed",
    tag="devices",
    responses={204: None},
    errors=(403, 404),
    description="Its open alerts are resolved now (`alert.resolved`).",
)
async def delete_device(request: Request) -> Response:
    principal = require_role(request, Role.OPERATOR)
    services: Services = request.app.state.services
    alerts: Alerts = request.app.state.device_ingest.alerts
    device_id: str = request.path_params["device_id"]
    try:
        await services.devices.delete(principal.org_id, device_id)
    except NotFound:
        # Also for a device that is gone: a DELETE retried after failing between the two writes finishes the job.
        await alerts.store.device_deleted(principal.org_id, device_id)
        raise
    await alerts.store.device_deleted(principal.org_id, device_id)
    return Response(status_code=204)


@operation(
    summary="Issue a new device key; the old key stops working at once and its connection is closed",
    tag="devices",
    responses={201: ds.DEVICE_KEY},
    errors=(403, 404),
)
async def rotate_device_key(request: Request) -> JSONResponse:
    principal = require_role(request, Role.OPERATOR)
    services: Services = request.app.state.services
    device_key = await services.devices.rotate_key(principal.org_id, request.path_params["device_id"])
    return JSONResponse({"device_key": device_key}, status_code=201)


async def device_body(request: Request) -> dict[str, Any]:
    """The JSON body of a device write: 413 past DEVICE_BODY_LIMIT, 415 / 400 as for every JSON body."""
    await raw_body(request, limit=DEVICE_BODY_LIMIT)
    return await json_body(request)


def read_device_fields(reader: BodyReader, *, partial: bool) -> DeviceFields:
    """The editable fields of a create (name and type required) or of a partial update; 400 with details."""
    fields: dict[str, Any] = {}
    for name, max_len, pattern in (("name", ds.NAME_MAX, None), ("type", ds.TYPE_MAX, DEVICE_TYPE_PATTERN)):
        if partial and not reader.has(name):
            continue
        if reader.has(name) and reader.body[name] is None:
            reader.errors[name] = "cannot be null"
            continue
        fields[name] = reader.string(name, required=True, max_len=max_len, pattern=pattern)
    for name in ("manufacturer", "model"):
        fields[name] = reader.string(name, max_len=ds.VENDOR_MAX, nullable=True)
    fields["location"] = _location(reader)
    fields["metadata"] = reader.json_object("metadata", max_bytes=ds.METADATA_MAX_BYTES)
    fields["tags"] = reader.string_list("tags", max_items=ds.TAGS_MAX, max_len=ds.TAG_MAX)
    reader.finish()
    if partial:
        fields = {name: value for name, value in fields.items() if reader.has(name)}
    else:
        fields = {name: value for name, value in fields.items() if value is not None}
    return cast(DeviceFields, fields)


def _location(reader: BodyReader) -> str | dict[str, Any] | None:
    value = reader.body.get("location")
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) > ds.LOCATION_TEXT_MAX:
            reader.errors["location"] = f"as text, must be at most {ds.LOCATION_TEXT_MAX} characters"
        return value
    if isinstance(value, dict):
        if len(orjson.dumps(value)) > ds.LOCATION_OBJECT_MAX_BYTES:
            reader.errors["location"] = f"as an object, must be at most {ds.LOCATION_OBJECT_MAX_BYTES} bytes as JSON"
        return value
    reader.errors["location"] = "must be a string or an object"
    return None


routes = [
    Route("/devices", create_device, methods=["POST"]),
    Route("/devices", list_devices, methods=["GET"]),
    Route("/devices/{device_id}", get_device, methods=["GET"]),
    Route("/devices/{device_id}", update_device, methods=["PATCH"]),
    Route("/devices/{device_id}", replace_device, methods=["PUT"]),
    Route("/devices/{device_id}", delete_device, methods=["DELETE"]),
    Route("/devices/{device_id}/keys", rotate_device_key, methods=["POST"]),
]
