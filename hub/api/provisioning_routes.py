"""Zero-touch provisioning: registration tokens (operator) and ``POST /devices/provision`` (no auth)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from hub.api import device_schemas as ds
from hub.api.http import JSONResponse, json_body, require_role
from hub.api.spec import operation
from hub.api.validation import BodyReader
from hub.auth.principal import Role
from hub.registry.devices import DEVICE_TYPE_PATTERN
from hub.registry.provisioning import DEFAULT_TOKEN_TTL_S, MAX_TOKEN_TTL_S, MIN_TOKEN_TTL_S
from hub.services import Services

__all__ = ["routes"]

PROVISION_PATH = "/devices/provision"
# The device WebSocket, relative to the API root (API.md §4).
DEVICE_SOCKET_PATH = "/ws/device"
MAX_TOKEN_CHARS = 256


@operation(
    summary="Make a one-time registration token for a device that will provision itself",
    tag="provisioning",
    body=ds.REGISTRATION_TOKEN_CREATE,
    responses={201: ds.REGISTRATION_TOKEN},
    errors=(400, 403, 415),
)
async def create_registration_token(request: Request) -> JSONResponse:
    principal = require_role(request, Role.OPERATOR)
    services: Services = request.app.state.services
    reader = BodyReader(await json_body(request), allowed=("device_name", "type", "expires_in"))
    device_name = reader.string("device_name", required=True, max_len=ds.NAME_MAX)
    device_type = reader.string("type", max_len=ds.TYPE_MAX, pattern=DEVICE_TYPE_PATTERN)
    expires_in = reader.integer("expires_in", low=MIN_TOKEN_TTL_S, high=MAX_TOKEN_TTL_S, default=DEFAULT_TOKEN_TTL_S)
    reader.finish()
    assert device_name is not None and expires_in is not None
    token = await services.provisioning.create_token(
        org_id=principal.org_id, device_name=device_name, device_type=device_type, expires_in=expires_in
    )
    reply = {
        "token": token["token"],
        "device_id": token["device_id"],
        "device_name": token["device_name"],
        "provision_endpoint": provision_endpoint(request),
        "expires_at": token["expires_at"],
    }
    return JSONResponse(reply, status_code=201)


@operation(
    summary="Trade a registration token for the device's id and key (single use)",
    tag="provisioning",
    body=ds.PROVISION_REQUEST,
    responses={201: ds.PROVISIONED},
    errors=(400, 404, 409, 410, 415),
    auth=False,
    description=(
        "404 `not_found` for an unknown token; 410 `token_used` once it has been spent, `token_expired` past "
        "its expiry (answered for a week after it; later the token is unknown)."
    ),
)
async def provision_device(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    reader = BodyReader(await json_body(request), allowed=("token",))
    token = reader.string("token", required=True, max_len=MAX_TOKEN_CHARS)
    reader.finish()
    assert token is not None
    provisioned = await services.provisioning.provision(token)
    ws_url = api_root(request) + DEVICE_SOCKET_PATH
    ws_url = "ws" + ws_url.removeprefix("http")  # http -> ws, https -> wss
    return JSONResponse({**provisioned, "ws_url": ws_url}, status_code=201)


def provision_endpoint(request: Request) -> str:
    return api_root(request) + PROVISION_PATH


def api_root(request: Request) -> str:
    """The absolute URL of the API root: ``config.public_url`` if set, else the one this request came to."""
    here = request.url_for(provision_device.__name__)
    root_path = here.path.removesuffix(PROVISION_PATH)
    public_url: str = request.app.state.config.public_url
    if public_url:
        return public_url.rstrip("/") + root_path
    return str(here.replace(path=root_path))


routes = [
    Route("/devices/registration/tokens", create_registration_token, methods=["POST"]),
    Route(PROVISION_PATH, provision_device, methods=["POST"]),
]
