"""Field-by-field validation of JSON bodies, collecting every problem into one 400 ``details`` map."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from hub.errors import ValidationFailed

__all__ = ["BodyReader"]

_MISSING = object()


class BodyReader:
    """Read typed fields from a decoded JSON object; ``finish()`` raises 400 with all problems at once."""

    def __init__(self, body: dict[str, Any], *, allowed: Iterable[str]) -> None:
        self.body = body
        self.errors: dict[str, str] = {}
        for name in body:
            if name not in set(allowed):
                self.errors[name] = "unknown field"

    def has(self, name: str) -> bool:
        return name in self.body

    def string(
        self,
        name: str,
        *,
        required: bool = False,
        max_len: int = 256,
        pattern: re.Pattern[str] | None = None,
        choices: Iterable[str] | None = None,
        nullable: bool = False,
    ) -> str | None:
        value = self.body.get(name, _MISSING)
        if value is _MISSING or (value is None and nullable):
            if required:
                self.errors[name] = "is required"
            return None
        if not isinstance(value, str):
            self.errors[name] = "must be a string"
            return None
        if required and not value.strip():
            self.errors[name] = "must not be empty"
            return None
        if len(value) > max_len:
            self.errors[name] = f"must be at most {max_len} characters"
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.errors[name] = f"must match {pattern.pattern}"
            return None
        options = list(choices) if choices is not None else None
        if options is not None and value not in options:
            self.errors[name] = f"must be one of {', '.join(options)}"
            return None
        return value

    def integer(self, name: str, *, low: int, high: int, default: int | None = None) -> int | None:
        value = self.body.get(name, _MISSING)
        if value is _MISSING or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors[name] = "must be a whole number"
            return default
        if not low <= value <= high:
            self.errors[name] = f"must be from {low} to {high}"
            return default
        return value

    def json_object(self, name: str, *, max_bytes: int) -> dict[str, Any] | None:
        value = self.body.get(name, _MISSING)
        if value is _MISSING or value is None:
            return None
        if not isinstance(value, dict):
            self.errors[name] = "must be an object"
            return None
        if len(orjson.dumps(value)) > max_bytes:
            self.errors[name] = f"must be at most {max_bytes} bytes as JSON"
            return None
        return value

    def string_list(self, name: str, *, max_items: int, max_len: int) -> list[str] | None:
        value = self.body.get(name, _MISSING)
        if value is _MISSING or value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.errors[name] = "must be a list of strings"
            return None
        if len(value) > max_items:
            self.errors[name] = f"must have at most {max_items} items"
            return None
        if any(not item or len(item) > max_len for item in value):
            self.errors[name] = f"items must be 1 to {max_len} characters"
            return None
        return list(dict.fromkeys(value))

    def finish(self) -> None:
        if self.errors:
            raise ValidationFailed(dict(sorted(self.errors.items())))
