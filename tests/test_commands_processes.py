"""Commands across real ``telehub serve`` processes: REST on one, the device on another, and a SIGKILL of the
process that holds the device mid-command."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.fanout_process_clients import DEVICE, DEVICE_PROTOCOL, WAIT, Hub, hubs, provision
from tests.support import bearer

Message = dict[str, Any]


async def device(hub: Hub, key: str) -> ClientConnection:
    ws = await connect(
        f"{hub.ws_url}/ws/device", additional_headers=bearer(key), subprotocols=[DEVICE_PROTOCOL], open_timeout=WAIT
    )
    hello = msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))
    assert hello["type"] == "hello"
    return ws


async def next_frame(ws: ClientConnection, kind: str) -> Message:
    while True:
        frame: Message = msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))
        if frame["type"] == kind:
            return frame


def status_of(hub: Hub, token: str, command_id: str) -> Message:
    response = hub.http.get(f"/commands/{command_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    found: Message = response.json()
    return found


async def wait_status(hub: Hub, token: str, command_id: str, status: str, within_s: float = WAIT) -> Message:
    deadline = time.monotonic() + within_s
    while True:
        found = await asyncio.to_thread(status_of, hub, token, command_id)
        if found["status"] == status or time.monotonic() > deadline:
            assert found["status"] == status, found
            return found
        await asyncio.sleep(0.05)


def create(hub: Hub, token: str, **body: Any) -> str:
    response = hub.http.post(f"/devices/{DEVICE}/commands", json={"command": "reboot", **body}, headers=bearer(token))
    assert response.status_code == 202, response.text
    command_id: str = response.json()["command_id"]
    return command_id


def test_rest_on_one_process_reaches_the_device_on_the_other_and_dashboards_on_both_see_it(
    redis_url: str, tmp_path: Path
) -> None:
    with hubs(redis_url, tmp_path, 2) as (a, b):
        credentials = provision(a.http)
        token = credentials.admin_token

        async def scenario() -> None:
            boards = []
            for hub in (a, b):
                board = await connect(f"{hub.ws_url}/ws", additional_headers=bearer(token), open_timeout=WAIT)
                await board.send(
                    orjson.dumps({"op": "subscribe", "id": 1, "channel": f"devices/{DEVICE}/commands"}).decode()
                )
                reply = orjson.loads(await asyncio.wait_for(board.recv(), WAIT))
                assert reply["type"] == "reply", reply
                boards.append(board)
            ws = await device(a, credentials.device_key)
            started = time.monotonic()
            command_id = await asyncio.to_thread(create, b, token, params={"to": "v2"})
            frame = await next_frame(ws, "command")
            assert frame["command_id"] == command_id and frame["params"] == {"to": "v2"}
            await ws.send(
                msgpack.packb(
                    {"type": "command_result", "command_id": command_id, "status": "completed", "result": "ok"}
                )
            )
            done = await wait_status(b, token, command_id, "completed")
            assert done["result"] == "ok" and time.monotonic() - started < WAIT
            for number, board in enumerate(boards):
                seen = []
                for _ in range(3):
                    try:
                        seen.append(orjson.loads(await asyncio.wait_for(board.recv(), 3)))
                    except TimeoutError:
                        raise AssertionError(f"board {number} got {seen}") from None
                assert [m["data"]["status"] for m in seen] == ["queued", "sent", "completed"]
                await board.close()
            await ws.close()

        asyncio.run(scenario())


def test_sigkill_of_the_process_holding_the_device_loses_no_command(redis_url: str, tmp_path: Path) -> None:
    with hubs(redis_url, tmp_path, 2) as (a, b):
        credentials = provision(b.http)
        token = credentials.admin_token

        async def scenario() -> None:
            ws = await device(a, credentials.device_key)
            sent = await asyncio.to_thread(create, b, token, timeout_s=2)
            assert (await next_frame(ws, "command"))["command_id"] == sent
            await wait_status(b, token, sent, "sent")
            a.process.send(signal.SIGKILL)
            a.process.wait()
            # Created while the device's process is dead: queued, then written when the device is back.
            queued = await asyncio.to_thread(create, b, token, command="after-crash")
            assert (await asyncio.to_thread(status_of, b, token, queued))["status"] == "queued"
            # The command that was sent and never answered times out; it is never shown completed.
            await wait_status(b, token, sent, "timed_out", within_s=WAIT + 2)
            again = await device(b, credentials.device_key)
            frame = await next_frame(again, "command")
            assert frame["command_id"] == queued and frame["command"] == "after-crash"
            await again.send(msgpack.packb({"type": "command_result", "command_id": queued, "status": "completed"}))
            await wait_status(b, token, queued, "completed")
            await again.close()

        asyncio.run(scenario())
