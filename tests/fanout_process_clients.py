"""The clients of the two-process fan-out tests (tests/test_fanout_processes.py): ``telehub serve``
processes on one Redis, provisioning over REST, devices and dashboards on ``websockets``, and a raw-socket
dashboard that can stop reading."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from clients.positions import message_label, partition_counts
from tests.conftest import TIMEOUT
from tests.processes import ServeProcess, started, telehub_env
from tests.support import PASSWORD, bearer

ADMIN_EMAIL = "root@fanout.example"
DEVICE = "boiler-7"
EXACT = f"devices/{DEVICE}/telemetry"
WILDCARD = "devices/+/telemetry"
DEVICE_PROTOCOL = Subprotocol("telehub.v1")
MSGPACK_PROTOCOL = Subprotocol("telehub.v1.msgpack")
# One receive, one ack, one handshake: how long any single step may take.
WAIT = 5 * TIMEOUT
SLOW_CONSUMER = 4008
# The documented replay limit (README): a subscribe with ``since`` replays at most this many messages of a stream.
MAX_REPLAY = 10_000
# The contract's per-connection send buffer.
SEND_BUFFER_BYTES = 1 << 20

Message = dict[str, Any]


# Processes and provisioning.


@dataclass
class Hub:
    process: ServeProcess
    http: httpx.Client

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.process.port}/api/v1"


@dataclass(frozen=True)
class Credentials:
    admin_token: str
    device_key: str


@contextlib.contextmanager
def hubs(redis_url: str, tmp_path: Path, count: int) -> Iterator[list[Hub]]:
    """``count`` processes on the session Redis with one secret and the bootstrap admin."""
    env = telehub_env(
        TELEHUB_SECRET="fanout-secret-" + "x" * 40,
        TELEHUB_RATE_LIMIT_PER_MINUTE="1000000",
        TELEHUB_RATE_LIMIT_BURST="100000",
        TELEHUB_BOOTSTRAP_EMAIL=ADMIN_EMAIL,
        TELEHUB_BOOTSTRAP_PASSWORD=PASSWORD,
    )
    with contextlib.ExitStack() as stack:
        processes = [
            stack.enter_context(started(data_dir=tmp_path / name, env=env, args=["--redis-url", redis_url]))
            for name in ("a", "b")[:count]
        ]
        for process in processes:
            process.wait_healthy()
        yield [Hub(process, stack.enter_context(process.client())) for process in processes]


def provision(http: httpx.Client) -> Credentials:
    """The bootstrap admin's token and a key for device ``DEVICE``."""
    login = http.post("/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD})
    assert login.status_code == 200, login.text
    token: str = login.json()["token"]
    created = http.post("/devices", json={"id": DEVICE, "name": DEVICE, "type": "boiler"}, headers=bearer(token))
    assert created.status_code == 201, created.text
    keyed = http.post(f"/devices/{DEVICE}/keys", headers=bearer(token))
    assert keyed.status_code == 201, keyed.text
    return Credentials(token, keyed.json()["device_key"])


# Frames.

NOW_MS = int(time.time() * 1000)
# Names as long as the contract allows: a frame of BIG_METRICS of them is a large message (about 20 KB).
BIG_METRICS = 250
BIG_NAMES = [f"{i:03d}-".ljust(64, "m") for i in range(BIG_METRICS)]


def small_frame(seq: int) -> bytes:
    """Telemetry frame ``seq``: metric ``n`` is the seq; an explicit ts, so every stream's data is equal."""
    return msgpack.packb({"type": "telemetry", "seq": seq, "ts": NOW_MS + seq, "metrics": {"n": float(seq)}})


def big_frame(seq: int) -> bytes:
    metrics = {name: seq + i / 1000 for i, name in enumerate(BIG_NAMES)}
    metrics["n"] = float(seq)
    return msgpack.packb({"type": "telemetry", "seq": seq, "ts": NOW_MS + seq, "metrics": metrics})


def decode(raw: bytes | str) -> Message:
    message: Message = msgpack.unpackb(raw) if isinstance(raw, bytes) else orjson.loads(raw)
    return message


# A device: sends frames with at most ``window`` unacked, a background task reading its acks.


class Device:
    def __init__(self, ws: ClientConnection, hello: Message) -> None:
        assert hello["type"] == "hello" and hello["device_id"] == DEVICE, hello
        self.ws = ws
        self.sent = int(hello["last_seq"])
        self.acked = self.sent
        self.errors: list[Message] = []
        self.closed = False
        self._progress = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                reply = decode(raw)
                if reply["type"] == "ack":
                    self.acked = max(self.acked, int(reply["seq"]))
                elif reply["type"] == "error":
                    self.errors.append(reply)
                self._progress.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._progress.set()

    async def until(self, condition: Callable[[], bool], within: float, what: str) -> None:
        async with asyncio.timeout(within):
            while not condition():
                assert not self.closed, f"the device connection closed while waiting for {what}"
                self._progress.clear()
                await self._progress.wait()

    async def send(self, frame: Callable[[int], bytes], *, window: int) -> int:
        """Send the next frame once fewer than ``window`` are unacked; its seq."""
        await self.until(lambda: self.sent - self.acked < window, WAIT, "an ack")
        self.sent += 1
        await self.ws.send(frame(self.sent))
        return self.sent

    async def publish(self, count: int, frame: Callable[[int], bytes] = small_frame, *, window: int = 16) -> int:
        """Send ``count`` frames and wait for all their acks; the last seq."""
        for _ in range(count):
            await self.send(frame, window=window)
        await self.all_acked()
        return self.sent

    async def all_acked(self) -> None:
        await self.until(lambda: self.acked >= self.sent, WAIT, f"the ack of frame {self.sent}")
        assert self.errors == []

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@contextlib.asynccontextmanager
async def device(hub: Hub, key: str) -> AsyncIterator[Device]:
    async with connect(
        hub.ws_url + "/ws/device",
        additional_headers=bearer(key),
        subprotocols=[DEVICE_PROTOCOL],
        compression=None,
        open_timeout=WAIT,
        close_timeout=TIMEOUT,
    ) as ws:
        hello = decode(await asyncio.wait_for(ws.recv(), WAIT))
        connected = Device(ws, hello)
        try:
            yield connected
        finally:
            await connected.close()


# A dashboard through the websockets client.


class Dashboard:
    def __init__(self, ws: ClientConnection, *, binary: bool) -> None:
        self.ws = ws
        self.binary = binary

    async def next(self) -> Message:
        raw = await asyncio.wait_for(self.ws.recv(), WAIT)
        assert isinstance(raw, bytes) == self.binary, f"a {type(raw).__name__} frame on this connection: {raw!r}"
        return decode(raw)

    async def ask(self, op: Message) -> Message:
        await self.ws.send(msgpack.packb(op) if self.binary else orjson.dumps(op).decode())
        return await self.next()

    async def subscribe(self, channel: str, **extra: Any) -> Message:
        """The ``result`` of a successful subscribe."""
        reply = await self.ask({"op": "subscribe", "id": 1, "channel": channel, **extra})
        assert reply["type"] == "reply" and reply["id"] == 1, reply
        result: Message = reply["result"]
        assert result["channel"] == channel
        return result

    async def message(self) -> Message:
        message = await self.next()
        assert message["type"] == "message", message
        return message

    async def messages(self, count: int) -> list[Message]:
        got: list[Message] = []
        try:
            while len(got) < count:
                got.append(await self.message())
        except ConnectionClosed as exc:
            raise AssertionError(f"closed after {len(got)} of {count} messages: {exc}") from exc
        return got

    async def nothing_more(self) -> None:
        """A ping's pong is the next frame: no message (a duplicate, say) is pending."""
        assert await self.ask({"op": "ping", "id": 99}) == {"type": "pong", "id": 99}


@contextlib.asynccontextmanager
async def dashboard(hub: Hub, token: str, *, binary: bool = False) -> AsyncIterator[Dashboard]:
    async with connect(
        hub.ws_url + "/ws",
        additional_headers=bearer(token),
        subprotocols=[MSGPACK_PROTOCOL] if binary else None,
        compression=None,
        open_timeout=WAIT,
        close_timeout=TIMEOUT,
        max_size=None,
    ) as ws:
        assert ws.subprotocol == (MSGPACK_PROTOCOL if binary else None)
        yield Dashboard(ws, binary=binary)


def seqs(messages: list[Message]) -> list[int]:
    return [int(message["data"]["metrics"]["n"]) for message in messages]


def position(message: Message, reply: Message) -> dict[str, str]:
    """The ``since`` that resumes right after ``message``, read on the subscription that ``reply`` answered
    (when every message after that reply came from one device). A channel of several streams (a wildcard one
    over a partitioned organization) has a composite position: the reply's, with the message's part moved on
    (clients/positions.py finds the part)."""
    if "=" not in reply["offset"]:
        return {"offset": message["offset"], "epoch": message["epoch"]}
    offsets = dict(part.split("=", 1) for part in reply["offset"].split(","))
    offsets[message_label(message["channel"], partition_counts(list(offsets)))] = message["offset"]
    return {"offset": ",".join(f"{k}={v}" for k, v in sorted(offsets.items())), "epoch": reply["epoch"]}


def epoch_of(message: Message, reply: Message) -> str:
    """The epoch of the stream ``message`` came from, from its subscription's ``reply``."""
    if "=" not in reply["epoch"]:
        return str(reply["epoch"])
    epochs = dict(part.split("=", 1) for part in reply["epoch"].split(","))
    return epochs[message_label(message["channel"], partition_counts(list(epochs)))]


def another_history(epoch: str) -> str:
    """An epoch (plain or composite) of another history for every stream."""
    if "=" not in epoch:
        return "another-history"
    return ",".join(f"{part.split('=', 1)[0]}=another-history" for part in epoch.split(","))


# A dashboard on a plain socket with a small receive buffer: it reads only when told to.


class RawDashboard:
    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.buffer = b""
        # Bytes read from the socket so far.
        self.received = 0
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.sock.settimeout(WAIT)
            self.sock.connect(("127.0.0.1", port))
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                "GET /api/v1/ws HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            )
            self.sock.sendall(request.encode())
            while b"\r\n\r\n" not in self.buffer:
                self._fill()
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 101 "), head
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.received += len(chunk)
        self.buffer += chunk

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def send_json(self, op: Message) -> None:
        """One masked text frame, as a client sends it."""
        payload = orjson.dumps(op)
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    def frame(self) -> tuple[int, bytes]:
        """The next frame from the server (unmasked, unfragmented): opcode and payload."""
        first, second = self._take(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._take(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._take(8))
        return first & 0x0F, self._take(size)

    def close_code(self, timeout: float) -> int | str:
        """Read on until the close frame: its code, or ``"reset"`` when the connection was reset instead."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                opcode, payload = self.frame()
                if opcode == 0x8:
                    code: int = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    return code
        except ConnectionResetError:
            return "reset"
        except EOFError:
            return "closed without a close frame"
        except TimeoutError:
            return f"no close frame within {timeout:.0f} s"
        return f"still receiving messages after {timeout:.0f} s"


@contextlib.contextmanager
def raw_dashboard(port: int, token: str) -> Iterator[RawDashboard]:
    client = RawDashboard(port, token)
    try:
        yield client
    finally:
        client.close()
