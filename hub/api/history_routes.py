"""History: ``GET /devices/{id}/readings``, ``readings/latest``, ``messages`` and the org's ``GET /events``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.routing import Route

from hub.api import history_schemas as hs
from hub.api.cursors import Order, cursor_page, decode_cursor, order_param
from hub.api.http import JSONResponse, int_param, principal_of
from hub.api.spec import operation
from hub.auth.principal import Role
from hub.clock import iso_ms, parse_time_ms
from hub.errors import BadRequest, NotFound, ValidationFailed
from hub.services import Services
from ingest import stream_keys
from ingest.history import FrameRecord, HistoryReader, Position
from ingest.limits import FrameLimits

__all__ = ["routes"]

# A request reads at most this many frames; a page that needs more ends early with a cursor to go on.
MAX_SCAN_FRAMES = 20_000
LATEST_WINDOW_FRAMES = 10_000
MESSAGE_TYPES = {
    "telemetry": {"telemetry", "columns", "readings"},
    "event": {"event"},
    "command_result": {"command_result"},
}
FUTURE_MS = FrameLimits().future_ms


async def device_for_reading(request: Request, *, devices_may_read: bool) -> tuple[str, str]:
    """(org id, device id) the caller may read: viewers and up, or the device itself where allowed."""
    services: Services = request.app.state.services
    principal = principal_of(request)
    device_id: str = request.path_params["device_id"]
    if principal.kind == "device":
        if not devices_may_read:
            principal.require(Role.VIEWER)
        if principal.device_id != device_id:
            raise NotFound(f"no device {device_id}")
        return principal.org_id, device_id
    principal.require(Role.VIEWER)
    await services.devices.get(principal.org_id, device_id)
    return principal.org_id, device_id


def _reader(request: Request) -> HistoryReader:
    return HistoryReader(request.app.state.device_ingest.frames_redis)


def time_param(request: Request, name: str, errors: dict[str, str]) -> int | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return parse_time_ms(raw)
    except ValueError:
        errors[name] = "must be an ISO 8601 time or integer milliseconds"
        return None


def _common(request: Request, default: int, maximum: int) -> tuple[int | None, int | None, int, Order]:
    errors: dict[str, str] = {}
    start, end = time_param(request, "from", errors), time_param(request, "to", errors)
    limit = int_param(request, "limit", default, 1, maximum, errors)
    order = order_param(request, errors)
    if start is not None and end is not None and start > end:
        errors["from"] = "must not be after to"
    if errors:
        raise ValidationFailed(errors)
    return start, end, limit, order


def _position(request: Request, order: Order) -> Position | None:
    cursor = request.query_params.get("cursor")
    if not cursor:
        return None
    try:
        return Position.decode(decode_cursor(cursor, order))
    except ValueError:
        raise BadRequest("the cursor is not one this API returned", code="invalid_cursor") from None


@operation(
    summary="A device's data points, in the order stored",
    tag="history",
    query=hs.READINGS_PARAMS,
    responses={200: hs.READINGS_PAGE},
    errors=(400, 403, 404),
)
async def list_readings(request: Request) -> JSONResponse:
    org_id, device_id = await device_for_reading(request, devices_may_read=True)
    start, end, limit, order = _common(request, 100, 1000)
    position = _position(request, order)
    wanted = metric_filter(request)
    data: list[dict[str, Any]] = []
    scanned = 0
    next_position: Position | None = None
    frames = _reader(request).frames(
        org_id,
        device_id,
        start_ms=None if start is None else start - FUTURE_MS,
        end_ms=None,
        order=order,
        after=position.stream_id if position else None,
        inclusive=True,
    )
    async for record in frames:
        skip = position.index if position and record.stream_id == position.stream_id else 0
        if len(data) >= limit:  # the page filled exactly at the end of the previous frame
            next_position = Position(record.stream_id, skip)
            break
        scanned += 1
        taken, resume = _samples(record, order, skip, start, end, wanted, limit - len(data))
        data.extend(taken)
        if resume is not None:
            next_position = Position(record.stream_id, resume)
            break
        if scanned >= MAX_SCAN_FRAMES:
            next_position = Position(record.stream_id, 1 << 30)
            break
    return JSONResponse(cursor_page(data, limit=limit, next_position=_encoded(next_position), order=order))


def _samples(
    record: FrameRecord,
    order: Order,
    skip: int,
    start: int | None,
    end: int | None,
    wanted: set[str] | None,
    room: int,
) -> tuple[list[dict[str, Any]], int | None]:
    """The matching samples of one frame in walking order after ``skip``; and where to resume if ``room`` ran out."""
    frame = record.telemetry()
    if frame is None:
        return [], None
    samples = frame.samples
    n = len(samples)
    walk = np.arange(n) if order == "asc" else np.arange(n - 1, -1, -1)
    mask = np.ones(n, dtype=bool)
    if start is not None:
        mask &= samples.ts >= start
    if end is not None:
        mask &= samples.ts <= end
    if wanted is not None:
        allowed = np.array([name in wanted for name in samples.names], dtype=bool)
        mask &= allowed[samples.metric]
    steps = np.nonzero(mask[walk])[0]
    steps = steps[steps >= skip]
    chosen = steps[:room]
    rows = [
        {"ts": iso_ms(int(samples.ts[i])), "metric": samples.names[samples.metric[i]], "value": float(samples.value[i])}
        for i in walk[chosen]
    ]
    resume = int(chosen[-1]) + 1 if len(steps) > room else None
    return rows, resume


def metric_filter(request: Request) -> set[str] | None:
    raw = request.query_params.get("metric")
    return {name for name in raw.split(",") if name} if raw else None


def _encoded(position: Position | None) -> str | None:
    return position.encode() if position is not None else None


@operation(
    summary="The latest value of each metric (within the device's last 10,000 frames)",
    tag="history",
    query=hs.LATEST_PARAMS,
    responses={200: hs.LATEST},
    errors=(403, 404),
)
async def latest_readings(request: Request) -> JSONResponse:
    org_id, device_id = await device_for_reading(request, devices_may_read=True)
    wanted = metric_filter(request)
    latest: dict[str, tuple[int, float]] = {}
    scanned = 0
    async for record in _reader(request).frames(
        org_id, device_id, start_ms=None, end_ms=None, order="desc", after=None
    ):
        frame = record.telemetry()
        if frame is not None:
            s = frame.samples
            for i in range(len(s)):
                name = s.names[s.metric[i]]
                if (wanted is None or name in wanted) and int(s.ts[i]) >= latest.get(name, (-1, 0.0))[0]:
                    latest[name] = (int(s.ts[i]), float(s.value[i]))
        scanned += 1
        if scanned >= LATEST_WINDOW_FRAMES:
            break
    data = {name: {"ts": iso_ms(ts), "value": value} for name, (ts, value) in sorted(latest.items())}
    return JSONResponse({"data": data})


@operation(
    summary="Every frame the device sent, as received",
    tag="history",
    query=hs.MESSAGES_PARAMS,
    responses={200: hs.MESSAGES_PAGE},
    errors=(400, 403, 404),
)
async def list_messages(request: Request) -> JSONResponse:
    org_id, device_id = await device_for_reading(request, devices_may_read=False)
    start, end, limit, order = _common(request, 50, 100)
    kind = request.query_params.get("type", "all")
    if kind != "all" and kind not in MESSAGE_TYPES:
        raise ValidationFailed({"type": "must be telemetry, event, command_result or all"})
    kinds = None if kind == "all" else MESSAGE_TYPES[kind]
    position = _position(request, order)
    records = _reader(request).frames(
        org_id, device_id, start_ms=start, end_ms=end, order=order, after=position.stream_id if position else None
    )
    page = await _stream_page(
        ((Position(r.stream_id), _message(r) if kinds is None or r.kind in kinds else None) async for r in records),
        limit,
    )
    return JSONResponse(cursor_page(page[0], limit=limit, next_position=page[1], order=order))


async def _stream_page(
    items: AsyncIterator[tuple[Position, dict[str, Any] | None]], limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` kept items (None: filtered out) of a stream walk, and the position to go on from."""
    data: list[dict[str, Any]] = []
    scanned = 0
    async for position, item in items:
        scanned += 1
        if item is not None:
            data.append(item)
        if len(data) >= limit or scanned >= MAX_SCAN_FRAMES:
            return data, position.encode()
    return data, None


