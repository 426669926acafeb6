"""``readings/aggregate``: stored windows where they are final, raw samples where they are not yet.

A query covers whole buckets ``[A, B)``: every bucket of its interval that meets ``[from, to]``.

1. The chain: the configured resolutions that nest in every bucket (each divides every bucket edge, and
   the coarser resolution before it), coarsest first. A 1 h query reads 1 h windows; a 1 d query in
   Asia/Kolkata (half-hour offset) reads 1 min windows, since 1 h windows straddle its local midnights.
2. A cursor ``c`` walks from ``A``. For each resolution ``r`` of the chain, the windows in ``[c, E_r)`` come
   from the device's aggregate stream of ``r``, found by id (an entry's id is its window start). The frontier
   ``E_r`` is the end of the newest window written, but no later than the device's newest sample time minus
   the allowed lateness (rounded down to ``r``): every window before it was closed by the device's
   watermark, so it is in the stream (or had no samples) and stays final, corrections included (they are
   appended to the stream too). A window closed early by the idle timeout may still reopen, which is why the
   frontier stops at the watermark. ``c`` moves to ``E_r``; finer resolutions take over from there.
3. Raw samples with ``ts`` in ``[c, B)`` come from the device's frames, newest first, until a frame that
   arrived before ``c - future_ms`` (no sample at or after ``c`` can be in it), or one whose samples are all
   older than ``c - lateness - late horizon`` (the ingest loop would have had them as too late already).

Per (window, metric) the stored entry with the most samples wins, the later on a tie: a correction only adds
samples, and a partial window written by a process the device has since left has fewer. Samples that
arrived later than the late horizon are stored raw but not in the windows (``late_dropped_total`` in
``/metrics``), so only those make an aggregate differ from the raw truth.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from aggregation import Interval, Partials, reduce_partials
from ingest import stream_keys
from ingest.aggregates import AggregationPolicy, resolution_label
from ingest.history import FrameRecord, HistoryReader
from ingest.limits import FrameLimits

__all__ = ["AggregateQuery", "AggregateReader", "Buckets"]

Int64Array = npt.NDArray[np.int64]
WINDOW_SCAN_CHUNK = 2_000


@dataclass(frozen=True, slots=True)
class AggregateQuery:
    org_id: str
    device_id: str
    interval: Interval
    tz: str
    # Bucket edges: bucket i is [edges[i], edges[i + 1]).
    edges: Int64Array
    # Metric names wanted; None for all.
    metrics: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Buckets:
    """The non-empty buckets, one row per (bucket, metric), sorted by start then metric name."""

    partials: Partials
    # Metric name of each series id.
    names: list[str]
    edges: Int64Array

    def rows(self) -> Iterator[tuple[int, int, str, int, float, float, float]]:
        """(start, end, metric, count, sum, min, max) by start, then metric name."""
        p = self.partials
        rank = np.argsort(np.argsort(np.array(self.names, dtype=object)))
        order = np.lexsort((rank[p.series], p.start)) if len(p) else np.empty(0, np.intp)
        ends = self.edges[np.searchsorted(self.edges, p.start, side="right")]
        names = [self.names[series] for series in p.series[order].tolist()]
        return zip(
            p.start[order].tolist(),
            ends[order].tolist(),
            names,
            p.count[order].tolist(),
            p.sum[order].tolist(),
            p.min[order].tolist(),
            p.max[order].tolist(),
            strict=True,
        )


class AggregateReader:
    def __init__(self, redis: Any, policy: AggregationPolicy | None, limits: FrameLimits) -> None:
        self.redis = redis
        self.policy = policy
        self.limits = limits
        self.history = HistoryReader(redis)

    async def buckets(self, query: AggregateQuery) -> Buckets:
        start, end = int(query.edges[0]), int(query.edges[-1])
        metrics = _MetricIds(query.metrics)
        frames = self.history.frames(
            query.org_id, query.device_id, start_ms=None, end_ms=None, order="desc", after=None, first_chunk=4
        )
        try:
            newest = await _newest_sample(frames)
            if newest is None:
                return Buckets(Partials.empty(), [], query.edges)
            segments = await self._segments(query, start, end, newest[0])
            cursor = segments[-1][2] if segments else start
            raw = await self._raw(frames, newest[1], cursor, end, metrics)
        finally:
            await frames.aclose()
        stored = [await self._stored(query, width, low, high, metrics) for width, low, high in segments]
        merged = Partials.concat([*stored, raw])
        if not len(merged):
            return Buckets(Partials.empty(), [], query.edges)
        buckets = reduce_partials(merged, query.interval.bucket_starts(merged.start, query.tz))
        return Buckets(buckets, metrics.names, query.edges)

    def _chain(self, edges: Int64Array) -> list[int]:
        """The configured widths nesting in every bucket (and in each other), coarsest first."""
        chain: list[int] = []
        for width in sorted(self.policy.resolutions_ms if self.policy else (), reverse=True):
            if not np.any(edges % width) and (not chain or chain[-1] % width == 0):
                chain.append(width)
        return chain

    async def _segments(
        self, query: AggregateQuery, start: int, end: int, newest_ts: int
    ) -> list[tuple[int, int, int]]:
        """(width, from, to) spans of ``[start, end)`` read from stored windows, in order, meeting end to end."""
        chain = self._chain(query.edges)
        lateness = self.policy.allowed_lateness_ms if self.policy else 0
        pipe = self.redis.pipeline(transaction=False)
        for width in chain:
            pipe.xrevrange(self._key(query, width), count=1)
        newest = await pipe.execute() if chain else []
        segments = []
        cursor = start
        for width, entries in zip(chain, newest, strict=True):
            if not entries:
                continue
            written = _id_ms(entries[0][0]) + width
            watermark = newest_ts - lateness
            frontier = min(written, watermark - watermark % width, end)
            if frontier > cursor:
                segments.append((width, cursor, frontier))
                cursor = frontier
        return segments

    def _key(self, query: AggregateQuery, width: int) -> str:
        return stream_keys.device_aggregates(query.org_id, query.device_id, resolution_label(width))

    async def _stored(self, query: AggregateQuery, width: int, low: int, high: int, metrics: _MetricIds) -> Partials:
        """The device's windows of ``width`` starting in ``[low, high)``; per (window, metric) the fullest."""
        assert self.policy is not None
        # Corrections are appended after the newest window: at most lateness + horizon + a width later.
        slack = self.policy.allowed_lateness_ms + self.policy.late_horizon_ms + max(self.policy.resolutions_ms)
        rows: list[tuple[int, int, int, float, float, float]] = []
        lowest = str(low)
        while True:
            chunk = await self.redis.xrange(
                self._key(query, width), min=lowest, max=str(high + slack), count=WINDOW_SCAN_CHUNK
            )
            for _, fields in chunk:
                window = int(fields[b"s"])
                if low <= window < high:
                    for name, value in orjson.loads(fields[b"p"])["metrics"].items():
                        series = metrics.id(name)
                        if series >= 0:
                            rows.append((series, window, value["count"], value["sum"], value["min"], value["max"]))
            if len(chunk) < WINDOW_SCAN_CHUNK:
                break
            lowest = "(" + chunk[-1][0].decode()
        return _fullest(rows)

    async def _raw(
        self, frames: AsyncGenerator[FrameRecord, None], first: FrameRecord, low: int, high: int, metrics: _MetricIds
    ) -> Partials:
        """Samples with ts in ``[low, high)`` from the frames walked newest first (see the module docstring)."""
        reach = self.policy.allowed_lateness_ms + self.policy.late_horizon_ms if self.policy else None
        arrived_after = low - self.limits.future_ms
        series: list[Int64Array] = []
        ts: list[Int64Array] = []
        values: list[npt.NDArray[np.float64]] = []
        record: FrameRecord | None = first
        while record is not None:
            if record.received_ms < arrived_after:
                break
            frame = record.telemetry()
            if frame is not None and len(frame.samples):
                samples = frame.samples
                if reach is not None and int(samples.ts.max()) < low - reach:
                    break
                ids = np.array([metrics.id(name) for name in samples.names], dtype=np.int64)[samples.metric]
                keep = (ids >= 0) & (samples.ts >= low) & (samples.ts < high)
                if keep.any():
                    series.append(ids[keep])
                    ts.append(samples.ts[keep].astype(np.int64))
                    values.append(samples.value[keep])
            record = await anext(frames, None)
        if not ts:
            return Partials.empty()
        value = np.concatenate(values)
        return Partials(np.concatenate(series), np.concatenate(ts), np.ones(value.size, np.int64), value, value, value)


