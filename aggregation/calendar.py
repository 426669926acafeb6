"""Calendar buckets (local days, ISO weeks from Monday, months) in any IANA time zone, DST-correct.

A bucket starts at the first instant of its local date, so a local day lasts 23, 24 or 25 hours around DST
changes (23.5 or 24.5 in Australia/Lord_Howe). zoneinfo is asked once per distinct local date, never per
sample: timestamps are placed by ``np.searchsorted`` among the few bucket starts their range can touch.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

from aggregation.errors import IntervalError, TimeZoneError

__all__ = ["CalendarUnit", "calendar_bucket_edges", "calendar_bucket_starts", "time_zone"]

CalendarUnit = Literal["1d", "1w", "1mo"]
CALENDAR_UNITS: tuple[str, ...] = get_args(CalendarUnit)

Int64Array = npt.NDArray[np.int64]

DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.date().toordinal()
_ONE_MS = timedelta(milliseconds=1)
# Candidate local dates come from the range of UTC days while it has at most this many days per timestamp.
_RANGE_DAYS_PER_TS = 4


def time_zone(tz: str) -> ZoneInfo:
    """The zoneinfo zone named ``tz``, or ``TimeZoneError`` with a message fit for an API client."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise TimeZoneError(f"unknown time zone {tz!r}: expected an IANA name such as Europe/Rome") from None


def calendar_bucket_starts(ts_ms: Int64Array, unit: str, tz: str) -> Int64Array:
    """Start (UTC ms) of the local day, ISO week (Monday) or month containing each timestamp in ``tz``."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    _check_unit(unit)
    time_zone(tz)
    if ts.size == 0:
        return np.empty(0, np.int64)
    first_day, last_day = int(ts.min()) // DAY_MS, int(ts.max()) // DAY_MS
    if last_day - first_day <= _RANGE_DAYS_PER_TS * ts.size:
        utc_days = np.arange(first_day, last_day + 1, dtype=np.int64)
    else:
        utc_days = _distinct(ts // DAY_MS)
    # A local date is within one day of the UTC date (offsets stay below 24 h).
    local_days = np.concatenate((utc_days - 1, utc_days, utc_days + 1))
    bucket_days = _distinct(_bucket_day(local_days, unit))
    starts = np.sort(np.array([_day_start_ms(int(d), tz) for d in bucket_days], dtype=np.int64))
    found: Int64Array = starts[np.searchsorted(starts, ts, side="right") - 1]
    return found


def calendar_bucket_edges(from_ms: int, to_ms: int, unit: str, tz: str) -> Int64Array:
    """Every bucket start from the bucket containing ``from_ms`` to the one containing ``to_ms - 1``, then
    the end of that last bucket: bucket i is ``[edges[i], edges[i + 1])``."""
    if to_ms <= from_ms:
        raise ValueError(f"empty range: to ({to_ms}) must be after from ({from_ms})")
    zone = time_zone(tz)
    first, last = calendar_bucket_starts(np.array([from_ms, to_ms - 1], dtype=np.int64), unit, tz)
    first_day, last_day = _local_day(int(first), zone), _local_day(int(last), zone)
    if unit == "1d":
        days = np.arange(first_day, last_day + 2, dtype=np.int64)
    elif unit == "1w":
        days = np.arange(first_day, last_day + 8, 7, dtype=np.int64)
    else:
        months = np.arange(_month(first_day), _month(last_day) + 2, dtype="datetime64[M]")
        days = months.astype("datetime64[D]").astype(np.int64)
    return np.array([_day_start_ms(int(d), tz) for d in days], dtype=np.int64)


def _check_unit(unit: str) -> None:
    if unit not in CALENDAR_UNITS:
        raise IntervalError(f"unknown calendar unit {unit!r}: expected one of {', '.join(CALENDAR_UNITS)}")


def _distinct(values: Int64Array) -> Int64Array:
    ordered = np.sort(values)
    distinct: Int64Array = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
    return distinct


def _month(day: int) -> np.datetime64:
    month: np.datetime64 = np.datetime64(day, "D").astype("datetime64[M]")
    return month


def _bucket_day(days: Int64Array, unit: str) -> Int64Array:
    """The local date (days since 1970-01-01) on which each date's bucket begins."""
    if unit == "1d":
        return days
    if unit == "1w":
        # 1970-01-01 was a Thursday, weekday 3 counting from Monday.
        monday: Int64Array = days - (days + 3) % 7
        return monday
    first_of_month: Int64Array = (
        days.astype("datetime64[D]").astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    )
    return first_of_month


def _local_day(ms: int, zone: ZoneInfo) -> int:
    """The local date of an instant, as days since 1970-01-01."""
    return (_EPOCH + ms * _ONE_MS).astimezone(zone).toordinal() - _EPOCH_ORDINAL


@lru_cache(maxsize=65_536)
def _day_start_ms(day: int, tz: str) -> int:
    """First instant (UTC ms) whose local date in ``tz`` is ``day`` (days since 1970-01-01)."""
    zone = time_zone(tz)
    local = date.fromordinal(_EPOCH_ORDINAL + day)
    # Midnight with fold=0; in a gap at midnight that is the transition itself, the day's first instant.
    guess = (datetime(local.year, local.month, local.day, tzinfo=zone) - _EPOCH) // _ONE_MS
    if _local_day(guess, zone) == day and _local_day(guess - 1, zone) < day:
        return guess
    # A transition across midnight that fold=0 does not resolve: bisect for the first instant of the day.
    low, high = guess - 2 * DAY_MS, guess + 2 * DAY_MS
    while high - low > 1:
        middle = (low + high) // 2
        if _local_day(middle, zone) >= day:
            high = middle
        else:
            low = middle
    return high
