"""A loopback TCP proxy the tests can cut: every connection through it is aborted at once (a dropped network,
not a WebSocket close), while new connections are let through as before. It can also ``hold`` what the
server sends: it stops reading it, through a small receive buffer, so the server sees a client that reads
nothing long before the kernel's buffers (tens of MB on loopback) would fill. ``stall`` holds both ways: a
network path that goes silent without a reset (a NAT that dropped its mapping, a radio out of coverage)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

__all__ = ["CuttableProxy", "cuttable_proxy"]

UPSTREAM_RECEIVE_BUFFER = 64 * 1024


class CuttableProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # What the server sends flows while the first is set, what the client sends while the second is.
        self._downstream = asyncio.Event()
        self._upstream = asyncio.Event()
        self._downstream.set()
        self._upstream.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Abort every open connection (both sides see a reset, no close frame)."""
        self.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def hold(self) -> None:
        """Stop passing on what the server sends (the client's requests still go through)."""
        self._downstream.clear()

    def stall(self) -> None:
        """Stop passing on anything, either way, on every connection, new ones included (none is closed)."""
        self._downstream.clear()
        self._upstream.clear()

    def release(self) -> None:
        self._downstream.set()
        self._upstream.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UPSTREAM_RECEIVE_BUFFER)
            upstream.setblocking(False)
            await asyncio.get_running_loop().sock_connect(upstream, ("127.0.0.1", self.target_port))
            upstream_reader, upstream_writer = await asyncio.open_connection(
                sock=upstream, limit=UPSTREAM_RECEIVE_BUFFER
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        ways = ((reader, upstream_writer, self._upstream), (upstream_reader, writer, self._downstream))
        for source, sink, flowing in ways:
            task = asyncio.get_running_loop().create_task(self._pipe(source, sink, flowing))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, flowing: asyncio.Event) -> None:
        try:
            while True:
                await flowing.wait()
                data = await source.read(65536)
                if not data:
                    break
                await flowing.wait()  # what was read as the path stalled waits too
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.transport.abort()
            self._writers.discard(sink)


@contextlib.asynccontextmanager
async def cuttable_proxy(target_port: int) -> AsyncIterator[CuttableProxy]:
    proxy = CuttableProxy(target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
