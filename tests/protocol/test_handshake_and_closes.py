"""docs/protocol.md's handshake, refusals and close codes, against a live hub."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
from pathlib import Path
from typing import Any

import httpx2 as httpx
import msgpack
import websockets
from websockets.exceptions import ConnectionClosed

from hub.config import HubConfig
from tests.processes import serve
from tests.protocol.conftest import Live
from tests.protocol.page import ADMIN_EMAIL, ADMIN_PASSWORD, FENCE, WAIT, hub_env, page, table


def raw_http(port: int, request: str) -> tuple[str, bytes]:
    """Send ``request`` on a fresh TCP connection; the answer's head (CRLF as newlines) and what follows."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length: *(\d+)", head)
        while length is not None and len(rest) < int(length[1]):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return head.decode().replace("\r\n", "\n"), rest


async def test_the_handshake_is_the_pages(live: Live) -> None:
    block = page().split("<!-- handshake -->", 1)[1].split("<!-- /handshake -->", 1)[0]
    request, response = (m[2] for m in FENCE.finditer(block))
    _, key = await live.device()
    request = request.replace("dk_…", key).replace("hub.example.com:8080", f"127.0.0.1:{live.process.port}")
    expected = [line for line in response.splitlines() if not line.startswith("Date:")]
    head, _ = raw_http(live.process.port, request.replace("\n", "\r\n") + "\r\n\r\n")
    assert [line for line in head.splitlines() if not line.startswith("Date:")] == expected
    # "an offered permessage-deflate is not taken": the same answer.
    assert "| extensions | none: an offered `permessage-deflate` is not taken" in page()
    deflate = request.replace("\nAuthorization", "\nSec-WebSocket-Extensions: permessage-deflate\nAuthorization")
    head, _ = raw_http(live.process.port, deflate.replace("\n", "\r\n") + "\r\n\r\n")
    assert [line for line in head.splitlines() if not line.startswith("Date:")] == expected


async def test_refused_handshakes_answer_the_pages_statuses(live: Live) -> None:
    rows = {int(row[0]): row for row in table(page(), "A refused handshake is an HTTP answer")}
    assert set(rows) == {101, 400, 401, 403, 404, 503}
    port = live.process.port
    upgrade = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    key_header = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    cases = {
        400: "GET /api/v1/ws/device HTTP/1.1\r\n" + upgrade + "\r\n",
        401: "GET /api/v1/ws/device HTTP/1.1\r\n" + upgrade + key_header + "Authorization: Bearer dk_unknown\r\n\r\n",
        403: "GET /api/v1/ws/devices HTTP/1.1\r\n" + upgrade + key_header + "\r\n",
        404: "GET /api/v1/ws/device HTTP/1.1\r\nHost: x\r\n\r\n",
    }
    for status, request in cases.items():
        head, body = raw_http(port, request)
        assert head.split("\n", 1)[0].split(" ")[1] == str(status), (status, head)
        code = re.search(r'"code": "([a-z_]+)"', rows[status][2])
        if code is not None:
            assert json.loads(body)["error"]["code"] == code[1], (status, body)
        elif rows[status][2] == "empty":
            assert body == b""
        else:
            assert body.startswith(b"Failed to open a WebSocket connection: missing Sec-WebSocket-Key")
    # And with no Authorization header at all.
    head, body = raw_http(port, "GET /api/v1/ws/device HTTP/1.1\r\n" + upgrade + key_header + "\r\n")
    assert head.startswith("HTTP/1.1 401") and json.loads(body)["error"]["code"] == "unauthenticated"
    # A client that offers no subprotocol is served the same.
    _, key = await live.device()
    async with websockets.connect(live.ws_url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        assert ws.subprotocol is None and msgpack.unpackb(await ws.recv())["type"] == "hello"


# Close codes.


def close_rows() -> dict[int, list[str]]:
    return {int(row[0]): row for row in table(page(), "## Close codes")}


def reason(code: int) -> str:
    return re.search(r"reason: `([^`]+)`", close_rows()[code][2])[1]  # type: ignore[index]


async def closed_with(ws: Any) -> tuple[int | None, str | None]:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    return ws.close_code, ws.close_reason


async def test_close_codes_1009_4003_4001_1002_as_the_page_says(live: Live) -> None:
    assert set(close_rows()) == {1000, 1002, 1006, 1009, 1012, 4001, 4003}
    limit = HubConfig().max_frame_bytes
    device_id, key = await live.device()
    async with live.connect(key) as ws:
        await ws.recv()
        await ws.send(b"\xc1" * limit)  # at the limit: refused as a frame, the connection stays
        assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))["code"] == "invalid_encoding"
        await ws.send(b"\xc1" * (limit + 1))
        assert await closed_with(ws) == (1009, reason(1009).replace("N", str(limit + 1)))
    async with live.connect(key) as first:
        await first.recv()
        async with live.connect(key) as second:
            await second.recv()
            assert await closed_with(first) == (4003, reason(4003))
            assert (await live.http.post(f"/devices/{device_id}/keys")).status_code == 201  # rotation
            assert await closed_with(second) == (4001, reason(4001))
    _, key = await live.device(device_id + "-deleted")
    async with live.connect(key) as ws:
        await ws.recv()
        assert (await live.http.delete(f"/devices/{device_id}-deleted")).status_code == 204
        assert await closed_with(ws) == (4001, reason(4001))
    # 1002: an unmasked frame (raw socket: client libraries always mask).
    _, key = await live.device()
    request = (
        "GET /api/v1/ws/device HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {key}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", live.process.port), timeout=WAIT) as sock:
        sock.sendall(request.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        hello = received.partition(b"\r\n\r\n")[2]
        while len(hello) < 2 or len(hello) < 2 + hello[1]:
            hello += sock.recv(65536)
        sock.sendall(b"\x82\x01\xc1")  # FIN + binary, length 1, no mask bit
        rest = hello[2 + hello[1] :]
        while len(rest) < 4:
            chunk = sock.recv(65536)
            assert chunk, "closed without a close frame"
            rest += chunk
    assert rest[0] == 0x88 and int.from_bytes(rest[2:4], "big") == 1002  # a close frame, code 1002


async def test_close_1012_when_the_hub_shuts_down(tmp_path: Path) -> None:
    with serve(data_dir=tmp_path / "data", env=hub_env()) as process:
        async with httpx.AsyncClient(base_url=process.url + "/api/v1", timeout=WAIT) as http:
            login = await http.post("/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            http.headers["Authorization"] = "Bearer " + login.json()["token"]
            live = Live(process, http)
            _, key = await live.device()
            async with live.connect(key) as ws:
                await ws.recv()
                await ws.send(msgpack.packb({"type": "telemetry", "seq": 1, "metrics": {"t": 1}}))
                assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT)) == {"type": "ack", "seq": 1}
                process.send(signal.SIGTERM)
                assert await closed_with(ws) == (1012, reason(1012))
        assert process.wait() == 0
