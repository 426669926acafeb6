"""Reading the streams back: every frame as received, the samples in them, and the event log.

Pages are walked by stream position (``<stream id>`` for frames and events, ``<stream id>/<sample index>``
for readings), so walking every page returns each item exactly once even while new frames arrive.
Readings are in the order stored; their ``from``/``to`` select by sample time, and since a sample's ts is
at most ``future_ms`` ahead of when it was received, the scan starts at ``from - future_ms``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import msgpack
import numpy as np
import orjson

from ingest import at_rest, codec, stream_keys
from ingest.frames import TelemetryFrame
from ingest.limits import FrameLimits

__all__ = ["FrameRecord", "HistoryReader", "Position", "offset_key"]

Order = Literal["asc", "desc"]
SCAN_CHUNK = 200
# Stored frames were checked when received; reading them back accepts any ts.
_REREAD = FrameLimits(past_ms=2**62, future_ms=2**62)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ends: a stream id, and for readings the next sample's index in that entry."""

    stream_id: str
    index: int = 0

    def encode(self) -> str:
        return f"{self.stream_id}/{self.index}"

    @classmethod
    def decode(cls, text: str) -> Position:
        stream_id, _, index = text.partition("/")
        ms, _, serial = stream_id.partition("-")
        if not (ms.isdigit() and serial.isdigit() and (index == "" or index.isdigit())):
            raise ValueError(text)
        return cls(stream_id, int(index or 0))


@dataclass(frozen=True, slots=True)
class FrameRecord:
    stream_id: str
    kind: str
    seq: int
    binary: bool
    raw: bytes

    @property
    def received_ms(self) -> int:
        return int(self.stream_id.split("-", 1)[0])

    def content(self) -> Any:
        """The frame as the device sent it, as JSON-compatible data (bin columns become number lists)."""
        value = msgpack.unpackb(self.raw, raw=False) if self.binary else orjson.loads(self.raw)
        if self.kind == "columns" and isinstance(value, dict):
            if isinstance(value.get("ts"), bytes):
                value["ts"] = np.frombuffer(value["ts"], dtype="<i8").tolist()
            metrics = value.get("metrics")
            if isinstance(metrics, dict):
                for name, column in metrics.items():
                    if isinstance(column, bytes):
                        metrics[name] = np.frombuffer(column, dtype="<f8").tolist()
        return value

    def telemetry(self) -> TelemetryFrame | None:
        if self.kind not in ("telemetry", "columns", "readings"):
            return None
        if self.kind == "readings":
            return codec.decode_readings(self.raw, binary=self.binary, now_ms=self.received_ms, limits=_REREAD)
        frame = codec.decode_frame(
            self.raw if self.binary else self.raw.decode(), now_ms=self.received_ms, limits=_REREAD
        )
        return frame if isinstance(frame, TelemetryFrame) else None


def offset_key(offset: str) -> tuple[int, int]:
    """A stream id as a sortable pair; ValueError for anything else."""
    ms, _, serial = offset.partition("-")
    if not ms.isdigit() or (serial and not serial.isdigit()):
        raise ValueError(f"not a stream offset: {offset!r}")
    return int(ms), int(serial or 0)


# A merged stream's next entry: its place in the merge, the stream's index, the entry (id, fields), the walk.
_Head = tuple[tuple[int, int, int], int, str, dict[bytes, bytes], AsyncIterator[tuple[str, dict[bytes, bytes]]]]


def _merge_key(stream_id: str, index: int, order: Order) -> tuple[int, int, int]:
    """Where an entry of stream ``index`` comes in the merged log: by entry id, then stream index."""
    ms, serial = offset_key(stream_id)
    return (ms, serial, index) if order == "asc" else (-ms, -serial, -index)


def _resume_after(after: Position | None, index: int, order: Order) -> tuple[str | None, bool]:
    """Where stream ``index`` of a merged log resumes after position ``after``: at its entry id itself
    (inclusive) when the stream comes after the position's stream at that id in this order, else past it."""
    if after is None:
        return None, False
    later = index > after.index if order == "asc" else index < after.index
    return after.stream_id, later


class HistoryReader:
    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def frames(
        self,
        org_id: str,
        device_id: str,
        *,
        start_ms: int | None,
        end_ms: int | None,
        order: Order,
        after: str | None,
        inclusive: bool = False,
        first_chunk: int = SCAN_CHUNK,
    ) -> AsyncGenerator[FrameRecord, None]:
        """The device's frames in stream order (received-time bounds), from the ``after`` stream id.

        Read ``first_chunk`` entries first, then twice as many each time up to ``SCAN_CHUNK``: a caller that
        may stop after a few (large) frames does not read hundreds."""
        key = stream_keys.device_frames(org_id, device_id)
        async for stream_id, fields in self._scan(key, start_ms, end_ms, order, after, inclusive, first_chunk):
            binary, raw = at_rest.as_sent(fields[b"b"], fields[b"f"])
            yield FrameRecord(
                stream_id=stream_id, kind=fields[b"k"].decode(), seq=int(fields[b"s"]), binary=binary, raw=raw
            )

    async def events(
        self,
        org_id: str,
        *,
        start_ms: int | None,
        end_ms: int | None,
        order: Order,
        after: Position | None,
        device_id: str | None = None,
    ) -> AsyncIterator[tuple[Position, dict[bytes, bytes]]]:
        """The organization's event log: its streams (``stream_keys.org_event_streams``) merged in the order
        of (entry id, the stream's index), each event with that pair as its position. With ``device_id``, only
        the streams that may hold its events are read (its partition's and the organization's own)."""
        streams = stream_keys.org_event_streams(org_id)
        wanted: list[int] = list(range(len(streams)))
        if device_id is not None and len(streams) > 1:
            wanted = [stream_keys.partition_of(device_id), len(streams) - 1]
        heads: list[_Head] = []
        for index in wanted:
            scan = self._scan(streams[index], start_ms, end_ms, order, *_resume_after(after, index, order))
            first = await anext(scan, None)
            if first is not None:
                heads.append((_merge_key(first[0], index, order), index, *first, scan))
        while heads:
            best = min(range(len(heads)), key=lambda i: heads[i][0])
            _, index, stream_id, fields, scan = heads[best]
            yield Position(stream_id, index), fields
            following = await anext(scan, None)
            if following is None:
                del heads[best]
            else:
                heads[best] = (_merge_key(following[0], index, order), index, *following, scan)

    async def _scan(
        self,
        key: str,
        start_ms: int | None,
        end_ms: int | None,
        order: Order,
        after: str | None,
        inclusive: bool,
        chunk_size: int = SCAN_CHUNK,
    ) -> AsyncIterator[tuple[str, dict[bytes, bytes]]]:
        low = "-" if start_ms is None else str(max(start_ms, 0))
        high = "+" if end_ms is None else f"{end_ms}-{2**64 - 1}"
        if after is not None:
            bound = after if inclusive else "(" + after
            if order == "asc":
                low = bound
            else:
                high = bound
        while True:
            if order == "asc":
                chunk = await self.redis.xrange(key, min=low, max=high, count=chunk_size)
            else:
                chunk = await self.redis.xrevrange(key, max=high, min=low, count=chunk_size)
            for raw_id, fields in chunk:
                yield raw_id.decode(), fields
            if len(chunk) < chunk_size:
                return
            chunk_size = min(2 * chunk_size, SCAN_CHUNK)
            last = chunk[-1][0].decode()
            if order == "asc":
                low = "(" + last
            else:
                high = "(" + last
