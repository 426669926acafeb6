"""Query parameters shared by several endpoints, as OpenAPI declarations."""

from __future__ import annotations

from hub.api.spec import Param

LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}, "page size")
OFFSET = Param("offset", {"type": "integer", "minimum": 0, "default": 0}, "items to skip")
LIST_PARAMS = (LIMIT, OFFSET)
