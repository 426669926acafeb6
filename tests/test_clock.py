"""Instants as the contract writes them: ISO 8601 UTC with milliseconds, read back to the same integer."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hub.clock import iso_ms, parse_time_ms


def test_iso_ms_writes_utc_milliseconds_and_reads_back() -> None:
    assert iso_ms(1763800000123) == "2025-11-22T08:26:40.123Z"
    assert iso_ms(1763800000999) == "2025-11-22T08:26:40.999Z"
    assert iso_ms(1763800001000) == "2025-11-22T08:26:41.000Z"
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(-1) == "1969-12-31T23:59:59.999Z"
    rng = random.Random(7)
    for ms in (rng.randrange(0, 4 * 10**12) for _ in range(2000)):
        text = iso_ms(ms)
        assert text == datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
        assert parse_time_ms(text) == ms


def test_parse_time_ms_takes_offsets_naive_utc_integers_and_floors_microseconds() -> None:
    same = ("2025-11-22T10:26:40.123+02:00", "2025-11-22T08:26:40.123", "2025-11-22T08:26:40.1239Z", "1763800000123")
    for text in same:
        assert parse_time_ms(text) == 1763800000123, text
    assert parse_time_ms("1969-12-31T23:59:59.9995Z") == -1
