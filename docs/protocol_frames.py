"""Regenerate the frame dumps of docs/protocol.md from a live hub.

    .venv/bin/python docs/protocol_frames.py

Starts ``telehub serve`` (embedded Redis, a temporary data directory, a free port), creates device
``boiler-7`` and its key, then plays the page's conversation over a raw WebSocket client: every frame the
device sends is encoded here with msgpack as a device would encode it, and every frame the hub sends back is
recorded as received. It then rewrites, in docs/protocol.md, each block between ``<!-- frame DIRECTION NAME -->``
and ``<!-- /frame -->``, the handshake block and the byte-by-byte annotation, and leaves the prose alone. The
names in the page must come in the order played here (tests/protocol/ replays them in page order).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import websockets

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "protocol.md"
DEVICE_ID = "boiler-7"
# A fixed handshake key (RFC 6455's example), so Sec-WebSocket-Accept in the page is the one a reader computes.
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "change-me-now"


@dataclass
class Frame:
    direction: str  # "device" (device -> hub) or "hub" (hub -> device)
    name: str
    data: bytes | str  # bytes: a binary (MessagePack) message; str: a text (JSON) message


# Rendering.


def hexdump(data: bytes) -> str:
    """``xxd -g1``: offset, 16 bytes in hex, then the printable ASCII (``.`` for the rest)."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hex_part = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:08x}: {hex_part:<47}  {text}")
    return "\n".join(lines)


