"""Errors of the aggregation package: both are ``ValueError``, so a caller may treat them as bad input.

ValueError
 ├── IntervalError   an interval string that is not <n>s, <n>m, <n>h, 1d, 1w or 1mo
 └── TimeZoneError   a time zone name that is not an IANA zone known to zoneinfo
"""

from __future__ import annotations

__all__ = ["IntervalError", "TimeZoneError"]


class IntervalError(ValueError):
    """An aggregation interval that is not a multiple of 1 s (``10s``, ``5m``, ``1h``) or ``1d``, ``1w``, ``1mo``."""


class TimeZoneError(ValueError):
    """A time zone that zoneinfo does not know (an IANA name such as ``Europe/Rome`` is expected)."""
