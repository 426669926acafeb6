"""Writes a batch to Redis Streams in one round trip: one Lua call per organization partition (one slot: see
ingest/stream_keys.py), all in one pipeline.

The script is what makes ingest exactly-once: for each device it reads the last stored seq, appends only the
frames with a higher seq (to the device's frame stream, and to the organization's telemetry or event stream),
and writes the new last seq — all in one atomic step, so a frame resent after a crash, a reconnect or a
session replacement is never stored twice, whichever process receives it. It returns each device's last seq
before the write, so the caller can tell exactly which frames were stored (and aggregate only those).

Closed aggregate windows queued since the last write ride in the same pipeline, one script call per
organization (``_STORE_WINDOWS``). In a device's aggregate stream the entry id is the window start
(``<start ms>-0``), so ``readings/aggregate`` finds windows by ``XRANGE`` on their start; an entry for a window
older than the stream's newest (a correction) is appended after it as ``<newest ms>-<n + 1>``. So ids stay
increasing, the newest id's ms is the latest window start written, and a correction's id is at most the
lateness, late horizon and one width after its window. The organization's stream keeps arrival-time ids.
A window older than its resolution's retention is not written at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ingest import stream_keys
from ingest.aggregates import WindowEntry
from ingest.batch import DeviceFrames, IngestBatch

__all__ = ["Retention", "StoreResult", "StreamWriter"]

DAY_MS = 86_400_000
CHUNK_BYTES = 32 * 1024 * 1024
# Telemetry frames larger than this (columns frames, mostly) are stored once: the organization's telemetry
# stream holds their device stream id (field 'r') instead of a second copy (field 'f'). A 40 KB frame costs
# Redis about 95 µs per XADD with AOF on this machine (see docs/performance.md).
REFERENCE_OVER_BYTES = 4096
# ARGV of the store script before its large frames: three minimum ids, REFERENCE_OVER_BYTES, the packed array.
_FIRST_LARGE_ARG = 5

# KEYS (all of one partition): last-seq hash, org telemetry stream, org event stream, then per device its frame
# and event streams.
# ARGV: minimum ids (ms) for frames, org telemetry and events; the size above which a frame is referenced
# rather than copied in the org telemetry stream (REFERENCE_OVER_BYTES); then one MessagePack array (one argument, so
# a batch of thousands of frames costs the client one bulk string to send and Redis one to parse): per
# device its id, frame count and where its large frames start in ARGV, then per frame its seq (text), kind,
# encoding (ingest.at_rest) and bytes, or for a large frame (ingest.batch.LARGE_FRAME_BYTES) its number n: the bytes are
# ARGV[start + n], passed as they are. Returns the number of frames stored, then per device (in the order
# given) its last seq before this call, as text.
_STORE_FRAMES = """
local seqs, org_telemetry, org_events = KEYS[1], KEYS[2], KEYS[3]
local frames_min, telemetry_min, events_min = ARGV[1], ARGV[2], ARGV[3]
local ref_over = tonumber(ARGV[4])
local wire = cmsgpack.unpack(ARGV[5])
local a, k, stored = 1, 4, 0
local before = {}
while a <= #wire do
  local device, count, large_from = wire[a], wire[a + 1], wire[a + 2]
  a = a + 3
  local frames_key, events_key = KEYS[k], KEYS[k + 1]
  k = k + 2
  local last_text = redis.call('HGET', seqs, device) or '0'
  local last = tonumber(last_text)
  local start_last = last
  before[#before + 1] = last_text
  for _ = 1, count do
    -- seq travels as text (Lua numbers print large integers as 1e+15); compared as a number (< 2^53).
    local seq_text, kind, encoding, raw = wire[a], wire[a + 1], wire[a + 2], wire[a + 3]
    local seq = tonumber(seq_text)
    a = a + 4
    if type(raw) == 'number' then raw = ARGV[large_from + raw] end
    if seq == 0 or seq > last then
      local id = redis.call('XADD', frames_key, 'MINID', '~', frames_min, '*', 'k', kind, 's', seq_text,
                            'b', encoding, 'f', raw)
      if kind == 'event' then
        redis.call('XADD', events_key, 'MINID', '~', events_min, '*', 'e', 'device.event', 'd', device,
                   'b', encoding, 'f', raw)
        redis.call('XADD', org_events, 'MINID', '~', events_min, '*', 'e', 'device.event', 'd', device,
                   'b', encoding, 'f', raw)
      elseif kind ~= 'command_result' then
        if #raw > ref_over then  -- a large frame is not copied: 'r' is its id in the device's stream
          redis.call('XADD', org_telemetry, 'MINID', '~', telemetry_min, '*', 'd', device, 's', seq_text,
                     'b', encoding, 'r', id)
        else
          redis.call('XADD', org_telemetry, 'MINID', '~', telemetry_min, '*', 'd', device, 's', seq_text,
                     'b', encoding, 'f', raw)
        end
      end
      stored = stored + 1
      if seq > last then
        last = seq
        last_text = seq_text
      end
    end
  end
  if last ~= start_last then redis.call('HSET', seqs, device, last_text) end
end
table.insert(before, 1, stored)
return before
"""

# KEYS: every stream written (ARGV refers to them by index). ARGV[1]: one MessagePack array, per window its
# device stream's and org stream's KEYS index, window start (ms, text), device id, corrected flag, payload
# and the minimum id (ms, text) its retention allows. Returns the number of windows written.
_STORE_WINDOWS = """
local wire = cmsgpack.unpack(ARGV[1])
local written = 0
for a = 1, #wire, 7 do
  local device_key, org_key = KEYS[wire[a]], KEYS[wire[a + 1]]
  local start, device, corrected, payload, minid = wire[a + 2], wire[a + 3], wire[a + 4], wire[a + 5], wire[a + 6]
  if tonumber(start) >= tonumber(minid) then
    local id = start .. '-0'
    local newest = redis.call('XREVRANGE', device_key, '+', '-', 'COUNT', 1)[1]
    if newest then
      local ms, serial = string.match(newest[1], '^(%d+)-(%d+)$')
      if tonumber(ms) >= tonumber(start) then id = ms .. '-' .. (tonumber(serial) + 1) end
    end
    redis.call('XADD', device_key, 'MINID', '~', minid, id, 'd', device, 's', start, 'c', corrected,
               'p', payload)
    redis.call('XADD', org_key, 'MINID', '~', minid, '*', 'd', device, 's', start, 'c', corrected,
               'p', payload)
    written = written + 1
  end
end
return written
"""


@dataclass(frozen=True, kw_only=True)
class Retention:
    """How long each stream kind keeps entries (trimmed approximately as entries are added)."""

    frames_ms: int = 7 * DAY_MS
    telemetry_ms: int = 1 * DAY_MS
    events_ms: int = 30 * DAY_MS


@dataclass(slots=True)
class StoreResult:
    """What one write stored: the frame count, and per organization and device its last seq before the write
    (a frame was stored iff its seq is 0 or above the last seq so far, the rule the script applies)."""

    stored: int = 0
    last_before: dict[str, dict[str, int]] = field(default_factory=dict)


def _chunks(devices: dict[str, DeviceFrames]) -> Iterator[tuple[int, list[tuple[str, DeviceFrames]]]]:
    """An organization's devices by partition, in groups of at most ~CHUNK_BYTES of frames (a device's frames
    stay together), so the one argument of each script call stays far below Redis's bulk string limit (512 MB)."""
    for partition, members in _by_partition(devices).items():
        chunk: list[tuple[str, DeviceFrames]] = []
        size = 0
        for item in members:
            if chunk and size + item[1].size > CHUNK_BYTES:
                yield partition, chunk
                chunk, size = [], 0
            chunk.append(item)
            size += item[1].size
        if chunk:
            yield partition, chunk


