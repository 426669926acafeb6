"""Test helpers for aggregates: the truth computed with plain Python, and what the aggregate streams hold."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import pytest
import redis

from hub.clock import parse_time_ms
from ingest import stream_keys

RESOLUTIONS = {"1s": 1_000, "1m": 60_000, "1h": 3_600_000}

# (window start, metric) -> (count, sum, min, max)
Windows = dict[tuple[int, str], tuple[int, float, float, float]]


def truth(samples: Iterable[tuple[int, str, float]], width: int) -> Windows:
    """Aggregates of ``(ts, metric, value)`` samples per window of ``width`` ms, in plain Python."""
    windows: Windows = {}
    for ts, metric, value in samples:
        key = (ts - ts % width, metric)
        if key in windows:
            count, total, low, high = windows[key]
            windows[key] = (count + 1, total + value, min(low, value), max(high, value))
        else:
            windows[key] = (1, value, value, value)
    return windows


def entries(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    """The entries of an aggregate stream: fields, with the payload parsed."""
    return _parsed(client.xrange(key))


def _parsed(raw: list[Any]) -> list[dict[str, Any]]:
    """Entries with their payload parsed. A transaction of redis-py's cluster client returns XRANGE replies
    raw (fields as a flat list), a one-server client's as dicts: both are read."""
    parsed = []
    for _, fields in raw:
        if isinstance(fields, list):
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        parsed.append({**fields, "p": orjson.loads(fields["p"])})
    return parsed


def stored(client: redis.Redis, org_id: str, device_id: str, label: str) -> Windows:
    """The device's windows of one resolution, the latest entry per (window, metric) winning, after checking
    that every entry is well-formed and that the organization's stream holds the same entries (both read in
    one transaction: windows may still be being written)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.xrange(stream_keys.device_aggregates(org_id, device_id, label))
        pipe.xrange(stream_keys.org_aggregates(org_id, label, stream_keys.partition_of(device_id)))
        device_raw, org_raw = pipe.execute()
    mine = _parsed(device_raw)
    org = [e for e in _parsed(org_raw) if e["d"] == device_id]
    assert org == mine
    windows: Windows = {}
    for entry in mine:
        payload = entry["p"]
        start = int(entry["s"])
        assert payload["device_id"] == device_id
        assert parse_time_ms(payload["start"]) == start
        assert parse_time_ms(payload["end"]) == start + RESOLUTIONS[label]
        assert entry["c"] == ("1" if payload.get("corrected") else "0")
        for metric, value in payload["metrics"].items():
            assert value["avg"] == pytest.approx(value["sum"] / value["count"])
            windows[(start, metric)] = (value["count"], value["sum"], value["min"], value["max"])
    return windows


def assert_same(got: Windows, want: Windows) -> None:
    """Equal windows: counts, minima and maxima exactly, sums within rounding."""
    assert sorted(got) == sorted(want), f"windows differ: missing {set(want) - set(got)}, extra {set(got) - set(want)}"
    for key, (count, total, low, high) in want.items():
        assert got[key][0] == count, key
        assert got[key][1] == pytest.approx(total, rel=1e-9), key
        assert (got[key][2], got[key][3]) == (low, high), key
