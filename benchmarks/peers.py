"""The peers that are run (BENCHMARKS.md): Mosquitto 2 for ingest-rows, InfluxDB 1.6 for ingest-columns.

Both are Debian packages (``benchmarks/install_peers.sh``), started here on loopback on a free port with a
config in the run's temporary directory, and driven by the same load generator as telehub and the floor, with
the same window per device and the same accounting:

- Mosquitto: each device is an MQTT 3.1.1 client publishing the very MessagePack ``telemetry`` frame with
  QoS 1 to ``devices/me/telemetry`` (the device is known by its connection, as in ThingsBoard's
  ``v1/devices/me/telemetry``); each PUBACK acks one frame. No subscriber and no persistence: the broker
  parses, routes to nobody and acks, so this is a broker's floor rather than a store.
- InfluxDB: each device writes its ``columns`` frame as 1,000 lines of line protocol
  (``bench,device=<id> temp=…,hum=…,pres=…,volt=… <ts ms>``) in one ``POST /write?precision=ms``, pipelined
  on one HTTP/1.1 connection, at most ``INFLUX_WINDOW`` in flight; each 204 acks one frame. The lines are
  encoded before the clock with a fixed-width placeholder for the device id, replaced per device at send
  time (one ``bytes.replace``).

The clients are written here on the wire formats, like the WebSocket one, so that the load generator's cost
per frame stays small (a general-purpose client would be the bottleneck on two cores).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import msgpack
import numpy as np

from benchmarks.loadgen import LoadConnection, LoadSession
from benchmarks.loadrun import Endpoint
from benchmarks.servers import RunningTarget, ServerProcess, free_port
from benchmarks.workloads import Workload

__all__ = ["connection_factory", "frame_encoder", "started"]

START_TIMEOUT_S = 30.0
MQTT_TOPIC = b"devices/me/telemetry"
INFLUX_DB = "bench"
# Writes in flight per connection: InfluxDB answers a connection's pipelined requests one at a time, so one
# being handled and one queued keep it busy; deeper only queues 100 KB bodies in socket buffers.
INFLUX_WINDOW = 2
# Device ids on InfluxDB are this wide, so that one encoded body serves every device.
DEVICE_PLACEHOLDER = b"@@@@@@@@"


# MQTT 3.1.1 (OASIS standard), the few packets a publishing device needs.


def _remaining_length(length: int) -> bytes:
    encoded = bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


def _mqtt_string(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def mqtt_connect(client_id: str, keepalive_s: int = 600) -> bytes:
    # Protocol name, level 4 (3.1.1), flags: clean session; then the keep-alive and the client id.
    body = _mqtt_string(b"MQTT") + bytes([4, 0x02]) + keepalive_s.to_bytes(2, "big") + _mqtt_string(client_id.encode())
    return b"\x10" + _remaining_length(len(body)) + body


def mqtt_publish_qos1(index: int, payload: bytes) -> bytes:
    packet_id = index % 0xFFFF + 1  # 1..65535, never 0
    body = _mqtt_string(MQTT_TOPIC) + packet_id.to_bytes(2, "big") + payload
    return b"\x32" + _remaining_length(len(body)) + body


class MqttDevice(LoadConnection):
    """A device publishing with QoS 1: CONNECT, then PUBLISH frames, each PUBACK (in order) acks one."""

    def __init__(self, session: LoadSession, *, client_id: str) -> None:
        super().__init__(session)
        self._client_id = client_id
        self._buffer = bytearray()
        self._connected = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.write(mqtt_connect(self._client_id))

    def closing_bytes(self) -> bytes:
        return b"\xe0\x00"  # DISCONNECT

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if self._connected and len(buffer) % 4 == 0:
            # The usual read once connected: nothing but PUBACKs (40 02 id id), counted without a Python loop.
            packets = np.frombuffer(bytes(buffer), dtype=np.uint8).reshape(-1, 4)
            if (packets[:, 0] == 0x40).all() and (packets[:, 1] == 0x02).all():
                buffer.clear()
                self._acked(len(packets))
                return
        offset, acked = 0, 0
        while len(buffer) - offset >= 2:
            kind, length, shift, position = buffer[offset], 0, 0, offset + 1
            while position < len(buffer):
                byte = buffer[position]
                length |= (byte & 0x7F) << shift
                shift += 7
                position += 1
                if not byte & 0x80:
                    break
            else:
                break
            if len(buffer) - position < length:
                break
            if kind == 0x40:  # PUBACK
                acked += 1
            elif kind == 0x20:  # CONNACK: session present, return code
                if buffer[position + 1] != 0:
                    self.fail(ConnectionError(f"CONNACK refused the connection: code {buffer[position + 1]}"))
                    return
                self._connected = True
                self.opened(0)
            offset = position + length
        del buffer[:offset]
        self._acked(acked)

    def _acked(self, count: int) -> None:
        if count:
            self.resolve(self.resolved_seq + count)
            if self.session.running:
                self.fill()


class InfluxDevice(LoadConnection):
    """A device writing line protocol over pipelined HTTP/1.1; each 204 acks one frame, in order."""

    def __init__(self, session: LoadSession, *, device_id: str) -> None:
        super().__init__(session)
        if len(device_id) != len(DEVICE_PLACEHOLDER):
            raise ValueError(f"InfluxDB device ids must be {len(DEVICE_PLACEHOLDER)} characters: {device_id!r}")
        self._device_id = device_id.encode()
        self._buffer = bytearray()
        self._failures: list[str] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.opened(0)

    def wire(self, start: int, stop: int) -> bytes:
        return super().wire(start, stop).replace(DEVICE_PLACEHOLDER, self._device_id)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset, acked, rejected = 0, 0, 0
        while True:
            end = buffer.find(b"\r\n\r\n", offset)
            if end < 0:
                break
            head = bytes(buffer[offset:end]).decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(buffer) - (end + 4) < length:
                break
            status = int(head[0].split(" ", 2)[1])
            if status == 204:
                acked += 1
            else:
                rejected += 1
                self._failures.append(f"{status}: {bytes(buffer[end + 4 : end + 4 + length])[:200]!r}")
            offset = end + 4 + length
        del buffer[:offset]
        for _ in range(rejected):  # a rejected write is resolved as an error, like telehub's error frame
            self.resolve(self.resolved_seq + 1, error=True)
        if acked:
            self.resolve(self.resolved_seq + acked)
        if self.session.running:
            self.fill()


def influx_body(workload: Workload, index: int, base_ts_ms: int) -> bytes:
    """The ``columns`` frame at ``index`` as line protocol, with the device id left as a placeholder."""
    frame = msgpack.unpackb(workload.payload(index, base_ts_ms))
    timestamps = np.frombuffer(frame["ts"], dtype="<i8")
    columns = {name: np.frombuffer(values, dtype="<f8").tolist() for name, values in frame["metrics"].items()}
    prefix = b"bench,device=" + DEVICE_PLACEHOLDER + b" "
    lines = [
        prefix + ",".join(f"{name}={values[row]!r}" for name, values in columns.items()).encode() + b" %d\n" % ts
        for row, ts in enumerate(timestamps.tolist())
    ]
    return b"".join(lines)


def frame_encoder(orders: dict[str, Any], workload: Workload) -> Callable[[int], bytes]:
    base_ts_ms = int(orders["base_ts_ms"])
    if orders["protocol"] == "mqtt":
        return lambda index: mqtt_publish_qos1(index, workload.payload(index, base_ts_ms))
    if orders["protocol"] == "influx-http":
        host = f"{orders['host']}:{orders['port']}"

        def request(index: int) -> bytes:
            body = influx_body(workload, index, base_ts_ms)
            head = (
                f"POST {orders['path']} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            return head.encode() + body

        return request
    raise ValueError(f"unknown protocol {orders['protocol']!r}")


def connection_factory(orders: dict[str, Any], session: LoadSession) -> Callable[[str], LoadConnection]:
    if orders["protocol"] == "mqtt":
        return lambda credential: MqttDevice(session, client_id=credential)
    if orders["protocol"] == "influx-http":
        return lambda credential: InfluxDevice(session, device_id=credential)
    raise ValueError(f"unknown protocol {orders['protocol']!r}")


# Starting the peers.


def _program(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError(f"{name} is not installed: run benchmarks/install_peers.sh")
    return found


def _wait_for_port(server: ServerProcess, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.exited():
            raise RuntimeError(f"{server.command[0]} exited during start:\n{server.output()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{server.command[0]} did not listen on {port} within {START_TIMEOUT_S:.0f} s")


@contextlib.contextmanager
def _mosquitto(devices: int, workdir: Path) -> Iterator[RunningTarget]:
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "log_dest stderr\nlog_type error\nlog_type warning\nmax_connections -1\n"
    )
    server = ServerProcess([_program("mosquitto"), "-c", str(config)], log_path=workdir / "mosquitto.log")
    try:
        _wait_for_port(server, port)
        yield RunningTarget(
            name="mosquitto",
            endpoint=Endpoint(
                protocol="mqtt",
                host="127.0.0.1",
                port=port,
                path="",
                credentials=tuple(f"bench-{number:05d}" for number in range(devices)),
            ),
            server_processes=lambda: server.processes(lambda pid: "mosquitto"),
            output=server.output,
            started_as=f"mosquitto -c mosquitto.conf ({config.read_text().strip().replace(chr(10), '; ')})",
        )
    finally:
        server.stop()


@contextlib.contextmanager
def _influxdb(devices: int, workdir: Path) -> Iterator[RunningTarget]:
    port, rpc_port = free_port(), free_port()
    data = workdir / "influxdb"
    config = workdir / "influxdb.conf"
    config.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc_port}"\n'
        f'[meta]\n  dir = "{data}/meta"\n'
        f'[data]\n  dir = "{data}/data"\n  wal-dir = "{data}/wal"\n  query-log-enabled = false\n'
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n  max-body-size = 0\n'
        "[monitor]\n  store-enabled = false\n[continuous_queries]\n  enabled = false\n"
        "[subscriber]\n  enabled = false\n"
    )
    server = ServerProcess([_program("influxd"), "-config", str(config)], log_path=workdir / "influxdb.log")
    try:
        _wait_for_port(server, port)
        created = httpx.post(f"http://127.0.0.1:{port}/query", params={"q": f"CREATE DATABASE {INFLUX_DB}"})
        if created.status_code != 200:
            raise RuntimeError(f"CREATE DATABASE answered {created.status_code}: {created.text[:300]}")
        yield RunningTarget(
            name="influxdb",
            endpoint=Endpoint(
                protocol="influx-http",
                host="127.0.0.1",
                port=port,
                path=f"/write?db={INFLUX_DB}&precision=ms",
                credentials=tuple(f"dev{number:05d}" for number in range(devices)),
                max_window=INFLUX_WINDOW,
            ),
            server_processes=lambda: server.processes(lambda pid: "influxd"),
            output=server.output,
            started_as=f"influxd -config influxdb.conf (HTTP on 127.0.0.1:{port}, data in a temporary directory)",
        )
    finally:
        server.stop()


@contextlib.contextmanager
def started(name: str, *, workload: Workload, devices: int, workdir: Path) -> Iterator[RunningTarget]:
    """Peer ``name`` running on loopback, ready for ``devices`` devices; stopped with SIGTERM on exit."""
    if name == "mosquitto":
        with _mosquitto(devices, workdir) as target:
            yield target
    elif name == "influxdb":
        if workload.samples_per_frame == 1:
            raise ValueError("the InfluxDB peer writes column frames: run it with ingest-columns")
        with _influxdb(devices, workdir) as target:
            yield target
    else:
        raise ValueError(f"unknown peer {name!r}")
