"""The ``fanout`` load generator's publishers: devices that send frames stamped with their send time.

They build on the ingest load generator's connections (``loadgen.LoadConnection``, and its WebSocket and MQTT
devices for the opening): ``publish(count, sent_us)`` writes ``count`` frames stamped with ``sent_us`` in one
write, unless writing is paused or, on telehub, the window of unacked frames is full. The dashboards that count
what comes back are in ``fanout_clients``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from benchmarks.fanout_clients import SOCKETIO_PATH, Opening
from benchmarks.fanout_frames import FrameTemplate
from benchmarks.loadgen import LoadConnection, LoadSession, WebSocketDevice
from benchmarks.peers import MqttDevice, _mqtt_string, _remaining_length
from benchmarks.wsclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    HandshakeError,
    encode_frame,
)

__all__ = ["Publisher", "publisher_factory"]


class Publisher(LoadConnection):
    """A device publishing frames stamped with their send time, at the pace its worker sets.

    ``acks``: the target acks frames (telehub); then at most the session's window of frames is unacked, and
    frames beyond it are not sent (the caller counts them as skipped). Otherwise frames count as resolved
    when written.
    """

    template: FrameTemplate
    acks: bool = False

    def wrap(self, payload: bytes) -> bytes:
        """One frame's payload as the bytes of the target's protocol."""
        raise NotImplementedError

    def publish(self, count: int, sent_us: float) -> int:
        """Write up to ``count`` frames at once; how many were written."""
        if self.transport is None or self._paused or self._closing or not self.ready.done():
            return 0
        if self.acks:
            count = min(count, self.resolved_seq + self.session.window - self.sent_seq)
            if count <= 0:
                return 0
        first = self.sent_seq + 1
        render, wrap = self.template.render, self.wrap
        self.transport.write(b"".join([wrap(render(seq, sent_us)) for seq in range(first, first + count)]))
        self.sent_seq += count
        self.session.sent += count
        if self.acks:
            self.session.inflight += count
        else:
            self.resolved_seq = self.sent_seq
        return count


class WebSocketPublisher(Publisher, WebSocketDevice):
    """A device on telehub's ``/api/v1/ws/device`` (acks each frame once stored) or on the floor (no acks)."""

    def __init__(self, session: LoadSession, *, acks: bool, **device: Any) -> None:
        super().__init__(session, **device)
        self.template = FrameTemplate.msgpack()
        self.acks = acks

    def wrap(self, payload: bytes) -> bytes:
        return encode_frame(payload, OP_BINARY)


class MqttPublisher(Publisher, MqttDevice):
    """A device publishing with QoS 0 to ``devices/<id>/telemetry``: nothing comes back."""

    def __init__(self, session: LoadSession, *, device_id: str) -> None:
        super().__init__(session, client_id=device_id)
        self.template = FrameTemplate.msgpack()
        topic = _mqtt_string(f"devices/{device_id}/telemetry".encode())
        self._head = b"\x30" + _remaining_length(len(topic) + len(self.template.data)) + topic

    def wrap(self, payload: bytes) -> bytes:
        return self._head + payload


class NatsPublisher(Publisher):
    """A device publishing to ``devices.<id>.telemetry``; ready once the server answers the first PING."""

    def __init__(self, session: LoadSession, *, device_id: str) -> None:
        super().__init__(session)
        self._device_id = device_id
        self.template = FrameTemplate.msgpack()
        self._head = f"PUB devices.{device_id}.telemetry {len(self.template.data)}\r\n".encode()
        self._buffer = bytearray()

    def wrap(self, payload: bytes) -> bytes:
        return self._head + payload + b"\r\n"

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        *lines, rest = self._buffer.split(b"\r\n")
        self._buffer = bytearray(rest)
        for line in lines:
            if line.startswith(b"INFO"):
                options = {"verbose": False, "pedantic": False, "name": self._device_id, "protocol": 1}
                assert self.transport is not None
                self.transport.write(b"CONNECT " + orjson.dumps(options) + b"\r\nPING\r\n")
            elif line == b"PONG" and not self.ready.done():
                self.opened(0)
            elif line == b"PING":
                assert self.transport is not None
                self.transport.write(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                self.fail(RuntimeError(f"NATS: {line.decode(errors='replace')}"))


class SocketIOPublisher(Publisher):
    """A device emitting ``publish`` events (``42["publish", {...}]``) on the Socket.IO WebSocket transport."""

    def __init__(self, session: LoadSession, *, host: str, port: int, device_id: str) -> None:
        super().__init__(session)
        self.template = FrameTemplate.json(device_id, prefix=b'42["publish",', suffix=b"]")
        self._opening: Opening | None = Opening(host=host, port=port, path=SOCKETIO_PATH, headers={}, subprotocol=None)
        self._parser = FrameParser()

    def wrap(self, payload: bytes) -> bytes:
        return encode_frame(payload, OP_TEXT)

    def closing_bytes(self) -> bytes:
        return encode_frame((1000).to_bytes(2, "big"), OP_CLOSE)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None and self._opening is not None
        self.transport.write(self._opening.request)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            if self._opening is not None:
                rest = self._opening.feed(data)
                if rest is None:
                    return
                self._opening, data = None, rest
            messages = self._parser.feed(data)
        except (HandshakeError, ValueError) as exc:
            self.fail(exc)
            return
        for opcode, payload in messages:
            if opcode == OP_PING:
                self.transport.write(encode_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                self.transport.close()
            elif payload == b"2":
                self.transport.write(encode_frame(b"3", OP_TEXT))
            elif payload.startswith(b"0"):
                self.transport.write(encode_frame(b"40", OP_TEXT))
            elif payload.startswith(b"40"):
                self.opened(0)
            elif payload.startswith(b"44"):
                self.fail(RuntimeError(f"Socket.IO refused the connection: {payload[:200]!r}"))


def publisher_factory(orders: dict[str, Any], session: LoadSession) -> Callable[[str, str], Publisher]:
    """How a worker makes a publisher, given its device id and credential."""
    protocol, host, port = orders["protocol"], orders["host"], int(orders["port"])

    def make(device_id: str, credential: str) -> Publisher:
        if protocol == "telehub-ws":
            return WebSocketPublisher(
                session, acks=bool(orders["acks"]), host=host, port=port, path=orders["path"], credential=credential
            )
        if protocol == "mqtt":
            return MqttPublisher(session, device_id=device_id)
        if protocol == "nats":
            return NatsPublisher(session, device_id=device_id)
        if protocol == "socketio":
            return SocketIOPublisher(session, host=host, port=port, device_id=device_id)
        raise ValueError(f"unknown protocol {protocol!r}")

    return make