def as_json(value: Any, key: str = "") -> Any:
    """A decoded MessagePack value as JSON; a bin becomes ``{"$bin": hex, "$dtype": ..., "$values": [...]}``,
    its dtype the one the hub reads it with (``ts``: little-endian int64, values: little-endian float64)."""
    if isinstance(value, dict):
        return {k: as_json(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, bytes):
        dtype = "<i8" if key == "ts" else "<f8"
        return {"$bin": value.hex(), "$dtype": dtype, "$values": np.frombuffer(value, dtype=dtype).tolist()}
    return value


def render_json(value: Any, indent: int = 0, width: int = 110) -> str:
    """JSON on one line when it fits in ``width``, else one member per line, each as compact as fits."""
    text = json.dumps(value, ensure_ascii=False)
    if indent + len(text) <= width or not isinstance(value, dict | list) or not value:
        return text
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        members = [f"{pad}{json.dumps(k)}: {render_json(v, indent + 2, width)}" for k, v in value.items()]
        return "{\n" + ",\n".join(members) + "\n" + " " * indent + "}"
    items = [pad + render_json(v, indent + 2, width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def render_frame(frame: Frame) -> str:
    if isinstance(frame.data, str):
        return f"```json\n{frame.data}\n```"
    try:
        decoded = as_json(msgpack.unpackb(frame.data, raw=False))
    except (ValueError, msgpack.UnpackException):  # the undecodable example: its dump alone
        return f"```text\n{hexdump(frame.data)}\n```"
    return f"```text\n{hexdump(frame.data)}\n```\n\n```json\n{render_json(decoded)}\n```"


# A MessagePack walk for the annotation table.


def _read(data: bytes, pos: int, n: int) -> int:
    return int.from_bytes(data[pos : pos + n], "big")


def tokens(data: bytes, pos: int = 0, role: str = "the frame") -> Iterator[tuple[int, int, str, str]]:
    """(offset, length, MessagePack format, meaning) for each token, depth first."""
    b = data[pos]
    if b <= 0x7F:
        yield pos, 1, "positive fixint (0x00-0x7f: the value itself)", f"{role} = {b}"
    elif 0x80 <= b <= 0x8F or b == 0xDE:
        count, head = (b & 0x0F, 1) if b <= 0x8F else (_read(data, pos + 1, 2), 3)
        fmt = f"fixmap (0x80 + {count} entries)" if b <= 0x8F else f"map 16 ({count} entries)"
        yield pos, head, fmt, f"{role}: a map of {count} entries"
        pos += head
        for _ in range(count):
            key_length = _length(data, pos)
            key = msgpack.unpackb(data[pos : pos + key_length], raw=False)
            yield from tokens(data, pos, "key")
            pos += key_length
            value_length = _length(data, pos)
            yield from tokens(data, pos, f"{key!r}".replace("'", '"'))
            pos += value_length
    elif 0x90 <= b <= 0x9F:
        count = b & 0x0F
        yield pos, 1, f"fixarray (0x90 + {count} items)", f"{role}: an array of {count} items"
        pos += 1
        for i in range(count):
            length = _length(data, pos)
            yield from tokens(data, pos, f"{role}[{i}]")
            pos += length
    elif 0xA0 <= b <= 0xBF or b == 0xD9:
        n, head = (b & 0x1F, 1) if b <= 0xBF else (data[pos + 1], 2)
        fmt = f"fixstr (0xa0 + {n} bytes of UTF-8)" if b <= 0xBF else f"str 8 (length {n} in the next byte)"
        text = data[pos + head : pos + head + n].decode()
        yield pos, head + n, fmt, f'{role} "{text}"' if role == "key" else f'{role} = "{text}"'
    elif b == 0xC4:
        n = data[pos + 1]
        yield pos, 2 + n, f"bin 8 (length {n} in the next byte)", f"{role} = {n} raw bytes"
    elif b == 0xCB:
        value = msgpack.unpackb(data[pos : pos + 9])
        yield pos, 9, "float 64 (IEEE 754, big-endian)", f"{role} = {value!r}"
    elif b in (0xCC, 0xCD, 0xCE, 0xCF):
        n = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}[b]
        value = _read(data, pos + 1, n)
        meaning = f"{role} = {value}"
        if value > 10**12:
            stamp = datetime.fromtimestamp(value / 1000, UTC).isoformat(timespec="milliseconds")
            meaning += f" ({stamp.replace('+00:00', 'Z')})"
        yield pos, 1 + n, f"uint {8 * n} (big-endian)", meaning
    elif b in (0xC2, 0xC3, 0xC0):
        yield pos, 1, {0xC2: "false", 0xC3: "true", 0xC0: "nil"}[b], role
    else:
        raise ValueError(f"annotation: format 0x{b:02x} at {pos} not described")


def _length(data: bytes, pos: int) -> int:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data[pos:])
    unpacker.skip()
    return unpacker.tell()


def annotation(data: bytes) -> str:
    rows = ["| offset | bytes | MessagePack format | meaning |", "|---|---|---|---|"]
    for offset, length, fmt, meaning in tokens(data):
        hex_bytes = " ".join(f"{b:02x}" for b in data[offset : offset + length])
        rows.append(f"| {offset} | `{hex_bytes}` | {fmt} | {meaning} |")
    return "\n".join(rows)


# The conversation.


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def pack(frame: dict[str, Any]) -> bytes:
    return msgpack.packb(frame, use_bin_type=True)


async def conversation(url: str, key: str, admin: dict[str, str]) -> tuple[list[Frame], bytes]:
    """Play the page's conversation; the frames in order, and the telemetry frame to annotate."""
    ws_url = url.replace("http://", "ws://") + "/api/v1/ws/device"
    headers = {"Authorization": f"Bearer {key}"}
    frames: list[Frame] = []
    t = (now_ms() // 1000 - 10) * 1000  # a round second, a little before the hub's clock

    async def hub(ws: Any, name: str) -> Any:
        data = await asyncio.wait_for(ws.recv(), 10)
        frames.append(Frame("hub", name, data))
        return msgpack.unpackb(data, raw=False) if isinstance(data, bytes) else json.loads(data)

    async def device(ws: Any, name: str, data: bytes | str) -> None:
        frames.append(Frame("device", name, data))
        await ws.send(data)

    point = pack({"type": "telemetry", "seq": 1, "ts": t, "metrics": {"temp": 21.5, "hum": 40.2}})
    points = pack(
        {
            "type": "telemetry",
            "seq": 2,
            "points": [{"ts": t + 1000, "metrics": {"temp": 21.6}}, {"ts": t + 2000, "metrics": {"temp": 21.7}}],
        }
    )
    ts = np.array([t + 3000, t + 3010, t + 3020], dtype="<i8")
    columns = pack(
        {
            "type": "columns",
            "seq": 3,
            "ts": ts.tobytes(),
            "metrics": {
                "vib_x": np.array([0.5, -0.25, 0.125], dtype="<f8").tobytes(),
                "vib_y": np.array([1.0, 0.75, -1.5], dtype="<f8").tobytes(),
            },
        }
    )
    event = pack({"type": "event", "seq": 4, "ts": t + 4000, "name": "door_opened", "data": {"door": "north"}})
    async with httpx.AsyncClient(base_url=url + "/api/v1", timeout=10) as http:
        async with websockets.connect(ws_url, additional_headers=headers, subprotocols=["telehub.v1"]) as ws:
            await hub(ws, "hello")
            for name, data, answer in [
                ("telemetry-point", point, "ack-1"),
                ("telemetry-points", points, "ack-2"),
                ("columns", columns, "ack-3"),
                ("event", event, "ack-4"),
                ("telemetry-point-again", point, "ack-duplicate"),
                ("bad-metric-name", pack({"type": "telemetry", "seq": 5, "metrics": {"temp C": 21.5}}), "error-5"),
                (
                    "bad-timestamp",
                    pack({"type": "telemetry", "seq": 6, "ts": 1000, "metrics": {"temp": 21.5}}),
                    "error-6",
                ),
                ("not-messagepack", b"\xc1", "error-no-seq"),
            ]:
                await device(ws, name, data)
                await hub(ws, answer)
            body = {"command": "reboot", "params": {"delay_s": 5}}
            reply = await http.post(f"/devices/{DEVICE_ID}/commands", json=body, headers=admin)
            reply.raise_for_status()
            command = await hub(ws, "command")
            result = pack(
                {
                    "type": "command_result",
                    "command_id": command["command_id"],
                    "status": "completed",
                    "result": {"rebooting_in_s": 5},
                }
            )
            await device(ws, "command-result", result)
            await hub(ws, "ack-result")
            await device(ws, "command-result-again", result)
            await hub(ws, "error-result-again")
        async with websockets.connect(ws_url, additional_headers=headers, subprotocols=["telehub.v1"]) as ws:
            await hub(ws, "hello-again")
            await device(ws, "telemetry-no-ts", pack({"type": "telemetry", "seq": 7, "metrics": {"temp": 21.8}}))
            await hub(ws, "ack-7")
        async with websockets.connect(ws_url + "?encoding=json", additional_headers=headers) as ws:
            await hub(ws, "hello-json")
            await device(ws, "telemetry-json", '{"type": "telemetry", "seq": 8, "metrics": {"temp": 21.9}}')
            await hub(ws, "ack-json")
    return frames, point


def handshake(port: int, key: str) -> tuple[str, str]:
    """The upgrade request as a device sends it and the hub's answer, as text (the key shown as ``dk_…``)."""
    request = (
        "GET /api/v1/ws/device HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {WS_KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: telehub.v1\r\n"
        f"Authorization: Bearer {key}\r\n"
        "\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    head = answer.partition(b"\r\n\r\n")[0].decode()
    shown = request.replace(key, "dk_…").replace(f"127.0.0.1:{port}", "hub.example.com:8080")
    return shown.rstrip("\r\n").replace("\r\n", "\n"), head.replace("\r\n", "\n")


# Rewriting the page.

FRAME_BLOCK = re.compile(r"(<!-- frame (device|hub) ([a-z0-9-]+) -->\n).*?(<!-- /frame -->)", re.S)


def rewrite(page: str, frames: list[Frame], annotated: bytes, shake: tuple[str, str]) -> str:
    names = [(m[2], m[3]) for m in FRAME_BLOCK.finditer(page)]
    played = [(f.direction, f.name) for f in frames]
    if names != played:
        raise SystemExit(f"the page's frame blocks {names} are not the conversation played {played}")
    rendered = iter(frames)
    page = FRAME_BLOCK.sub(lambda m: m[1] + render_frame(next(rendered)) + "\n" + m[4], page)
    request, response = shake
    block = f"```http\n{request}\n```\n\n```http\n{response}\n```"
    page = _replace(page, "handshake", block)
    return _replace(page, "annotation", annotation(annotated))


def _replace(page: str, name: str, content: str) -> str:
    pattern = re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.S)
    if pattern.search(page) is None:
        raise SystemExit(f"the page has no <!-- {name} --> block")
    return pattern.sub(lambda m: m[1] + content + "\n" + m[2], page)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from tests.processes import serve, telehub_env

    env = telehub_env(
        TELEHUB_BOOTSTRAP_EMAIL=ADMIN_EMAIL,
        TELEHUB_BOOTSTRAP_PASSWORD=ADMIN_PASSWORD,
        TELEHUB_SECRET="protocol-frames-" + "x" * 40,
    )
    with tempfile.TemporaryDirectory() as tmp, serve(data_dir=Path(tmp) / "data", env=env) as process:
        api = process.url + "/api/v1"
        login = httpx.post(api + "/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        admin = {"Authorization": "Bearer " + login.raise_for_status().json()["token"]}
        device = {"id": DEVICE_ID, "name": "Boiler 7", "type": "boiler"}
        httpx.post(api + "/devices", json=device, headers=admin).raise_for_status()
        key = httpx.post(f"{api}/devices/{DEVICE_ID}/keys", headers=admin).raise_for_status().json()["device_key"]
        shake = handshake(process.port, key)
        frames, annotated = asyncio.run(conversation(process.url, key, admin))
    PAGE.write_text(rewrite(PAGE.read_text(), frames, annotated, shake))
    print(f"rewrote {len(frames)} frames, the handshake and the annotation in {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
