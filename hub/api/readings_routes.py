"""``POST /devices/{id}/readings``: telemetry over HTTP (JSON or MessagePack), stored before the 202."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from hub.api.http import JSONResponse, principal_of, raw_body
from hub.api.spec import operation
from hub.auth.principal import Role
from hub.clock import now_ms
from hub.errors import BadRequest, NotFound, Unavailable, UnsupportedMediaType
from hub.services import Services
from ingest.codec import FrameError
from ingest.http_ingest import ReadingsNotStored, store_readings
from ingest.limits import FrameLimits
from ingest.ports import DeviceIdentity

__all__ = ["routes"]

STORE_TIMEOUT_S = 10.0
MEDIA_TYPES = {"application/json": False, "application/msgpack": True, "application/x-msgpack": True}

METRICS = {"type": "object", "additionalProperties": {"type": ["number", "boolean"]}, "minProperties": 1}
READINGS_BODY = {
    "type": "object",
    "description": "a telemetry frame body without type and seq: {ts?, metrics} or {points: [{ts?, metrics}]}",
    "properties": {
        "ts": {"type": "integer", "description": "milliseconds since the epoch; the server's time if left out"},
        "metrics": METRICS,
        "points": {
            "type": "array",
            "items": {"type": "object", "properties": {"ts": {"type": "integer"}, "metrics": METRICS}},
        },
    },
    "additionalProperties": False,
}
ACCEPTED = {
    "type": "object",
    "properties": {"accepted": {"type": "integer", "description": "data points stored"}},
    "required": ["accepted"],
    "additionalProperties": False,
}


@operation(
    summary="Send telemetry over HTTP; answered once it is stored",
    tag="readings",
    body=READINGS_BODY,
    body_media_types=("application/msgpack",),
    responses={202: ACCEPTED},
    errors=(400, 403, 404, 413, 415, 503),
    description="With a device key, only for its own device; otherwise operator or above. HTTP readings carry "
    "no seq, so a retried request may store its readings twice.",
)
async def post_readings(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    principal = principal_of(request)
    device_id: str = request.path_params["device_id"]
    if principal.kind == "device":
        if principal.device_id != device_id:
            raise NotFound(f"no device {device_id}")
    else:
        principal.require(Role.OPERATOR)
        await services.devices.get(principal.org_id, device_id)
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media_type not in MEDIA_TYPES:
        raise UnsupportedMediaType("send application/json or application/msgpack")
    body = await raw_body(request, limit=services.config.max_body_bytes)
    ingest = request.app.state.device_ingest
    try:
        accepted = await store_readings(
            ingest.flusher,
            DeviceIdentity(principal.org_id, device_id),
            body,
            binary=MEDIA_TYPES[media_type],
            now_ms=now_ms(),
            limits=FrameLimits(max_frame_bytes=services.config.max_body_bytes),
            timeout_s=STORE_TIMEOUT_S,
        )
    except FrameError as exc:
        raise BadRequest(exc.message, code=exc.code) from None
    except ReadingsNotStored:
        raise Unavailable("the readings were not confirmed stored in time; retry later") from None
    return JSONResponse({"accepted": accepted}, status_code=202)


routes = [Route("/devices/{device_id}/readings", post_readings, methods=["POST"])]
