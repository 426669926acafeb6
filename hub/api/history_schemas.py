"""OpenAPI schemas and query parameters of the history endpoints."""

from __future__ import annotations

from hub.api.schemas import TIMESTAMP, Schema, cursor_list, obj
from hub.api.spec import Param

TIME = {"type": "string", "description": "ISO 8601 (UTC if no offset) or integer milliseconds since the epoch"}
FROM = Param("from", TIME, "the earliest time included")
TO = Param("to", TIME, "the latest time included")
CURSOR = Param("cursor", {"type": "string"}, "meta.next_cursor of the previous page")
ORDER = Param("order", {"enum": ["asc", "desc"], "default": "asc"}, "oldest first (asc) or newest first")
METRIC = Param("metric", {"type": "string"}, "comma-separated metric names; all when left out")


def limit(default: int, maximum: int) -> Param:
    return Param("limit", {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}, "page size")


READINGS_PARAMS = (METRIC, FROM, TO, limit(100, 1000), CURSOR, ORDER)
LATEST_PARAMS = (METRIC,)
MESSAGES_PARAMS = (
    Param("type", {"enum": ["telemetry", "event", "command_result", "all"], "default": "all"}, "frame type"),
    FROM,
    TO,
    limit(50, 100),
    CURSOR,
    ORDER,
)
EVENTS_PARAMS = (
    Param("type", {"type": "string"}, "e.g. device.online, device.offline, device.event"),
    Param("device_id", {"type": "string"}, "only this device's events"),
    FROM,
    TO,
    limit(50, 100),
    CURSOR,
    ORDER,
)

READING: Schema = obj(
    {"ts": TIMESTAMP, "metric": {"type": "string"}, "value": {"type": "number"}},
    required=["ts", "metric", "value"],
    title="Reading",
)
READINGS_PAGE = cursor_list(READING)

LATEST: Schema = obj(
    {
        "data": {
            "type": "object",
            "additionalProperties": obj({"ts": TIMESTAMP, "value": {"type": "number"}}, required=["ts", "value"]),
        }
    },
    required=["data"],
)

MESSAGE: Schema = obj(
    {
        "id": {"type": "string", "description": "the stream id: the message's place in the device's history"},
        "type": {"enum": ["telemetry", "columns", "event", "command_result"]},
        "seq": {"type": ["integer", "null"]},
        "received_at": TIMESTAMP,
        "encoding": {"enum": ["msgpack", "json"]},
        "via": {"enum": ["websocket", "http"]},
        "frame": {"description": "the frame as sent (binary columns shown as number lists)"},
    },
    required=["id", "type", "seq", "received_at", "encoding", "via", "frame"],
    title="Message",
)
MESSAGES_PAGE = cursor_list(MESSAGE)

EVENT: Schema = obj(
    {
        "id": {"type": "string"},
        "type": {"type": "string", "examples": ["device.online"]},
        "device_id": {"type": "string"},
        "created_at": TIMESTAMP,
        "data": {"type": "object"},
    },
    required=["id", "type", "device_id", "created_at", "data"],
    title="Event",
)
EVENTS_PAGE = cursor_list(EVENT)
