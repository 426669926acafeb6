"""Pure-numpy window aggregation: no I/O, no asyncio, nothing imported from ingest or hub.

- ``windows``: window assignment and the vectorized count/sum/min/max kernel; mergeable ``Partials``.
- ``state``: ``WindowState``, windows across micro-batches with per-device watermarks, idle timeouts and
  late corrections, emitting ``ClosedWindows`` (``closed_windows``); its tables are in ``window_tables``, and
  ``runs`` folds a batch's consecutive samples of one series in one window (``SampleRuns``, ``BatchRuns``)
  before they reach them.
- ``calendar`` and ``intervals``: DST-correct local days, weeks and months; the API's interval strings.
"""

from __future__ import annotations

from aggregation.calendar import CalendarUnit, calendar_bucket_edges, calendar_bucket_starts, time_zone
from aggregation.closed_windows import ClosedWindows
from aggregation.errors import IntervalError, TimeZoneError
from aggregation.intervals import CalendarInterval, FixedInterval, Interval, parse_interval
from aggregation.state import DEFAULT_RESOLUTIONS_MS, WindowState
from aggregation.windows import Partials, aggregate, reduce_partials, window_starts

__all__ = [
    "DEFAULT_RESOLUTIONS_MS",
    "CalendarInterval",
    "CalendarUnit",
    "ClosedWindows",
    "FixedInterval",
    "Interval",
    "IntervalError",
    "Partials",
    "TimeZoneError",
    "WindowState",
    "aggregate",
    "calendar_bucket_edges",
    "calendar_bucket_starts",
    "parse_interval",
    "reduce_partials",
    "time_zone",
    "window_starts",
]