def _by_partition(devices: dict[str, DeviceFrames]) -> dict[int, list[tuple[str, DeviceFrames]]]:
    if stream_keys.partitions() == 1:
        return {0: list(devices.items())}
    grouped: dict[int, list[tuple[str, DeviceFrames]]] = {}
    for item in devices.items():
        grouped.setdefault(stream_keys.partition_of(item[0]), []).append(item)
    return grouped


def _by_slot(windows: Sequence[WindowEntry]) -> dict[tuple[str, int], list[WindowEntry]]:
    """Windows by organization partition: the keys of one script call share a slot."""
    grouped: dict[tuple[str, int], list[WindowEntry]] = {}
    for entry in windows:
        grouped.setdefault((entry.org_id, stream_keys.partition_of(entry.device_id)), []).append(entry)
    return grouped


def _windows_wire(entries: list[WindowEntry], now_ms: int) -> tuple[list[str], list[str | bytes | int]]:
    """KEYS and the MessagePack array of ``_STORE_WINDOWS`` for one organization's windows."""
    index: dict[str, int] = {}
    wire: list[str | bytes | int] = []
    for entry in entries:
        device_key = index.setdefault(entry.device_key, len(index) + 1)
        org_key = index.setdefault(entry.org_key, len(index) + 1)
        wire += [
            device_key,
            org_key,
            str(entry.start_ms),
            entry.device_id,
            entry.corrected_flag,
            entry.payload,
            str(now_ms - entry.retention_ms),
        ]
    return list(index), wire


