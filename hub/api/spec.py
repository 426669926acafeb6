"""OpenAPI metadata declared beside each endpoint, so the document cannot drift from the routes.

``@operation(...)`` attaches an :class:`Operation` to an endpoint function; ``hub.api.openapi`` walks the
app's routes and builds the OpenAPI 3.1 document from them. Schemas are plain JSON Schema dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["Operation", "Param", "operation", "operation_of"]

Schema = dict[str, Any]
F = TypeVar("F", bound=Callable[..., Any])
ATTRIBUTE = "__telehub_operation__"


@dataclass(frozen=True)
class Param:
    name: str
    schema: Schema
    description: str = ""
    required: bool = False
    location: str = "query"


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    # status -> response body schema (None: no body, e.g. 204)
    responses: dict[int, Schema | None]
    body: Schema | None = None
    # Extra media types the body may also be sent as (e.g. application/msgpack), same schema.
    body_media_types: tuple[str, ...] = ()
    query: tuple[Param, ...] = ()
    # Error statuses this operation may answer besides the common 401/429/500.
    errors: tuple[int, ...] = ()
    # False for the few unauthenticated endpoints (login, provision, health).
    auth: bool = True
    description: str = ""
    headers: tuple[Param, ...] = field(default=())
    # Media type of the declared response bodies (e.g. text/plain for the Prometheus page).
    response_media_type: str = "application/json"


def operation(**kwargs: Any) -> Callable[[F], F]:
    spec = Operation(**kwargs)

    def attach(endpoint: F) -> F:
        setattr(endpoint, ATTRIBUTE, spec)
        return endpoint

    return attach


def operation_of(endpoint: Callable[..., Any]) -> Operation | None:
    found: Operation | None = getattr(endpoint, ATTRIBUTE, None)
    return found
