"""The python-socketio peer of ``fanout``: what a Python team would pick for live dashboards.

``python -m benchmarks.fanout_socketio --port P`` serves a Socket.IO server (ASGI, under uvicorn with uvloop)
whose client manager is ``AsyncRedisManager`` on the Redis named by ``FANOUT_REDIS_URL`` (kept out of the
command line: it holds a password), as it would be deployed to run on several processes. Two events:

- ``subscribe`` (room): the client joins ``all`` (every device) or ``device:<id>``, and is acked.
- ``publish`` (frame): the frame, a dict with the ``device`` id, is emitted as ``telemetry`` to the rooms
  ``all`` and ``device:<id>`` at once (one emit, each client at most once). The manager delivers to this
  process's clients and publishes the emit on Redis for the other processes (none here).

No auth, no validation, no storage: the frame only passes through Redis pub/sub.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import socketio  # type: ignore[import-untyped]
import uvicorn

__all__ = ["REDIS_URL_VARIABLE", "app", "main"]

REDIS_URL_VARIABLE = "FANOUT_REDIS_URL"


def app(redis_url: str) -> Any:
    """The ASGI application: Socket.IO at ``/socket.io/`` with the two events."""
    server = socketio.AsyncServer(
        async_mode="asgi", client_manager=socketio.AsyncRedisManager(redis_url), logger=False, engineio_logger=False
    )

    @server.on("subscribe")  # type: ignore[untyped-decorator]
    async def subscribe(sid: str, room: str) -> bool:
        await server.enter_room(sid, room)
        return True

    @server.on("publish")  # type: ignore[untyped-decorator]
    async def publish(sid: str, frame: dict[str, Any]) -> None:
        await server.emit("telemetry", frame, to=["all", f"device:{frame['device']}"])

    return socketio.ASGIApp(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout_socketio", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    from benchmarks.loadgen import raise_open_files_limit

    raise_open_files_limit()
    uvicorn.run(
        app(os.environ[REDIS_URL_VARIABLE]),
        host=args.host,
        port=args.port,
        loop="uvloop",
        log_level="warning",
        lifespan="off",
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
