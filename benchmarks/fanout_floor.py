"""The broadcast floor: the least a Python WebSocket server must do to fan telehub's device frames out.

A bare ``websockets`` asyncio server under uvloop, in its own process (``python -m benchmarks.fanout_floor``).
Devices connect to ``/api/v1/ws/device`` with ``Authorization: Bearer <device id>`` (the id is taken as is,
nothing is checked), get a ``hello`` and are never acked. Dashboards connect to ``/api/v1/ws`` and send
telehub's subscribe op, ``{"op": "subscribe", "id": 1, "channel": "devices/+/telemetry"}`` or one device's
channel; the floor answers ``{"type": "reply", "id": 1, ...}``. Each frame a device sends is then written,
as the very bytes received, to the dashboards of every device and to those of that device, with
``websockets.broadcast`` (one frame write per dashboard, no waiting).

No auth, no validation, no decoding, no storage, no envelope: what telehub does beyond it (durable ingest,
tenancy, offsets for recovery, per-dashboard send buffers) is what the ratio telehub/floor prices.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve

from benchmarks.fanout_clients import DASHBOARD_PATH
from benchmarks.loadrun import PACKAGE_ROOT, Endpoint
from benchmarks.servers import RunningTarget, ServerProcess

__all__ = ["main", "started"]

DEVICE_PATH = "/api/v1/ws/device"
EVERY_DEVICE = "devices/+/telemetry"
START_TIMEOUT_S = 30.0


class Subscribers:
    """Who follows what: the dashboards of every device, and those of each device."""

    def __init__(self) -> None:
        self.every_device: set[ServerConnection] = set()
        self.by_device: dict[str, set[ServerConnection]] = {}

    def following(self, channel: str) -> set[ServerConnection] | None:
        """The set a subscription to ``channel`` joins; None for a channel the floor does not serve."""
        if channel == EVERY_DEVICE:
            return self.every_device
        parts = channel.split("/")
        if len(parts) == 3 and parts[0] == "devices" and parts[2] == "telemetry" and parts[1] not in ("+", "#"):
            return self.by_device.setdefault(parts[1], set())
        return None


async def _device(connection: ServerConnection, device_id: str, subscribers: Subscribers) -> None:
    hello = {"type": "hello", "device_id": device_id, "last_seq": 0, "server_time": int(time.time() * 1000)}
    await connection.send(msgpack.packb(hello))
    everyone, own = subscribers.every_device, subscribers.by_device.setdefault(device_id, set())
    async for frame in connection:
        broadcast(everyone, frame)
        broadcast(own, frame)


async def _dashboard(connection: ServerConnection, subscribers: Subscribers) -> None:
    joined: list[set[ServerConnection]] = []
    try:
        async for message in connection:
            op: Any = msgpack.unpackb(message) if isinstance(message, bytes) else orjson.loads(message)
            if not isinstance(op, dict) or op.get("op") != "subscribe":
                continue
            channel = str(op.get("channel"))
            following = subscribers.following(channel)
            if following is None:
                error = {"code": "invalid_channel", "message": f"the floor serves {EVERY_DEVICE} and exact devices"}
                await connection.send(orjson.dumps({"type": "error", "id": op.get("id"), "error": error}).decode())
                continue
            following.add(connection)
            joined.append(following)
            reply = {"type": "reply", "id": op.get("id"), "result": {"channel": channel}}
            await connection.send(orjson.dumps(reply).decode())
    finally:
        for following in joined:
            following.discard(connection)


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    subscribers = Subscribers()

    async def handler(connection: ServerConnection) -> None:
        path = connection.request.path if connection.request is not None else ""
        if path == DEVICE_PATH:
            authorization = connection.request.headers.get("Authorization", "") if connection.request else ""
            await _device(connection, authorization.removeprefix("Bearer ").strip(), subscribers)
        elif path == DASHBOARD_PATH:
            await _dashboard(connection, subscribers)

    async with serve(handler, host, port, compression=None, backlog=4096) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        sys.stdout.write(json.dumps({"event": "listening", "port": bound}) + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout_floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port, printed on stdout")
    args = parser.parse_args(argv)
    import uvloop

    from benchmarks.loadgen import raise_open_files_limit

    raise_open_files_limit()
    uvloop.run(_serve(args.host, args.port))
    return 0


@contextlib.contextmanager
def started(*, device_ids: tuple[str, ...], workdir: Path) -> Iterator[RunningTarget]:
    """The broadcast floor in its own process on a free loopback port; its devices use their ids as keys."""
    server = ServerProcess(
        [sys.executable, "-m", "benchmarks.fanout_floor", "--port", "0"],
        log_path=workdir / "fanout_floor.log",
        cwd=PACKAGE_ROOT,
        capture_stdout=True,
    )
    try:
        line = server.read_line(START_TIMEOUT_S)
        if not line:
            raise RuntimeError(f"the broadcast floor exited before listening:\n{server.output()}")
        port = int(json.loads(line)["port"])
        yield RunningTarget(
            name="floor",
            endpoint=Endpoint(
                protocol="telehub-ws", host="127.0.0.1", port=port, path=DEVICE_PATH, credentials=device_ids
            ),
            server_processes=lambda: server.processes(lambda pid: "floor"),
            output=server.output,
            started_as=f"python -m benchmarks.fanout_floor --port {port}",
        )
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
