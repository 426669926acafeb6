"""The store script against a real Redis: large frames travel as arguments of their own, small ones inside the
packed batch, and either way each device's stream holds exactly its new frames, in order, byte for byte."""

from __future__ import annotations

import redis.asyncio as aioredis

from ingest import stream_keys
from ingest.batch import LARGE_FRAME_BYTES, IngestBatch
from ingest.ports import DeviceIdentity
from ingest.stream_writer import StreamWriter

NOW_MS = 1_795_000_000_000
ORG = "org_writer"


def frame(device: str, seq: int, large: bool) -> bytes:
    body = f"{device}:{seq}:".encode()
    return body + bytes([seq % 251]) * (LARGE_FRAME_BYTES + 1 + seq if large else 20)


async def device_frames(redis: aioredis.Redis, device: str) -> list[tuple[bytes, bytes]]:
    entries = await redis.xrange(stream_keys.device_frames(ORG, device))
    return [(fields[b"s"], fields[b"f"]) for _, fields in entries]


async def test_large_and_small_frames_of_several_devices_are_stored_once_in_order(redis: aioredis.Redis) -> None:
    writer = StreamWriter(redis)
    plan = {"a": [(1, True), (2, False), (3, True), (4, True), (5, False)], "b": [(1, False), (2, True), (3, False)]}
    batch = IngestBatch()
    for seq_index in range(5):
        for device, frames in plan.items():
            if seq_index < len(frames):
                seq, large = frames[seq_index]
                batch.add(DeviceIdentity(ORG, device), seq, b"telemetry", b"1", frame(device, seq, large), None)
    assert sum(len(d.large) for d in batch.orgs[ORG].values()) == 4
    result = await writer.write(batch, now_ms=NOW_MS)
    assert result.stored == 8
    assert result.last_before == {ORG: {"a": 0, "b": 0}}
    for device, frames in plan.items():
        expected = [(str(seq).encode(), frame(device, seq, large)) for seq, large in frames]
        assert await device_frames(redis, device) == expected

    # A resend of a large and a small frame (seq 3 and 5 of "a") beside a new large one is stored once.
    again = IngestBatch()
    for seq, large in ((3, True), (5, False), (6, True)):
        again.add(DeviceIdentity(ORG, "a"), seq, b"telemetry", b"1", frame("a", seq, large), None)
    result = await writer.write(again, now_ms=NOW_MS)
    assert result.stored == 1 and result.last_before == {ORG: {"a": 5}}
    stored = await device_frames(redis, "a")
    assert stored[-1] == (b"6", frame("a", 6, True)) and len(stored) == 6
    # The organization's telemetry stream refers to every large frame and copies every small one.
    org = [e for p in range(stream_keys.partitions()) for e in await redis.xrange(stream_keys.org_telemetry(ORG, p))]
    assert sum(b"r" in fields for _, fields in org) == 5
    assert sum(b"f" in fields for _, fields in org) == 4
