"""The ``fanout`` load generator's clients: dashboards that count what arrives, publishers that send at a rate.

Dashboards are where the load generator's CPU goes (every published frame comes back hundreds of times), so
their receive path does the least it can: it walks the frame headers of each read (WebSocket, MQTT or NATS)
in one loop, counts the deliveries, and decodes only one in ``sample_every`` of them, and of that one only
the ``sent_us`` metric, for the latency. Opening and subscribing go through a slow path that parses
everything; so do the rare control frames (pings, closes) once a dashboard is live.

- ``telehub-ws`` (telehub, the floor): dashboards send ``{"op": "subscribe", "id": 1, "channel":
  "devices/+/telemetry"}`` (or one device's channel) on ``/api/v1/ws``; devices send the MessagePack
  ``telemetry`` frame on ``/api/v1/ws/device`` (API.md §4).
- ``mqtt`` (Mosquitto): SUBSCRIBE ``devices/+/telemetry`` or exact with QoS 0; PUBLISH to
  ``devices/<id>/telemetry`` with QoS 0.
- ``nats`` (NATS): ``SUB devices.*.telemetry`` or exact; ``PUB devices.<id>.telemetry``.
- ``socketio`` (python-socketio): the event ``subscribe`` with room ``all`` or ``device:<id>``, acked; the
  event ``publish`` with the frame as JSON.

The publishers that send what these dashboards count are in ``fanout_publishers``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import msgpack
import orjson

from benchmarks.fanout_frames import sent_us_of
from benchmarks.peers import _mqtt_string, _remaining_length, mqtt_connect
from benchmarks.wsclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    HandshakeError,
    encode_frame,
    handshake_request,
    parse_handshake_response,
)

__all__ = [
    "DASHBOARD_PATH",
    "MSGPACK_SUBPROTOCOL",
    "SOCKETIO_PATH",
    "Dashboard",
    "Opening",
    "Tally",
    "dashboard_factory",
    "subscription",
]

DASHBOARD_PATH = "/api/v1/ws"
MSGPACK_SUBPROTOCOL = "telehub.v1.msgpack"
SOCKETIO_PATH = "/socket.io/?EIO=4&transport=websocket"
CLOSE_TIMEOUT_S = 5.0
# What each protocol's dashboards subscribe to: every device, or one device (its id formatted in).
SUBSCRIPTIONS = {
    "telehub-ws": ("devices/+/telemetry", "devices/{}/telemetry"),
    "mqtt": ("devices/+/telemetry", "devices/{}/telemetry"),
    "nats": ("devices.*.telemetry", "devices.{}.telemetry"),
    "socketio": ("all", "device:{}"),
}


def subscription(protocol: str, device_id: str | None) -> str:
    """The channel, topic filter, subject or room of every device (``None``) or of one device."""
    wildcard, exact = SUBSCRIPTIONS[protocol]
    return wildcard if device_id is None else exact.format(device_id)


class Tally:
    """What one worker's dashboards received: deliveries, latency samples while measuring, losses."""

    def __init__(self, sample_every: int) -> None:
        self.sample_every = sample_every
        # Deliveries until the next sampled one, across the worker's dashboards (one in sample_every overall).
        self.countdown = sample_every
        self.delivered = 0
        # Latency samples (µs, receive time minus sent_us) are kept only while a window is being measured.
        self.sampling = False
        self.latencies_us: list[int] = []
        self.unparsed = 0
        self.lost = 0
        self.close_codes: dict[str, int] = {}

    def sample(self, payload: bytes | bytearray, now_us: float) -> None:
        if not self.sampling:
            return
        sent_us = sent_us_of(payload)
        if sent_us is None:
            self.unparsed += 1
        else:
            self.latencies_us.append(round(now_us - sent_us))


class Opening:
    """A WebSocket client's opening handshake, fed the bytes that arrive until the 101 response is whole."""

    def __init__(self, *, host: str, port: int, path: str, headers: dict[str, str], subprotocol: str | None) -> None:
        self.request, self._accept = handshake_request(
            host=host, port=port, path=path, headers=headers, subprotocol=subprotocol
        )
        self._subprotocol = subprotocol
        self._head = bytearray()

    def feed(self, data: bytes) -> bytes | None:
        """The bytes after the response once it is complete (frames may follow at once); None until then."""
        self._head += data
        start = parse_handshake_response(self._head, accept=self._accept, subprotocol=self._subprotocol)
        return None if start is None else bytes(self._head[start:])


