"""JSON Schemas of the device registry, registration token and provisioning bodies (for OpenAPI)."""

from __future__ import annotations

from hub.api.params import LIMIT, OFFSET
from hub.api.schemas import NULLABLE_TIMESTAMP, TIMESTAMP, Schema, obj
from hub.api.spec import Param
from hub.registry.provisioning import DEFAULT_DEVICE_TYPE, DEFAULT_TOKEN_TTL_S, MAX_TOKEN_TTL_S, MIN_TOKEN_TTL_S

# Limits of the device fields, shared with the validation in the routes.
NAME_MAX = 128
TYPE_MAX = 64
VENDOR_MAX = 128
LOCATION_TEXT_MAX = 256
LOCATION_OBJECT_MAX_BYTES = 1024
METADATA_MAX_BYTES = 8192
TAGS_MAX = 32
TAG_MAX = 64

DEVICE_ID: Schema = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$", "examples": ["boiler-7", "dev_x1Yz"]}
DEVICE_TYPE: Schema = {"type": "string", "pattern": "^[A-Za-z0-9._-]+$", "maxLength": TYPE_MAX}
LOCATION: Schema = {
    "description": (
        f"free text (at most {LOCATION_TEXT_MAX} characters) or an object such as "
        f'{{"lat": 48.85, "lon": 2.35}} (at most {LOCATION_OBJECT_MAX_BYTES} bytes as JSON); null when unset'
    ),
    "oneOf": [
        {"type": "string", "maxLength": LOCATION_TEXT_MAX},
        {"type": "object"},
        {"type": "null"},
    ],
}
METADATA: Schema = {
    "type": "object",
    "description": f"free-form; at most {METADATA_MAX_BYTES} bytes as JSON; {{}} when unset",
}
TAGS: Schema = {
    "type": "array",
    "items": {"type": "string", "minLength": 1, "maxLength": TAG_MAX},
    "maxItems": TAGS_MAX,
    "description": "duplicates are dropped; [] when unset",
}
NULLABLE_TEXT: Schema = {"type": ["string", "null"], "maxLength": VENDOR_MAX}

DEVICE: Schema = obj(
    {
        "id": DEVICE_ID,
        "name": {"type": "string"},
        "type": DEVICE_TYPE,
        "manufacturer": {"type": ["string", "null"]},
        "model": {"type": ["string", "null"]},
        "location": LOCATION,
        "metadata": METADATA,
        "tags": TAGS,
        "status": {"enum": ["online", "offline"], "description": "offline until the device connects"},
        "last_seen": {**NULLABLE_TIMESTAMP, "description": "the last frame from the device; null if never"},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    },
    required=[
        "id",
        "name",
        "type",
        "manufacturer",
        "model",
        "location",
        "metadata",
        "tags",
        "status",
        "last_seen",
        "created_at",
        "updated_at",
    ],
    title="Device",
)

_EDITABLE: dict[str, Schema] = {
    "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
    "type": DEVICE_TYPE,
    "manufacturer": NULLABLE_TEXT,
    "model": NULLABLE_TEXT,
    "location": LOCATION,
    "metadata": {**METADATA, "type": ["object", "null"]},
    "tags": {**TAGS, "type": ["array", "null"]},
}

DEVICE_CREATE: Schema = obj(
    {"id": {**DEVICE_ID, "description": "optional; unique in the organization; dev_… is made when absent"}} | _EDITABLE,
    required=["name", "type"],
    title="DeviceCreate",
)

DEVICE_UPDATE: Schema = {
    **obj(
        {"id": {**DEVICE_ID, "description": "immutable: may be sent only unchanged"}} | _EDITABLE,
        title="DeviceUpdate",
    ),
    "description": "only the fields sent change; null clears manufacturer, model, location, metadata and tags",
}

DEVICE_KEY: Schema = obj(
    {"device_key": {"type": "string", "description": "dk_…; shown only once; send as Authorization: Bearer"}},
    required=["device_key"],
)

DEVICE_LIST_QUERY = (
    Param("status", {"enum": ["online", "offline"]}, "only devices with this status"),
    Param("type", DEVICE_TYPE, "only devices of this type"),
    Param("q", {"type": "string", "maxLength": NAME_MAX}, "only devices whose name contains this (any case)"),
    LIMIT,
    OFFSET,
)

REGISTRATION_TOKEN_CREATE: Schema = obj(
    {
        "device_name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
        "type": {**DEVICE_TYPE, "default": DEFAULT_DEVICE_TYPE},
        "expires_in": {
            "type": "integer",
            "minimum": MIN_TOKEN_TTL_S,
            "maximum": MAX_TOKEN_TTL_S,
            "default": DEFAULT_TOKEN_TTL_S,
            "description": "seconds",
        },
    },
    required=["device_name"],
)

REGISTRATION_TOKEN: Schema = obj(
    {
        "token": {"type": "string", "description": "rtk_…; single use; shown only once"},
        "device_id": {**DEVICE_ID, "description": "the id the provisioned device will have"},
        "device_name": {"type": "string"},
        "provision_endpoint": {"type": "string", "format": "uri", "description": "where the device POSTs the token"},
        "expires_at": TIMESTAMP,
    },
    required=["token", "device_id", "device_name", "provision_endpoint", "expires_at"],
    title="RegistrationToken",
)

PROVISION_REQUEST: Schema = obj({"token": {"type": "string", "maxLength": 256}}, required=["token"])

PROVISIONED: Schema = obj(
    {
        "device_id": DEVICE_ID,
        "device_key": {"type": "string", "description": "dk_…; shown only once"},
        "ws_url": {"type": "string", "format": "uri", "description": "the device WebSocket, ws:// or wss://"},
    },
    required=["device_id", "device_key", "ws_url"],
    title="ProvisionedDevice",
)
