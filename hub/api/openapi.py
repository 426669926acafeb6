"""The OpenAPI 3.1 document, built by walking the app's routes and reading each endpoint's ``@operation``.

Every HTTP route must either carry ``@operation`` or be marked :func:`undocumented` (only the docs pages
themselves are); anything else makes :func:`build_document` raise :class:`UndocumentedRouteError`, so the
document cannot silently miss a route. WebSocket routes are not HTTP operations and are left out (API.md §4-5
describe them). Titled schemas (``"title": "User"``) become ``components/schemas`` entries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from hub import __version__
from hub.api import schemas
from hub.api.spec import Operation, Param, Schema, operation_of

__all__ = [
    "HTTPOperation",
    "UndocumentedRouteError",
    "build_document",
    "document_of",
    "http_operations",
    "is_undocumented",
    "openapi_path",
    "undocumented",
]

OPENAPI_VERSION = "3.1.0"
R = TypeVar("R", bound=BaseRoute)

SECURITY_SCHEME: Schema = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT, sk_live_… or dk_…",
    "description": (
        "`Authorization: Bearer <credential>`, where the credential is one of:\n\n"
        "- a **user JWT** from `POST /api/v1/auth/login` (HS256, valid 24 h by default; claims `sub`, `org`, "
        "`role`, `jti`);\n"
        "- an **API key** `sk_live_…` from `POST /api/v1/api-keys`: organization-scoped, with a role, shown "
        "once, revocable;\n"
        "- a **device key** `dk_…`: bound to one device, only for that device's ingest, commands and readings.\n\n"
        "Every credential belongs to one organization; other organizations' resources answer 404. "
        "Roles: `admin` > `operator` > `viewer`."
    ),
}

INFO_DESCRIPTION = (
    "Real-time IoT telemetry hub. JSON with `snake_case` keys; timestamps are ISO 8601 UTC strings.\n\n"
    '**Errors** answer `{"error": {"code", "message", "request_id", "details"}}` with the HTTP status; '
    "every response carries `X-Request-ID`.\n\n"
    "**Rate limits** apply per credential (per IP when unauthenticated); responses carry `X-RateLimit-Limit`, "
    "`X-RateLimit-Remaining` and `X-RateLimit-Reset`; over the limit: 429 `rate_limited` with `Retry-After`.\n\n"
    '**Lists** take `limit` and `offset` and answer `{"data": [...], "meta": {"total", "limit", "offset"}}`.\n\n'
    "**WebSockets** (not HTTP operations, so not listed below): devices stream frames to `GET /api/v1/ws/device` "
    "(device key; subprotocol `telehub.v1`; MessagePack or JSON frames acked once stored). Dashboards subscribe "
    "at `GET /api/v1/ws` (user JWT or API key in `Authorization`, or a first message "
    '`{"op": "auth", "token"}` within 5 s; JSON text frames, or MessagePack with subprotocol '
    "`telehub.v1.msgpack`): ops `subscribe` (`channel` with MQTT wildcards `+` and `#`, optional `since` "
    "`{offset, epoch}` or `last: N`), `unsubscribe`, `ping`; channels `devices/{id}/telemetry`, "
    "`devices/{id}/aggregates/{resolution}`, `devices/{id}/events`, `devices/{id}/commands`, `alerts`. "
    "Refused handshakes answer 401 `unauthenticated`, 429 `too_many_connections` or 503 `unavailable` in the "
    "error envelope; close codes: 4001 unauthenticated, 4008 slow consumer, 4029 too many connections, "
    "1012 server restart. The project README documents both protocols in full."
)

HEADERS: dict[str, Schema] = {
    "X-Request-ID": {
        "description": "The request's id (`req_…`), also in error bodies; quote it when reporting a problem.",
        "required": True,
        "schema": {"type": "string", "pattern": "^req_"},
    },
    "X-RateLimit-Limit": {
        "description": "Requests allowed per minute for this credential (or IP).",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in the current burst.",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Reset": {
        "description": "Unix time (seconds) when the bucket is full again.",
        "schema": {"type": "integer"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
}
COMMON_HEADERS = ("X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")

SUCCESS_DESCRIPTIONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content"}
# Error status -> (components/responses name, description); each answers the error envelope.
ERROR_RESPONSES = {
    400: ("BadRequest", "Invalid JSON or query, or validation failed (`details` maps each field to its problem)"),
    401: ("Unauthenticated", "No credential, or an invalid, expired or revoked one"),
    403: ("Forbidden", "The caller's role does not allow this"),
    404: ("NotFound", "Not found (another organization's resources answer this too)"),
    409: ("Conflict", "Conflicts with the current state"),
    410: ("Gone", "Gone"),
    413: ("PayloadTooLarge", "The body is larger than the limit"),
    415: ("UnsupportedMediaType", "The body's media type is not accepted"),
    429: ("RateLimited", "Rate limited (`rate_limited`): retry after `Retry-After` seconds"),
    500: ("InternalError", "Internal error; nothing internal is shown, the request id finds it in the logs"),
    503: ("Unavailable", "Unavailable"),
}


class UndocumentedRouteError(RuntimeError):
    """A route carries no ``@operation`` and is not marked :func:`undocumented`."""


def undocumented(route: R) -> R:
    """Leave ``route`` (a Route or a Mount) out of the document on purpose; Starlette's own flag is reused."""
    setattr(route, "include_in_schema", False)  # noqa: B010 (Mount has no such attribute of its own)
    return route


