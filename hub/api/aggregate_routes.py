"""``GET /devices/{id}/readings/aggregate``: count, sum, min, max and avg per time bucket.

Buckets are whole: ``from`` is taken back to the start of its bucket and ``to`` (inclusive) on to the end of
its bucket, so a bucket reads the same whatever range asked for it. Buckets without samples are left out.
Fixed intervals (any multiple of 1 s) are aligned to the epoch; ``1d``, ``1w`` (from Monday) and ``1mo``
follow the local calendar of ``tz``, DST included. How the answer is assembled (stored windows plus raw
samples) is in ``ingest/aggregate_query.py``.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from aggregation import CalendarInterval, FixedInterval, Interval, IntervalError, TimeZoneError, parse_interval
from aggregation.calendar import DAY_MS, time_zone
from hub.api import history_schemas as hs
from hub.api.history_routes import device_for_reading, metric_filter, time_param
from hub.api.http import JSONResponse
from hub.api.spec import operation
from hub.clock import iso_ms
from hub.errors import ValidationFailed
from ingest.aggregate_query import AggregateQuery, AggregateReader

__all__ = ["MAX_BUCKETS", "routes"]

MAX_BUCKETS = 10_000
MAX_METRICS = 100
FUNCTIONS = ("count", "sum", "min", "max", "avg")
# The shortest a calendar bucket can be (a local day shortened by DST), to bound a range's bucket count
# before computing its edges.
_SHORTEST_MS = {"1d": DAY_MS - 3_600_000, "1w": 7 * DAY_MS - 3_600_000, "1mo": 28 * DAY_MS - 3_600_000}


@operation(
    summary="Aggregates of a device's readings per time bucket",
    tag="history",
    query=hs.AGGREGATE_PARAMS,
    responses={200: hs.AGGREGATE_PAGE},
    errors=(400, 403, 404),
    description=f"Equals aggregating the raw samples. Buckets are whole (`from` is taken back to its bucket's "
    f"start, `to` on to its bucket's end) and only buckets with samples are listed, sorted by start, then metric. "
    f"At most {MAX_BUCKETS:,} buckets per request. Fixed intervals are aligned to the epoch (UTC); 1d, 1w "
    f"(Monday to Monday) and 1mo follow local time in `tz`, DST included.",
)
async def aggregate_readings(request: Request) -> JSONResponse:
    org_id, device_id = await device_for_reading(request, devices_may_read=True)
    interval, tz, edges, functions = _query(request)
    wanted = metric_filter(request)
    ingest = request.app.state.device_ingest
    reader = AggregateReader(ingest.frames_redis, ingest.aggregation, ingest.limits)
    query = AggregateQuery(org_id, device_id, interval, tz, edges, None if wanted is None else frozenset(wanted))
    buckets = await reader.buckets(query)
    data = []
    # Many rows share a bucket: each edge is formatted once.
    times: dict[int, str] = {}
    for start, end, metric, count, total, low, high in buckets.rows():
        finite = math.isfinite(total)  # else null, as documented, rather than left to the JSON encoder
        values = {
            "count": count,
            "sum": total if finite else None,
            "min": low,
            "max": high,
            "avg": total / count if finite else None,
        }
        first = times.get(start) or times.setdefault(start, iso_ms(start))
        last = times.get(end) or times.setdefault(end, iso_ms(end))
        row: dict[str, Any] = {"start": first, "end": last, "metric": metric}
        row.update((name, values[name]) for name in functions)
        data.append(row)
    return JSONResponse({"data": data, "meta": {"interval": str(interval), "tz": tz}})


def _query(request: Request) -> tuple[Interval, str, Any, list[str]]:
    """Interval, time zone, bucket edges and functions, or 400 with every problem found."""
    params = request.query_params
    errors: dict[str, str] = {}
    start, end = time_param(request, "from", errors), time_param(request, "to", errors)
    for name in ("from", "to"):
        if not params.get(name):
            errors[name] = "is required: an ISO 8601 time or integer milliseconds"
    interval: Interval | None = None
    try:
        interval = parse_interval(params.get("interval", ""))
    except IntervalError as exc:
        errors["interval"] = str(exc) if params.get("interval") else "is required, e.g. 10s, 5m, 1h, 1d, 1w or 1mo"
    tz = params.get("tz") or "UTC"
    try:
        time_zone(tz)
    except TimeZoneError as exc:
        errors["tz"] = str(exc)
    functions = [name for name in (params.get("fn") or "avg").split(",") if name]
    unknown = sorted(set(functions) - set(FUNCTIONS))
    if unknown or not functions:
        errors["fn"] = f"unknown function(s) {', '.join(unknown)}: use a comma list of {', '.join(FUNCTIONS)}"
    metrics = metric_filter(request)
    if metrics is not None and len(metrics) > MAX_METRICS:
        errors["metric"] = f"at most {MAX_METRICS} metric names per request"
    if start is not None and end is not None and start > end:
        errors["from"] = "must not be after to"
    if errors or interval is None or start is None or end is None:
        raise ValidationFailed(errors)
    return interval, tz, _edges(interval, start, end, tz), list(dict.fromkeys(functions))


def _edges(interval: Interval, start: int, end: int, tz: str) -> Any:
    """Edges of the buckets meeting ``[start, end]``; 400 when there would be more than MAX_BUCKETS."""
    if isinstance(interval, FixedInterval):
        count = end // interval.width_ms - start // interval.width_ms + 1
    else:
        assert isinstance(interval, CalendarInterval)
        # An upper bound first, so a range of centuries is refused before its local days are computed.
        count = (end - start) // _SHORTEST_MS[interval.unit] + 2
        if count <= 2 * MAX_BUCKETS:
            count = len(interval.bucket_edges(start, end + 1, tz)) - 1
    if count > MAX_BUCKETS:
        raise ValidationFailed(
            {
                "interval": f"from..to at {interval} makes more than {MAX_BUCKETS:,} buckets: "
                "use a longer interval or a shorter range"
            }
        )
    return interval.bucket_edges(start, end + 1, tz)


routes = [Route("/devices/{device_id}/readings/aggregate", aggregate_readings, methods=["GET"])]