# Dashboards.


class Dashboard(asyncio.Protocol):
    """One dashboard connection: opens and subscribes (``ready``), then counts deliveries into its ``Tally``."""

    def __init__(self, tally: Tally, channel: str, *, wildcard: bool) -> None:
        self.tally = tally
        self.channel = channel
        self.wildcard = wildcard
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.live = False
        self.delivered = 0
        self._buffer = bytearray()
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.opening()

    def opening(self) -> None:
        """Write what opens the session (a handshake, CONNECT), if the client speaks first."""

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def went_live(self) -> None:
        """Subscribed: from now on every data message counts as a delivery."""
        self.live = True
        if not self.ready.done():
            self.ready.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def counted(self, count: int, countdown: int) -> None:
        """The scan of one read found ``count`` deliveries; ``countdown`` to the next sampled one."""
        self.tally.countdown = countdown
        if count:
            self.delivered += count
            self.tally.delivered += count

    def closing_bytes(self) -> bytes:
        return b""

    async def close(self) -> None:
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.closing_bytes())
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT_S)
            except TimeoutError:
                self.transport.abort()
                await self.closed

    def closed_with(self, code: int) -> None:
        codes = self.tally.close_codes
        codes[str(code)] = codes.get(str(code), 0) + 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("the server closed the connection before it was ready"))
        if not self._closing:
            self.tally.lost += 1
        if not self.closed.done():
            self.closed.set_result(None)