def is_undocumented(route: BaseRoute) -> bool:
    return getattr(route, "include_in_schema", True) is False


def openapi_path(path: str) -> str:
    """A Starlette path template as OpenAPI writes it: ``{id:int}`` becomes ``{id}``."""
    return re.sub(r"\{(\w+)(?::\w+)?\}", r"{\1}", path)


@dataclass(frozen=True)
class HTTPOperation:
    """One (path, method) of the app with its declaration."""

    path: str  # OpenAPI template, e.g. /api/v1/users/{user_id}
    method: str  # upper case, never HEAD
    endpoint: Callable[..., Any]
    spec: Operation


def http_operations(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[HTTPOperation]:
    """Every documented (path, method), Mounts entered; raises for a route that is neither declared nor excluded."""
    for route in routes:
        if is_undocumented(route) or isinstance(route, WebSocketRoute):
            continue
        if isinstance(route, Mount):
            if not route.routes:
                raise UndocumentedRouteError(f"{prefix}{route.path}: a mounted app the document cannot see into")
            yield from http_operations(route.routes, prefix + route.path)
            continue
        if not isinstance(route, Route) or route.methods is None:
            raise UndocumentedRouteError(f"{route!r}: only function Routes with methods can be documented")
        path = openapi_path(prefix + route.path)
        spec = operation_of(route.endpoint)
        if spec is None:
            name = getattr(route.endpoint, "__qualname__", repr(route.endpoint))
            methods = "/".join(sorted(route.methods - {"HEAD"}))
            raise UndocumentedRouteError(
                f"{methods} {path} ({name}) has no @operation; declare it or mark undocumented"
            )
        for method in sorted(route.methods - {"HEAD"}):
            yield HTTPOperation(path, method, route.endpoint, spec)


def document_of(app: Starlette) -> dict[str, Any]:
    """The app's document, built on first use and kept on ``app.state``."""
    document: dict[str, Any] | None = getattr(app.state, "openapi_document", None)
    if document is None:
        document = build_document(app.routes)
        app.state.openapi_document = document
    return document


def build_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing ``routes``."""
    operations = list(http_operations(routes))
    components = SchemaComponents()
    components.add(schemas.ERROR)
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    for op, operation_id in zip(operations, operation_ids(operations), strict=True):
        item = paths.setdefault(op.path, {})
        if op.method.lower() in item:
            raise ValueError(f"{op.method} {op.path} is routed twice; the second route is never reached")
        item[op.method.lower()] = operation_object(op, operation_id, components)
        if op.spec.tag not in tags:
            tags.append(op.spec.tag)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "telehub API", "version": __version__, "description": INFO_DESCRIPTION},
        "servers": [{"url": "/"}],
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "responses": components.responses,
            "headers": HEADERS,
            "securitySchemes": {"bearer": SECURITY_SCHEME},
        },
    }


def operation_ids(operations: list[HTTPOperation]) -> list[str]:
    """The endpoint function's name, plus the method when one function serves several; unique or raise."""
    methods_of: dict[Callable[..., Any], set[str]] = {}
    for op in operations:
        methods_of.setdefault(op.endpoint, set()).add(op.method)
    ids: list[str] = []
    for op in operations:
        name = getattr(op.endpoint, "__name__", "")
        if not name.isidentifier():
            raise UndocumentedRouteError(f"{op.method} {op.path}: the endpoint needs a function name")
        ids.append(f"{name}_{op.method.lower()}" if len(methods_of[op.endpoint]) > 1 else name)
    seen: set[str] = set()
    for op, operation_id in zip(operations, ids, strict=True):
        if operation_id in seen:
            raise ValueError(f"{op.method} {op.path}: operationId {operation_id!r} is taken; rename the function")
        seen.add(operation_id)
    return ids


def operation_object(op: HTTPOperation, operation_id: str, components: SchemaComponents) -> dict[str, Any]:
    spec = op.spec
    result: dict[str, Any] = {"operationId": operation_id, "summary": spec.summary, "tags": [spec.tag]}
    if spec.description:
        result["description"] = spec.description
    parameters = parameter_objects(op, components)
    if parameters:
        result["parameters"] = parameters
    if spec.body is not None:
        body_schema = components.lift(spec.body)
        media_types = ("application/json", *spec.body_media_types)
        result["requestBody"] = {"required": True, "content": {m: {"schema": body_schema} for m in media_types}}
    result["responses"] = response_objects(spec, components)
    result["security"] = [{"bearer": []}] if spec.auth else []
    return result


def parameter_objects(op: HTTPOperation, components: SchemaComponents) -> list[dict[str, Any]]:
    """Path parameters (required strings unless declared), then the declared query and header parameters."""
    declared = {(p.location, p.name): p for p in op.spec.query}
    declared.update({("header", p.name): p for p in op.spec.headers})
    for name in re.findall(r"\{(\w+)\}", op.path):
        declared.setdefault(("path", name), Param(name, {"type": "string"}, required=True, location="path"))
    path_first = sorted(declared.items(), key=lambda item: item[0][0] != "path")
    parameters = []
    for (location, name), param in path_first:
        parameter: dict[str, Any] = {
            "name": name,
            "in": location,
            "required": param.required or location == "path",
            "schema": components.lift(param.schema),
        }
        if param.description:
            parameter["description"] = param.description
        parameters.append(parameter)
    return parameters


def response_objects(spec: Operation, components: SchemaComponents) -> dict[str, Any]:
    """The declared responses, then a reference to the error envelope response for every error status."""
    responses: dict[str, Any] = {}
    for status, schema in sorted(spec.responses.items()):
        description = SUCCESS_DESCRIPTIONS.get(status) or ERROR_RESPONSES.get(status, ("", "Error"))[1]
        response: dict[str, Any] = {"description": description, "headers": header_refs(COMMON_HEADERS)}
        if schema is not None:
            response["content"] = {spec.response_media_type: {"schema": components.lift(schema)}}
        responses[str(status)] = response
    errors = {*spec.errors, 429, 500}
    if spec.auth:
        errors.add(401)
    if spec.body is not None:
        errors.update((400, 413, 415))  # the body reader's bad JSON, size limit and media type
    for status in sorted(errors - spec.responses.keys()):
        responses[str(status)] = {"$ref": f"#/components/responses/{components.error_response(status)}"}
    return responses


def header_refs(names: Sequence[str]) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


class SchemaComponents:
    """Collects titled schemas into ``components/schemas`` and replaces them with ``$ref``s."""

    # Keywords whose values are data, not subschemas.
    DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "example"})

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}
        self.responses: dict[str, Schema] = {}

    def error_response(self, status: int) -> str:
        """The name of the shared error response for ``status``, added on first use."""
        name, description = ERROR_RESPONSES.get(status, (f"Error{status}", "Error"))
        names = (*COMMON_HEADERS, "Retry-After") if status == 429 else COMMON_HEADERS
        self.responses[name] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            "headers": header_refs(names),
        }
        return name

    def add(self, schema: Schema) -> None:
        self.lift(schema)

    def lift(self, schema: Schema) -> Schema:
        lifted: Schema = {k: v if k in self.DATA_KEYWORDS else self._lift_any(v) for k, v in schema.items()}
        title = lifted.get("title")
        if not isinstance(title, str):
            return lifted
        name = re.sub(r"[^A-Za-z0-9._-]", "", title)
        known = self.schemas.setdefault(name, lifted)
        # Two different schemas under one title stay inline rather than share a name.
        return {"$ref": f"#/components/schemas/{name}"} if known == lifted else lifted

    def _lift_any(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self.lift(value)
        if isinstance(value, list):
            return [self._lift_any(item) for item in value]
        return value
