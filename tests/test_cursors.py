"""Cursor pagination: opaque, order-bound, and every page walk sees each item exactly once."""

from __future__ import annotations

import pytest

from hub.api.cursors import cursor_page, decode_cursor, encode_cursor
from hub.errors import BadRequest


def test_a_cursor_round_trips_its_position() -> None:
    cursor = encode_cursor("1763800000123-7", "asc")
    assert "1763800000123" not in cursor  # opaque, not the raw id
    assert decode_cursor(cursor, "asc") == "1763800000123-7"


@pytest.mark.parametrize("bad", ["", "!!!", "bm90IGpzb24", encode_cursor("x", "asc")[:-3], "a" * 600])
def test_malformed_cursors_are_invalid_cursor(bad: str) -> None:
    with pytest.raises(BadRequest) as error:
        decode_cursor(bad, "asc")
    assert error.value.code == "invalid_cursor"
    assert error.value.status == 400


def test_a_cursor_is_bound_to_its_order() -> None:
    with pytest.raises(BadRequest, match="other order"):
        decode_cursor(encode_cursor("5-0", "asc"), "desc")


def test_walking_pages_visits_every_item_once() -> None:
    items = [f"{ms}-0" for ms in range(1000, 1023)]

    def page(cursor: str | None, limit: int) -> dict[str, object]:
        start = items.index(decode_cursor(cursor, "asc")) + 1 if cursor else 0
        chunk = items[start : start + limit]
        more = start + limit < len(items)
        return cursor_page(chunk, limit=limit, next_position=chunk[-1] if more else None, order="asc")

    seen: list[str] = []
    cursor = None
    while True:
        reply = page(cursor, 5)
        seen.extend(reply["data"])  # type: ignore[arg-type]
        cursor = reply["meta"]["next_cursor"]  # type: ignore[index]
        if cursor is None:
            break
    assert seen == items
    assert page(None, 50)["meta"] == {"limit": 50, "next_cursor": None}