class WebSocketDashboard(Dashboard):
    """A dashboard on a WebSocket: the opening handshake, then frame headers walked without a parser object.

    Server frames are unmasked; a data frame of more than one byte that ends a message counts once live
    (one-byte data frames are Socket.IO's pings). Everything else goes to ``message`` before the dashboard is
    live, and control frames always go to ``control``.
    """

    def __init__(
        self,
        tally: Tally,
        channel: str,
        *,
        wildcard: bool,
        host: str,
        port: int,
        path: str,
        headers: dict[str, str],
        subprotocol: str | None,
    ) -> None:
        super().__init__(tally, channel, wildcard=wildcard)
        self._opening: Opening | None = Opening(
            host=host, port=port, path=path, headers=headers, subprotocol=subprotocol
        )

    def opening(self) -> None:
        assert self._opening is not None
        self.write(self._opening.request)

    def opened(self) -> None:
        """The handshake is done: subscribe, or wait for the server to speak."""

    def message(self, opcode: int, payload: bytes) -> None:
        """A data message outside the counted ones (replies while subscribing)."""

    def closing_bytes(self) -> bytes:
        return encode_frame((1000).to_bytes(2, "big"), OP_CLOSE)

    def data_received(self, data: bytes) -> None:
        if self._opening is not None:
            try:
                rest = self._opening.feed(data)
            except HandshakeError as exc:
                self.fail(exc)
                return
            if rest is None:
                return
            self._opening = None
            self.opened()
            data = rest
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        position = count = 0
        countdown = self.tally.countdown
        live = self.live
        now_us = 0.0
        while size - position >= 2:
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - start < 2:
                    break
                length = buffer[start] << 8 | buffer[start + 1]
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            first = buffer[position]
            position = end
            if live and first & 0x88 == 0x80 and length > 1:  # FIN, a data opcode (< 8), not a ping
                count += 1
                countdown -= 1
                if not countdown:
                    countdown = self.tally.sample_every
                    now_us = now_us or time.time() * 1e6
                    self.tally.sample(buffer[start:end], now_us)
            elif first & 0x08 or not live or length <= 1:
                self._slow(first & 0x0F, bytes(buffer[start:end]))
                live = self.live
        del buffer[:position]
        self.counted(count, countdown)

    def _slow(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self.write(encode_frame(payload, OP_PONG))
        elif opcode == OP_CLOSE:
            self.closed_with(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005)
            if not self.ready.done():
                reason = payload[2:].decode(errors="replace")
                self.ready.set_exception(ConnectionError(f"closed by the server while subscribing: {reason}"))
            if not self._closing:
                self._closing = True
                self.write(encode_frame(payload[:2], OP_CLOSE))
            if self.transport is not None:
                self.transport.close()
        elif opcode in (OP_TEXT, OP_BINARY):
            self.message(opcode, payload)


class TelehubDashboard(WebSocketDashboard):
    """A dashboard on telehub's ``/api/v1/ws`` (API.md §5), or on the floor that speaks the same subscribe."""

    def __init__(self, tally: Tally, channel: str, *, wildcard: bool, binary: bool, **opening: Any) -> None:
        super().__init__(
            tally, channel, wildcard=wildcard, subprotocol=MSGPACK_SUBPROTOCOL if binary else None, **opening
        )
        self._binary = binary

    def opened(self) -> None:
        op = {"op": "subscribe", "id": 1, "channel": self.channel}
        if self._binary:
            self.write(encode_frame(msgpack.packb(op), OP_BINARY))
        else:
            self.write(encode_frame(orjson.dumps(op), OP_TEXT))

    def message(self, opcode: int, payload: bytes) -> None:
        reply: Any = msgpack.unpackb(payload) if opcode == OP_BINARY else orjson.loads(payload)
        kind = reply.get("type") if isinstance(reply, dict) else None
        if kind == "reply" and reply.get("id") == 1:
            self.went_live()
        elif kind == "error":
            self.fail(RuntimeError(f"subscribe {self.channel} refused: {reply.get('error')}"))


class SocketIODashboard(WebSocketDashboard):
    """A Socket.IO client on the WebSocket transport (Engine.IO 4): connects to ``/``, joins its room."""

    def __init__(self, tally: Tally, channel: str, *, wildcard: bool, **opening: Any) -> None:
        super().__init__(tally, channel, wildcard=wildcard, path=SOCKETIO_PATH, headers={}, subprotocol=None, **opening)

    def message(self, opcode: int, payload: bytes) -> None:
        if payload == b"2":  # Engine.IO ping
            self.write(encode_frame(b"3", OP_TEXT))
        elif payload.startswith(b"0"):  # Engine.IO open: connect to the default namespace
            self.write(encode_frame(b"40", OP_TEXT))
        elif payload.startswith(b"40"):  # connected: join the room, asking for an ack (id 0)
            self.write(encode_frame(b"420" + orjson.dumps(["subscribe", self.channel]), OP_TEXT))
        elif payload.startswith(b"430"):  # the join is acked
            self.went_live()
        elif payload.startswith(b"44"):
            self.fail(RuntimeError(f"Socket.IO refused the connection: {payload[:200]!r}"))


def _mqtt_length(buffer: bytearray, at: int, size: int) -> tuple[int, int] | None:
    """MQTT's remaining length starting at ``at``: (length, where the body starts); None if incomplete."""
    length = shift = 0
    while at < size:
        byte = buffer[at]
        length |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return length, at
        shift += 7
    return None


class MqttDashboard(Dashboard):
    """An MQTT 3.1.1 subscriber: CONNECT, SUBSCRIBE with QoS 0 once CONNACK comes, live at SUBACK."""

    def __init__(self, tally: Tally, channel: str, *, wildcard: bool, client_id: str) -> None:
        super().__init__(tally, channel, wildcard=wildcard)
        self._client_id = client_id

    def opening(self) -> None:
        self.write(mqtt_connect(self._client_id, keepalive_s=0))

    def closing_bytes(self) -> bytes:
        return b"\xe0\x00"  # DISCONNECT

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        position = count = 0
        countdown = self.tally.countdown
        live = self.live
        now_us = 0.0
        while size - position >= 2:
            length = buffer[position + 1]
            start = position + 2
            if length & 0x80:
                found = _mqtt_length(buffer, position + 1, size)
                if found is None:
                    break
                length, start = found
            end = start + length
            if end > size:
                break
            first = buffer[position]
            position = end
            if live and first & 0xF0 == 0x30:  # PUBLISH: topic, a packet id only for QoS > 0, the payload
                count += 1
                countdown -= 1
                if not countdown:
                    countdown = self.tally.sample_every
                    now_us = now_us or time.time() * 1e6
                    payload_at = start + 2 + (buffer[start] << 8 | buffer[start + 1]) + (2 if first & 0x06 else 0)
                    self.tally.sample(buffer[payload_at:end], now_us)
            else:
                self._packet(first, bytes(buffer[start:end]))
                live = self.live
        del buffer[:position]
        self.counted(count, countdown)

    def _packet(self, first: int, body: bytes) -> None:
        if first == 0x20:  # CONNACK: session present, return code
            if body[1] != 0:
                self.fail(ConnectionError(f"CONNACK refused the connection: code {body[1]}"))
                return
            topic = self.channel.encode()
            request = (1).to_bytes(2, "big") + _mqtt_string(topic) + b"\x00"  # packet id 1, QoS 0
            self.write(b"\x82" + _remaining_length(len(request)) + request)
        elif first == 0x90:  # SUBACK: packet id, granted QoS (0x80 = refused)
            if body[2:3] == b"\x80":
                self.fail(RuntimeError(f"SUBSCRIBE {self.channel} refused"))
            else:
                self.went_live()


class NatsDashboard(Dashboard):
    """A NATS core subscriber: CONNECT and SUB once INFO comes, then PING; live at the PONG (SUB is applied)."""

    def __init__(self, tally: Tally, channel: str, *, wildcard: bool, client_id: str) -> None:
        super().__init__(tally, channel, wildcard=wildcard)
        self._client_id = client_id

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        position = count = 0
        countdown = self.tally.countdown
        live = self.live
        now_us = 0.0
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                break
            if buffer[position] == 0x4D:  # MSG <subject> <sid> [reply-to] <#bytes>
                length = int(buffer[buffer.rfind(b" ", position, line_end) + 1 : line_end])
                start = line_end + 2
                end = start + length
                if end + 2 > size:
                    break
                position = end + 2
                if live:
                    count += 1
                    countdown -= 1
                    if not countdown:
                        countdown = self.tally.sample_every
                        now_us = now_us or time.time() * 1e6
                        self.tally.sample(buffer[start:end], now_us)
            else:
                self._line(bytes(buffer[position:line_end]))
                position = line_end + 2
                live = self.live
        del buffer[:position]
        self.counted(count, countdown)

    def _line(self, line: bytes) -> None:
        if line.startswith(b"INFO"):
            options = {"verbose": False, "pedantic": False, "name": self._client_id, "protocol": 1, "echo": False}
            self.write(b"CONNECT " + orjson.dumps(options) + b"\r\nSUB " + self.channel.encode() + b" 1\r\nPING\r\n")
        elif line == b"PONG":
            self.went_live()
        elif line == b"PING":
            self.write(b"PONG\r\n")
        elif line.startswith(b"-ERR"):
            self.fail(RuntimeError(f"NATS: {line.decode(errors='replace')}"))


def dashboard_factory(orders: dict[str, Any], tally: Tally) -> Callable[[str, str | None], Dashboard]:
    """How a worker makes a dashboard, given its name and the device it follows (None: every device)."""
    protocol, host, port = orders["protocol"], orders["host"], int(orders["port"])

    def make(name: str, device_id: str | None) -> Dashboard:
        channel, wildcard = subscription(protocol, device_id), device_id is None
        if protocol == "telehub-ws":
            headers = {"Authorization": f"Bearer {orders['credential']}"} if orders.get("credential") else {}
            return TelehubDashboard(
                tally,
                channel,
                wildcard=wildcard,
                binary=orders.get("encoding") == "msgpack",
                host=host,
                port=port,
                path=DASHBOARD_PATH,
                headers=headers,
            )
        if protocol == "socketio":
            return SocketIODashboard(tally, channel, wildcard=wildcard, host=host, port=port)
        if protocol == "mqtt":
            return MqttDashboard(tally, channel, wildcard=wildcard, client_id=name)
        if protocol == "nats":
            return NatsDashboard(tally, channel, wildcard=wildcard, client_id=name)
        raise ValueError(f"unknown protocol {protocol!r}")

    return make
