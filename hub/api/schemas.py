"""JSON Schemas of request and response bodies, shared by the endpoints' OpenAPI declarations."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

ROLES = ["admin", "operator", "viewer"]
TIMESTAMP: Schema = {"type": "string", "format": "date-time", "examples": ["2026-11-22T10:30:00.123Z"]}
NULLABLE_TIMESTAMP: Schema = {"type": ["string", "null"], "format": "date-time"}


def obj(properties: dict[str, Schema], *, required: list[str] | None = None, title: str = "") -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    if title:
        schema["title"] = title
    return schema


def offset_list(item: Schema) -> Schema:
    """The registry list envelope."""
    return obj(
        {
            "data": {"type": "array", "items": item},
            "meta": obj(
                {"total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"}},
                required=["total", "limit", "offset"],
            ),
        },
        required=["data", "meta"],
    )


def cursor_list(item: Schema) -> Schema:
    """The time-ordered list envelope."""
    return obj(
        {
            "data": {"type": "array", "items": item},
            "meta": obj(
                {"limit": {"type": "integer"}, "next_cursor": {"type": ["string", "null"]}},
                required=["limit", "next_cursor"],
            ),
        },
        required=["data", "meta"],
    )


ERROR: Schema = obj(
    {
        "error": obj(
            {
                "code": {"type": "string", "examples": ["validation_error"]},
                "message": {"type": "string"},
                "request_id": {"type": "string", "examples": ["req_5f2c0e4b9a1d7e3f6a8b0c2d"]},
                "details": {"type": "object"},
            },
            required=["code", "message", "request_id"],
        )
    },
    required=["error"],
    title="Error",
)

USER: Schema = obj(
    {
        "id": {"type": "string", "examples": ["usr_x1Yz"]},
        "email": {"type": "string", "format": "email"},
        "role": {"enum": ROLES},
        "org_id": {"type": "string"},
        "created_at": TIMESTAMP,
    },
    required=["id", "email", "role", "org_id", "created_at"],
    title="User",
)

LOGIN_REQUEST: Schema = obj(
    {"email": {"type": "string", "format": "email"}, "password": {"type": "string", "minLength": 1}},
    required=["email", "password"],
)

LOGIN_REPLY: Schema = obj(
    {
        "token": {"type": "string", "description": "a JWT (HS256); send as Authorization: Bearer <token>"},
        "expires_in": {"type": "integer", "description": "seconds"},
        "user": obj(
            {
                "id": {"type": "string"},
                "email": {"type": "string"},
                "role": {"enum": ROLES},
                "org_id": {"type": "string"},
            },
            required=["id", "email", "role", "org_id"],
        ),
    },
    required=["token", "expires_in", "user"],
)

ME: Schema = obj(
    {
        "kind": {"enum": ["user", "api_key", "device"]},
        "id": {"type": "string"},
        "org_id": {"type": "string"},
        "role": {"enum": [*ROLES, "device"]},
    },
    required=["kind", "id", "org_id", "role"],
)

USER_CREATE: Schema = obj(
    {
        "email": {"type": "string", "format": "email"},
        "password": {"type": "string", "minLength": 8, "maxLength": 1024},
        "role": {"enum": ROLES},
    },
    required=["email", "password", "role"],
)

API_KEY: Schema = obj(
    {
        "id": {"type": "string", "examples": ["key_x1Yz"]},
        "name": {"type": "string"},
        "role": {"enum": ROLES},
        "prefix": {"type": "string", "description": "the key's first characters, to tell keys apart"},
        "created_at": TIMESTAMP,
    },
    required=["id", "name", "role", "prefix", "created_at"],
    title="ApiKey",
)

API_KEY_CREATED: Schema = {
    **API_KEY,
    "properties": {**API_KEY["properties"], "key": {"type": "string", "description": "shown only once"}},
    "required": [*API_KEY["required"], "key"],
    "title": "ApiKeyCreated",
}

API_KEY_CREATE: Schema = obj(
    {"name": {"type": "string", "minLength": 1, "maxLength": 128}, "role": {"enum": ROLES}},
    required=["name", "role"],
)
