"""Cursor pagination for time-ordered lists (API.md §1): ``?limit=&cursor=`` -> ``meta.next_cursor``.

A cursor is opaque to clients: the position after which the next page starts (a Redis stream id, or any
string the endpoint orders by) and the order it was read in, base64url-encoded. A cursor made for one order
is refused for the other, and anything that does not decode is 400 ``invalid_cursor``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from starlette.requests import Request

from hub.errors import BadRequest
from ingest.history import Order

__all__ = ["Order", "cursor_page", "decode_cursor", "encode_cursor", "order_param"]

VERSION = 1
MAX_CURSOR_CHARS = 512


def encode_cursor(position: str, order: Order) -> str:
    raw = orjson.dumps({"v": VERSION, "p": position, "o": order})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, order: Order) -> str:
    """The position a cursor stands for; 400 ``invalid_cursor`` for a malformed or other-order cursor."""
    try:
        if len(text) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        value = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(value, dict) or value.get("v") != VERSION or not isinstance(value.get("p"), str):
            raise ValueError("not a cursor")
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise BadRequest("the cursor is not one this API returned", code="invalid_cursor") from None
    if value.get("o") != order:
        raise BadRequest("the cursor was made for the other order; drop it or keep the order", code="invalid_cursor")
    position: str = value["p"]
    return position


def order_param(request: Request, errors: dict[str, str], *, default: Order = "asc") -> Order:
    """``order`` from the query string; a bad value is added to ``errors`` (reported with the others)."""
    raw = request.query_params.get("order", default)
    if raw not in ("asc", "desc"):
        errors["order"] = "must be asc or desc"
    return "desc" if raw == "desc" else "asc"


def cursor_page(data: list[Any], *, limit: int, next_position: str | None, order: Order) -> dict[str, Any]:
    """The time-ordered list envelope; ``next_position`` is where the next page starts (None: no more)."""
    next_cursor = encode_cursor(next_position, order) if next_position is not None else None
    return {"data": data, "meta": {"limit": limit, "next_cursor": next_cursor}}
