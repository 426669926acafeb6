"""The floor: the least a Python WebSocket server must do to ingest telehub's device protocol.

A bare ``websockets`` asyncio server under uvloop, in its own process (``python -m benchmarks.floor``). It
accepts any device on any path with subprotocol ``telehub.v1``, checks no credential, sends ``hello``, decodes
every frame (MessagePack when binary, JSON when text) and acks each frame's ``seq`` in the encoding of the
frame. It stores nothing and validates nothing: what telehub does beyond it (auth, validation, Redis, fan-out)
is what the ratio telehub/floor prices.
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
from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from benchmarks.loadrun import PACKAGE_ROOT, Endpoint
from benchmarks.servers import RunningTarget, ServerProcess

__all__ = ["DEVICE_PATH", "main", "started"]

DEVICE_PATH = "/api/v1/ws/device"
START_TIMEOUT_S = 30.0


async def _device(connection: ServerConnection) -> None:
    hello = {"type": "hello", "device_id": "floor", "last_seq": 0, "server_time": int(time.time() * 1000)}
    await connection.send(msgpack.packb(hello))
    async for message in connection:
        if isinstance(message, bytes):
            frame: Any = msgpack.unpackb(message)
            seq = frame.get("seq") if isinstance(frame, dict) else None
            if seq is not None:
                await connection.send(msgpack.packb({"type": "ack", "seq": seq}))
        else:
            frame = orjson.loads(message)
            seq = frame.get("seq") if isinstance(frame, dict) else None
            if seq is not None:
                await connection.send(orjson.dumps({"type": "ack", "seq": seq}).decode())


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        _device, host, port, subprotocols=[Subprotocol("telehub.v1")], compression=None, backlog=4096
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        sys.stdout.write(json.dumps({"event": "listening", "port": bound}) + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port, printed on stdout")
    args = parser.parse_args(argv)
    import uvloop

    from benchmarks.loadgen import raise_open_files_limit

    raise_open_files_limit()
    uvloop.run(_serve(args.host, args.port))
    return 0


@contextlib.contextmanager
def started(*, devices: int, workdir: Path) -> Iterator[RunningTarget]:
    """The floor in its own process on a free loopback port, with ``devices`` made-up device keys."""
    server = ServerProcess(
        [sys.executable, "-m", "benchmarks.floor", "--port", "0"],
        log_path=workdir / "floor.log",
        cwd=PACKAGE_ROOT,
        capture_stdout=True,
    )
    try:
        line = server.read_line(START_TIMEOUT_S)
        if not line:
            raise RuntimeError(f"the floor exited before listening:\n{server.output()}")
        port = int(json.loads(line)["port"])
        yield RunningTarget(
            name="floor",
            endpoint=Endpoint(
                protocol="telehub-ws",
                host="127.0.0.1",
                port=port,
                path=DEVICE_PATH,
                credentials=tuple(f"dk_floor_{number}" for number in range(devices)),
            ),
            server_processes=lambda: server.processes(lambda pid: "floor"),
            output=server.output,
            started_as=" ".join(["python -m benchmarks.floor", "--port", str(port)]),
        )
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