class StreamWriter:
    def __init__(self, redis: Any, *, retention: Retention | None = None) -> None:
        self.redis = redis
        self.retention = retention or Retention()
        self._script = redis.register_script(_STORE_FRAMES)
        self._windows_script = redis.register_script(_STORE_WINDOWS)

    async def write(self, batch: IngestBatch, *, now_ms: int, windows: Sequence[WindowEntry] = ()) -> StoreResult:
        """Store the batch and the closed ``windows`` in one round trip; duplicates are left out."""
        result = StoreResult()
        if not batch.orgs and not windows:
            return result
        minimums = [
            now_ms - self.retention.frames_ms,
            now_ms - self.retention.telemetry_ms,
            now_ms - self.retention.events_ms,
        ]
        calls: list[tuple[str, list[str]]] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for org_id, devices in batch.orgs.items():
                for partition, chunk in _chunks(devices):
                    keys = [
                        stream_keys.last_seqs(org_id, partition),
                        stream_keys.org_telemetry(org_id, partition),
                        stream_keys.org_events(org_id, partition),
                    ]
                    wire: list[str | bytes | int] = []
                    large: list[bytes] = []
                    for device_id, pending in chunk:
                        keys.append(stream_keys.device_frames(org_id, device_id))
                        keys.append(stream_keys.device_events(org_id, device_id))
                        # This device's large frame n is ARGV[5 + len(large) + n] (after the packed argument).
                        wire += (device_id, pending.count, _FIRST_LARGE_ARG + len(large))
                        wire += pending.wire
                        large += pending.large
                    # Redis 6.2's cmsgpack predates the bin type: bytes go as (byte-transparent) raw strings.
                    packed = msgpack.packb(wire, use_bin_type=False)
                    args = [*minimums, REFERENCE_OVER_BYTES, packed, *large]
                    await self._script(keys=keys, args=args, client=pipe)
                    calls.append((org_id, [device_id for device_id, _ in chunk]))
            for entries in _by_slot(windows).values():
                keys, wire = _windows_wire(entries, now_ms)
                await self._windows_script(keys=keys, args=[msgpack.packb(wire, use_bin_type=False)], client=pipe)
            replies = await pipe.execute()
        for (org_id, device_ids), reply in zip(calls, replies, strict=False):
            result.stored += int(reply[0])
            befores = result.last_before.setdefault(org_id, {})
            for device_id, last in zip(device_ids, reply[1:], strict=True):
                befores[device_id] = int(last)
        return result

    async def next_generation(self, org_id: str, device_id: str) -> int:
        """Count a new connection of the device and return its number (1, 2, ...; over every process)."""
        return int(await self.redis.hincrby(stream_keys.connection_generations(org_id), device_id, 1))

    async def last_seq(self, org_id: str, device_id: str) -> int:
        """The highest seq stored for the device (0 if none): what its ``hello`` frame reports."""
        value = await self.redis.hget(stream_keys.last_seqs(org_id, stream_keys.partition_of(device_id)), device_id)
        return int(value) if value else 0
