"""``DeviceClient`` against live ``telehub serve`` processes: exactly-once storage across a SIGKILL of the hub,
the seq state file across client restarts, the bounded offline buffer, rejections, columns, and the closes
that end a session (4003, 4001, 401)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest

from clients import Backoff, BufferFull, DeviceClient, FrameRejected, RestClient, SessionEnded
from tests.clients.conftest import WAIT, admin_rest, eventually, new_device, restart, stored_seqs
from tests.processes import ServeProcess

NOW_MS = int(time.time() * 1000)


def fast_backoff() -> Backoff:
    return Backoff(initial_s=0.05, maximum_s=0.5)


async def stored_values(rest: RestClient, device_id: str, metric: str) -> list[float]:
    return [row["value"] async for row in rest.iter_readings(device_id, metric=[metric])]


# Exactly once, end to end.

FRAMES = 600


async def test_a_sigkilled_hub_loses_and_duplicates_nothing(own_server: ServeProcess, tmp_path: Path) -> None:
    async with admin_rest(own_server) as rest:
        device = await new_device(rest)
    client = DeviceClient(
        own_server.url, device.key, state_path=tmp_path / "seq.json", window=64, backoff=fast_backoff()
    )
    async with client:
        killed = asyncio.Event()

        async def produce() -> None:
            for n in range(1, FRAMES + 1):
                await client.send({"n": n}, ts=NOW_MS + n)
                if n % 20 == 0:
                    await asyncio.sleep(0.01)  # a steady stream, so the kill lands mid-stream
                if n == FRAMES // 2:
                    await killed.wait()

        producer = asyncio.create_task(produce())
        await eventually(lambda: client.acked_seq >= FRAMES // 4, "the device is not acked")
        # Stopped first, so the kill finds a full window of frames written and not acked (some perhaps stored).
        own_server.send(signal.SIGSTOP)
        await eventually(lambda: client.in_flight == 64, "the window did not fill")
        own_server.send(signal.SIGKILL)
        own_server.wait()
        killed.set()
        restart(own_server)
        await asyncio.wait_for(producer, WAIT)
        await asyncio.wait_for(client.flush(), WAIT)
        assert client.connections >= 2
        assert client.acked_seq == FRAMES
        # The window's frames the hub had not stored when it was stopped were written again (it may have stored
        # some of the 64 before the stop without acking them: hello then says so and those are not resent).
        written_again = client.frames_written - FRAMES
        assert 1 <= written_again <= 64, f"{written_again} frames written again"

    async with admin_rest(own_server) as rest:
        seqs = await stored_seqs(rest, device.id)
        values = await stored_values(rest, device.id, "n")
    assert seqs == list(range(1, FRAMES + 1)), "every seq stored once, in order"
    duplicated = [n for n, count in Counter(values).items() if count > 1]
    assert sorted(values) == [float(n) for n in range(1, FRAMES + 1)], f"duplicated: {duplicated}"


async def test_seq_continues_across_client_restarts_from_the_state_file(
    hub_server: ServeProcess, rest: RestClient, tmp_path: Path
) -> None:
    device = await new_device(rest)
    state = tmp_path / "seq.json"
    async with DeviceClient(hub_server.url, device.key, state_path=state) as client:
        futures = [await client.send({"n": n}) for n in range(5)]
        assert [await f for f in futures] == [1, 2, 3, 4, 5]
    assert orjson.loads(state.read_bytes()) == {"device_id": device.id, "reserved": 5}
    async with DeviceClient(hub_server.url, device.key, state_path=state) as client:
        assert await (await client.send({"n": 5})) == 6
    # A device that lost its state continues after the hub's last seq instead of being taken for duplicates.
    state.unlink()
    async with DeviceClient(hub_server.url, device.key, state_path=state) as client:
        assert await (await client.send({"n": 6})) == 7
    assert await stored_seqs(rest, device.id) == [1, 2, 3, 4, 5, 6, 7]


async def test_the_offline_buffer_is_bounded_and_drains_once_the_hub_is_back(
    own_server: ServeProcess, tmp_path: Path
) -> None:
    async with admin_rest(own_server) as rest:
        device = await new_device(rest)
    own_server.stop()
    async with DeviceClient(own_server.url, device.key, max_buffered=5, window=2, backoff=fast_backoff()) as client:
        queued = [client.send_nowait({"n": n}) for n in range(5)]
        with pytest.raises(BufferFull):
            client.send_nowait({"n": 5})
        blocked = asyncio.create_task(client.send({"n": 5}))
        await asyncio.sleep(0.2)
        assert not blocked.done() and client.pending == 5  # send waits for room; nothing was dropped
        restart(own_server)
        last = await asyncio.wait_for(blocked, WAIT)
        assert [await f for f in queued] == [1, 2, 3, 4, 5] and await last == 6
    async with admin_rest(own_server) as rest:
        assert await stored_values(rest, device.id, "n") == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


# What the hub refuses.


async def test_a_rejected_frame_fails_its_future_and_reaches_on_error(
    hub_server: ServeProcess, rest: RestClient
) -> None:
    device = await new_device(rest)
    errors: list[FrameRejected] = []
    async with DeviceClient(hub_server.url, device.key, on_error=errors.append) as client:
        too_old = await client.send({"n": 1}, ts=1_000)  # 1970: outside the hub's accepted range
        fine = await client.send({"n": 2})
        with pytest.raises(FrameRejected) as rejected:
            await too_old
        assert await fine == 2
    assert rejected.value.code == "invalid_timestamp" and rejected.value.seq == 1
    assert [e.seq for e in errors] == [1]
    assert await stored_seqs(rest, device.id) == [2]


async def test_columns_are_stored_and_read_back(hub_server: ServeProcess, rest: RestClient) -> None:
    device = await new_device(rest)
    ts = NOW_MS + np.arange(100, dtype=np.int64) * 10
    temp = np.linspace(20.0, 30.0, 100)
    rpm = np.arange(100, dtype=np.float64) * 3
    async with DeviceClient(hub_server.url, device.key) as client:
        assert await (await client.send_columns(ts, {"temp": temp, "rpm": rpm})) == 1
        await client.send_event("door_opened", {"door": "north"})
    rows = [row async for row in rest.iter_readings(device.id, metric=["temp"])]
    assert np.allclose([row["value"] for row in rows], temp) and len(rows) == 100
    assert await stored_values(rest, device.id, "rpm") == rpm.tolist()
    messages = (await rest.list_messages(device.id))["data"]
    assert [m["type"] for m in messages] == ["columns", "event"]
    events = (await rest.list_events(device_id=device.id, type="device.event"))["data"]
    assert [e["data"]["data"] for e in events] == [{"door": "north"}]


# Sessions that end for good.


async def test_a_second_connection_ends_the_first_with_4003(hub_server: ServeProcess, rest: RestClient) -> None:
    device = await new_device(rest)
    async with DeviceClient(hub_server.url, device.key, backoff=fast_backoff()) as first:
        await asyncio.wait_for(first.wait_connected(), WAIT)
        async with DeviceClient(hub_server.url, device.key) as second:
            await asyncio.wait_for(second.wait_connected(), WAIT)
            await eventually(lambda: first.ended is not None, "the replaced client did not stop")
            assert first.ended is not None and first.ended.code == 4003
            with pytest.raises(SessionEnded):
                await first.send({"n": 1})
            assert await (await second.send({"n": 1})) == 1


async def test_a_rotated_key_ends_the_session_with_4001_and_the_old_key_is_refused(
    hub_server: ServeProcess, rest: RestClient
) -> None:
    device = await new_device(rest)
    async with DeviceClient(hub_server.url, device.key, backoff=fast_backoff()) as client:
        await asyncio.wait_for(client.wait_connected(), WAIT)
        await rest.rotate_device_key(device.id)
        await eventually(lambda: client.ended is not None, "the revoked client did not stop")
        assert client.ended is not None and client.ended.code == 4001
    async with DeviceClient(hub_server.url, device.key) as stale:
        with pytest.raises(SessionEnded) as refused:
            await asyncio.wait_for(stale.wait_connected(), WAIT)
    assert refused.value.code == 401
