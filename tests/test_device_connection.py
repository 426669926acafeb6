"""The device WebSocket on the lean path ``telehub serve`` uses (hub.websocket_dispatch -> DeviceConnection),
served by a real uvicorn on a loopback port and driven by a real WebSocket client (and a raw socket)."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx2 as httpx
import msgpack
import orjson
import pytest
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hub.app import create_app
from hub.config import HubConfig
from hub.websocket_dispatch import WebSocketDispatch
from ingest import stream_keys
from tests.conftest import TIMEOUT
from tests.processes import free_port

ADMIN, PASSWORD = "admin@lean.example", "correct-horse-battery"
MAX_FRAME = 4096
PING_INTERVAL = 0.2


@dataclass
class LiveHub:
    url: str
    ws_url: str
    app: Any
    admin: dict[str, str]
    org_id: str

    async def device_key(self, device_id: str = "meter-1") -> str:
        async with httpx.AsyncClient(base_url=self.url + "/api/v1", timeout=10 * TIMEOUT) as http:
            body = {"id": device_id, "name": device_id, "type": "meter"}
            assert (await http.post("/devices", json=body, headers=self.admin)).status_code == 201
            key: str = (await http.post(f"/devices/{device_id}/keys", headers=self.admin)).json()["device_key"]
            return key

    async def stored_seqs(self, device_id: str = "meter-1") -> list[int]:
        redis = self.app.state.device_ingest.frames_redis
        entries = await redis.xrange(stream_keys.device_frames(self.org_id, device_id))
        return [int(fields[b"s"]) for _, fields in entries]

    def connect(self, key: str, query: str = "", **kwargs: Any) -> Any:
        return websockets.connect(
            self.ws_url + query, additional_headers={"Authorization": f"Bearer {key}"}, max_size=None, **kwargs
        )


@pytest.fixture
async def hub(config: HubConfig) -> AsyncIterator[LiveHub]:
    config = replace(config, bootstrap_email=ADMIN, bootstrap_password=PASSWORD, max_frame_bytes=MAX_FRAME)
    app = create_app(config)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ws=WebSocketDispatch,
            ws_max_size=MAX_FRAME,
            ws_ping_interval=PING_INTERVAL,
            ws_ping_timeout=PING_INTERVAL,
            log_level="warning",
        )
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10 * TIMEOUT
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url + "/api/v1") as http:
        login = (await http.post("/auth/login", json={"email": ADMIN, "password": PASSWORD})).json()
    try:
        yield LiveHub(
            url,
            f"ws://127.0.0.1:{port}/api/v1/ws/device",
            app,
            {"Authorization": f"Bearer {login['token']}"},
            login["user"]["org_id"],
        )
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10 * TIMEOUT)


def telemetry(seq: int) -> bytes:
    return msgpack.packb({"type": "telemetry", "seq": seq, "metrics": {"temp": float(seq)}})


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), 5 * TIMEOUT)
    if isinstance(message, bytes):
        decoded: dict[str, Any] = msgpack.unpackb(message)
        return decoded
    return {**orjson.loads(message), "_text": True}


async def test_handshake_without_a_valid_key_is_401_with_the_error_envelope(hub: LiveHub) -> None:
    for headers in ({}, {"Authorization": "Bearer dk_nope"}, {"Authorization": "Basic abc"}):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(hub.ws_url, additional_headers=headers):
                pass
        response = refused.value.response
        assert response.status_code == 401
        body = orjson.loads(response.body)
        assert body["error"]["code"] == "unauthenticated"
        assert body["error"]["request_id"] == response.headers["X-Request-Id"]


async def test_subprotocol_hello_acks_and_errors_in_each_encoding(hub: LiveHub) -> None:
    key = await hub.device_key()
    async with hub.connect(key, subprotocols=["telehub.v1"]) as ws:
        assert ws.subprotocol == "telehub.v1"
        hello = await next_frame(ws)
        assert hello["type"] == "hello" and hello["device_id"] == "meter-1" and hello["last_seq"] == 0
        await ws.send(telemetry(1))
        assert await next_frame(ws) == {"type": "ack", "seq": 1}
        await ws.send(b"\xc1 not msgpack")
        error = await next_frame(ws)
        assert error["type"] == "error" and error["code"] == "invalid_encoding" and "seq" not in error
        await ws.send(orjson.dumps({"type": "telemetry", "seq": 2, "metrics": {"temp": "hot"}}).decode())
        error = await next_frame(ws)
        assert error == {**error, "type": "error", "seq": 2, "code": "invalid_value", "_text": True}
        await ws.send(orjson.dumps({"type": "telemetry", "seq": 3, "metrics": {"temp": 3}}).decode())
        assert await next_frame(ws) == {"type": "ack", "seq": 3, "_text": True}
    async with hub.connect(key, query="?encoding=json") as ws:
        assert ws.subprotocol is None
        hello = await next_frame(ws)
        assert hello["_text"] and hello["last_seq"] == 3
    assert await hub.stored_seqs() == [1, 3]


async def test_a_fragmented_message_is_one_frame_stored_once(hub: LiveHub) -> None:
    key = await hub.device_key()
    whole = telemetry(1)
    async with hub.connect(key) as ws:
        await next_frame(ws)
        await ws.send([whole[:5], whole[5:9], whole[9:]])
        assert await next_frame(ws) == {"type": "ack", "seq": 1}
        await ws.send(telemetry(1))  # a resend of what is stored: acked, not stored again
        assert await next_frame(ws) == {"type": "ack", "seq": 1}
    assert await hub.stored_seqs() == [1]


async def test_a_frame_over_the_limit_closes_1009_and_nothing_of_it_is_stored(hub: LiveHub) -> None:
    key = await hub.device_key()
    async with hub.connect(key) as ws:
        await next_frame(ws)
        await ws.send(telemetry(1))
        assert await next_frame(ws) == {"type": "ack", "seq": 1}
        await ws.send(msgpack.packb({"type": "event", "seq": 2, "name": "blob", "data": "x" * MAX_FRAME}))
        with pytest.raises(ConnectionClosed) as closed:
            await next_frame(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert await hub.stored_seqs() == [1]


async def test_a_second_connection_replaces_the_first_with_4003(hub: LiveHub) -> None:
    key = await hub.device_key()
    async with hub.connect(key) as first:
        await next_frame(first)
        async with hub.connect(key) as second:
            await next_frame(second)
            with pytest.raises(ConnectionClosed) as closed:
                await next_frame(first)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003
            await second.send(telemetry(1))
            assert await next_frame(second) == {"type": "ack", "seq": 1}


async def test_a_late_notice_from_an_older_connection_closes_nothing(hub: LiveHub) -> None:
    """Connection notices cross processes over pub/sub and may arrive out of order (different publishing
    connections; different nodes of a cluster). The notice of the device's earlier connection, arriving after
    its newer one opened, must not close the newer one; a notice of a newer connection still does."""
    key = await hub.device_key()
    gateway = hub.app.state.device_ingest.gateway
    async with hub.connect(key) as first:
        await next_frame(first)
    async with hub.connect(key) as current:
        await next_frame(current)
        [session] = gateway.sessions.values()
        assert session.generation == 2
        stale = {"type": "session_opened", "org_id": hub.org_id, "device_id": "meter-1", "connection_id": "old"}
        gateway.on_control({**stale, "generation": 1})
        await current.send(telemetry(1))
        assert await next_frame(current) == {"type": "ack", "seq": 1}
        gateway.on_control({**stale, "generation": 3})
        with pytest.raises(ConnectionClosed) as closed:
            await next_frame(current)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003


async def test_many_frames_in_one_burst_are_all_stored_in_order_and_acked(hub: LiveHub) -> None:
    key = await hub.device_key()
    total = 3000  # more than a connection may have in flight: reading pauses and resumes
    async with hub.connect(key) as ws:
        await next_frame(ws)
        for seq in range(1, total + 1):
            await ws.send(telemetry(seq))
        acked = 0
        while acked < total:
            ack = await next_frame(ws)
            assert ack["type"] == "ack" and ack["seq"] > acked
            acked = ack["seq"]
    assert await hub.stored_seqs() == list(range(1, total + 1))


async def test_a_device_that_answers_pings_stays_and_a_silent_one_is_dropped_and_offline(hub: LiveHub) -> None:
    key = await hub.device_key()
    async with hub.connect(key, ping_interval=None) as ws:  # the client answers the server's pings
        await next_frame(ws)
        await asyncio.sleep(8 * PING_INTERVAL)
        await ws.send(telemetry(1))
        assert await next_frame(ws) == {"type": "ack", "seq": 1}

    # A raw socket that completes the handshake and then never reads or answers anything.
    reader, writer = await asyncio.open_connection("127.0.0.1", int(hub.url.rsplit(":", 1)[1]))
    nonce = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /api/v1/ws/device HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n"
        ).encode()
    )
    status = await asyncio.wait_for(reader.readline(), 5 * TIMEOUT)
    assert status.startswith(b"HTTP/1.1 101")
    devices = "/devices/meter-1"
    async with httpx.AsyncClient(base_url=hub.url + "/api/v1") as http:
        deadline = time.monotonic() + 5 * TIMEOUT
        while (await http.get(devices, headers=hub.admin)).json()["status"] != "online":  # set after the 101
            assert time.monotonic() < deadline, "the connected device is not online"
            await asyncio.sleep(0.05)
        # Everything the server sends is ignored; after a ping goes unanswered the connection is dropped.
        await asyncio.wait_for(reader.read(), 20 * PING_INTERVAL + 5 * TIMEOUT)
        assert reader.at_eof()
        deadline = time.monotonic() + 5 * TIMEOUT
        while (await http.get(devices, headers=hub.admin)).json()["status"] != "offline":
            assert time.monotonic() < deadline, "the dropped device is still online"
            await asyncio.sleep(0.05)
    writer.close()