def _message(record: FrameRecord) -> dict[str, Any]:
    return {
        "id": record.stream_id,
        "type": "telemetry" if record.kind == "readings" else record.kind,
        "seq": record.seq or None,
        "received_at": iso_ms(record.received_ms),
        "encoding": "msgpack" if record.binary else "json",
        "via": "http" if record.kind == "readings" else "websocket",
        "frame": record.content(),
    }


@operation(
    summary="The organization's event log",
    tag="history",
    query=hs.EVENTS_PARAMS,
    responses={200: hs.EVENTS_PAGE},
    errors=(400, 403),
)
async def list_events(request: Request) -> JSONResponse:
    principal = principal_of(request)
    principal.require(Role.VIEWER)
    start, end, limit, order = _common(request, 50, 100)
    position = _position(request, order)
    wanted_type = request.query_params.get("type") or None
    wanted_device = request.query_params.get("device_id") or None

    def keep(event: dict[str, Any]) -> dict[str, Any] | None:
        matches = (wanted_type is None or event["type"] == wanted_type) and (
            wanted_device is None or event["device_id"] == wanted_device
        )
        return event if matches else None

    events = _reader(request).events(
        principal.org_id, start_ms=start, end_ms=end, order=order, after=position, device_id=wanted_device
    )
    merged = len(stream_keys.org_event_streams(principal.org_id)) > 1
    page = await _stream_page(((at, keep(_event(at, fields, merged))) async for at, fields in events), limit)
    return JSONResponse(cursor_page(page[0], limit=limit, next_position=page[1], order=order))


def _event(position: Position, fields: dict[bytes, bytes], merged: bool) -> dict[str, Any]:
    """An entry of the event log as ``GET /events`` lists it. Its id is its entry id, and with several
    streams in the log (partitions) ``<entry id>/<stream index>``, which two streams cannot share."""
    stream_id = position.stream_id
    kind = fields[b"e"].decode()
    raw = fields[b"f"]
    payload: Any = FrameRecord(stream_id, "event", 0, fields[b"b"] == b"1", raw).content()
    if kind == "device.event" and isinstance(payload, dict):
        data = {k: payload.get(k) for k in ("name", "data", "ts", "seq")}
    else:
        data = {k: v for k, v in payload.items() if k not in ("type", "device_id")} if isinstance(payload, dict) else {}
    return {
        "id": position.encode() if merged else stream_id,
        "type": kind,
        "device_id": fields[b"d"].decode(),
        "created_at": iso_ms(int(stream_id.split("-", 1)[0])),
        "data": data,
    }


routes = [
    Route("/devices/{device_id}/readings", list_readings, methods=["GET"]),
    Route("/devices/{device_id}/readings/latest", latest_readings, methods=["GET"]),
    Route("/devices/{device_id}/messages", list_messages, methods=["GET"]),
    Route("/events", list_events, methods=["GET"]),
]
