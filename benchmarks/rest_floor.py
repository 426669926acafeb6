"""The REST floor: the least the hub's HTTP stack must do to accept a command.

``POST /api/v1/devices/{id}/commands`` on Starlette served by uvicorn, with the options ``telehub serve`` uses
(uvloop, httptools, no access log, no server header), in its own process (``python -m benchmarks.rest_floor``).
It reads and parses the JSON body, checks that ``command`` is a string and answers ``202`` with a new
``command_id`` and ``status: queued``, as the hub does. It checks no credential, stores nothing and delivers
nothing: the ``commands`` workload's requests per second against it are what one process of this stack answers
at most, so commands/s over it prices everything a command is beyond its REST request (auth, rate limit, the
durable lifecycle in Redis, the device, the result, the dashboard).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks.loadrun import PACKAGE_ROOT
from benchmarks.servers import ServerProcess

__all__ = ["RestFloor", "app", "main", "started"]

START_TIMEOUT_S = 30.0


async def _create(request: Request) -> Response:
    body = orjson.loads(await request.body())
    if not isinstance(body, dict) or not isinstance(body.get("command"), str):
        return Response(b'{"error":{"code":"invalid_request"}}', status_code=422, media_type="application/json")
    answer = {"command_id": "cmd_" + secrets.token_urlsafe(16), "status": "queued"}
    return Response(orjson.dumps(answer), status_code=202, media_type="application/json")


app = Starlette(routes=[Route("/api/v1/devices/{device_id}/commands", _create, methods=["POST"])])


async def _serve(host: str, port: int) -> None:
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(4096)  # connections made from here on wait in the backlog until uvicorn accepts them
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", lifespan="off", access_log=False, log_level="warning", server_header=False
    )
    server = uvicorn.Server(config)
    sys.stdout.write(json.dumps({"event": "listening", "port": listener.getsockname()[1]}) + "\n")
    sys.stdout.flush()
    await server.serve(sockets=[listener])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rest_floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port, printed on stdout")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(_serve(args.host, args.port))
    return 0


class RestFloor:
    """The floor's process: where it listens and how to read its CPU."""

    def __init__(self, server: ServerProcess, port: int) -> None:
        self.server = server
        self.port = port

    @property
    def started_as(self) -> str:
        return f"python -m benchmarks.rest_floor --port {self.port}"


@contextlib.contextmanager
def started(workdir: Path) -> Iterator[RestFloor]:
    """The REST floor in its own process on a free loopback port."""
    server = ServerProcess(
        [sys.executable, "-m", "benchmarks.rest_floor", "--port", "0"],
        log_path=workdir / "rest-floor.log",
        cwd=PACKAGE_ROOT,
        capture_stdout=True,
    )
    try:
        line = server.read_line(START_TIMEOUT_S)
        if not line:
            raise RuntimeError(f"the REST floor exited before listening:\n{server.output()}")
        yield RestFloor(server, int(json.loads(line)["port"]))
    finally:
        server.stop()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(main())
