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

AGGREGATE_PARAMS = (
    Param("metric", {"type": "string"}, "comma-separated metric names; all when left out"),
    Param("from", TIME, "the first bucket is the one containing this time", required=True),
    Param("to", TIME, "the last bucket is the one containing this time", required=True),
    Param(
        "interval",
        {"type": "string", "examples": ["10s", "5m", "1h", "48h", "1d", "1w", "1mo"]},
        "bucket width: <n>s, <n>m or <n>h (any multiple of 1 s), or a local calendar day, week or month",
        required=True,
    ),
    Param(
        "fn",
        {"type": "string", "default": "avg", "examples": ["avg", "count,min,max"]},
        "comma list of count, sum, min, max, avg",
    ),
    Param("tz", {"type": "string", "default": "UTC", "examples": ["Europe/Rome"]}, "IANA zone of 1d, 1w, 1mo"),
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
        "id": {
            "type": "string",
            "description": "the event's place in the log: its stream id, or `<stream id>/<stream>` when the "
            "organization's log is partitioned (TELEHUB_PARTITIONS above 1)",
        },
        "type": {"type": "string", "examples": ["device.online"]},
        "device_id": {"type": "string"},
        "created_at": TIMESTAMP,
        "data": {"type": "object"},
    },
    required=["id", "type", "device_id", "created_at", "data"],
    title="Event",
)
EVENTS_PAGE = cursor_list(EVENT)

NUMBER = {"type": "number"}
# A sum past the float range is infinite, which JSON cannot carry.
OVERFLOWING = {"type": ["number", "null"], "description": "null when the sum overflows the float range (±1.8e308)"}
AGGREGATE_ROW: Schema = obj(
    {
        "start": TIMESTAMP,
        "end": TIMESTAMP,
        "metric": {"type": "string"},
        "count": {"type": "integer"},
        "sum": OVERFLOWING,
        "min": NUMBER,
        "max": NUMBER,
        "avg": OVERFLOWING,
    },
    required=["start", "end", "metric"],
    title="AggregateBucket",
)
AGGREGATE_PAGE: Schema = obj(
    {
        "data": {"type": "array", "items": AGGREGATE_ROW},
        "meta": obj({"interval": {"type": "string"}, "tz": {"type": "string"}}, required=["interval", "tz"]),
    },
    required=["data", "meta"],
)