class _MetricIds:
    """Dense ids of the metric names met, in name order once ``names`` is read."""

    def __init__(self, wanted: frozenset[str] | None) -> None:
        self.wanted = wanted
        self._ids: dict[str, int] = {}

    def id(self, name: str) -> int:
        """The name's id; -1 for a name not asked for."""
        if self.wanted is not None and name not in self.wanted:
            return -1
        return self._ids.setdefault(name, len(self._ids))

    @property
    def names(self) -> list[str]:
        """Names by id."""
        return list(self._ids)


async def _newest_sample(frames: AsyncGenerator[FrameRecord, None]) -> tuple[int, FrameRecord] | None:
    """The largest sample time in the device's newest telemetry frame, and that frame."""
    async for record in frames:
        frame = record.telemetry()
        if frame is not None and len(frame.samples):
            return int(frame.samples.ts.max()), record
    return None


def _fullest(rows: Sequence[tuple[int, int, int, float, float, float]]) -> Partials:
    """One row per (series, window): the one with the highest count, the latest of equal ones."""
    if not rows:
        return Partials.empty()
    series, start, count, total, low, high = (np.array(column) for column in zip(*rows, strict=True))
    order = np.arange(len(rows))
    ranked = np.lexsort((order, count, start, series))
    series, start = series[ranked], start[ranked]
    last = np.ones(len(rows), dtype=bool)
    last[:-1] = (series[1:] != series[:-1]) | (start[1:] != start[:-1])
    chosen = ranked[last]
    return Partials(
        np.asarray(series[last], np.int64),
        np.asarray(start[last], np.int64),
        count[chosen],
        total[chosen],
        low[chosen],
        high[chosen],
    )


def _id_ms(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.split("-", 1)[0])
