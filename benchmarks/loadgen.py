"""The load generator: worker processes that each drive a share of the device connections.

Each worker (``python -m benchmarks.loadgen``, under uvloop) reads its orders as one JSON line on stdin, opens
its connections and reads each device's ``hello``, encodes its frames, says ``ready`` on stdout, and waits for
``go <monotonic start>``. From that instant it keeps ``window`` frames in flight per device (sending the next
ones as acks, which may be cumulative, come back) for ``seconds``; then it stops sending, waits for the acks
still owed, closes, and prints its counts and its own CPU time (``/proc/self/stat``) over the window.

Frames are encoded before the clock starts: the frame at an index is the same bytes for every device, so a
worker encodes it once (already framed and masked) and a window goes out in a single ``transport.write``.
A run that outlasts the prebuilt frames encodes more and reports how many (``built_during_run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import msgpack
import orjson
import uvloop

from benchmarks import procstat
from benchmarks.workloads import WORKLOADS
from benchmarks.wsclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    HandshakeError,
    encode_frame,
    handshake_request,
    parse_handshake_response,
)

__all__ = ["FrameBook", "LoadConnection", "LoadSession", "WebSocketDevice", "main"]

# Seconds allowed to open one connection and read its hello, and to close one.
OPEN_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0


class FrameBook:
    """The wire bytes of frames ``first .. first + len - 1``, shared by every device of a worker."""

    def __init__(self, encode: Callable[[int], bytes], *, first: int, count: int) -> None:
        self._encode = encode
        self.first = first
        self.frames = [encode(index) for index in range(first, first + count)]
        self.built_during_run = 0

    def window(self, start: int, stop: int) -> bytes:
        """Frames ``start .. stop - 1`` as one buffer to write."""
        frames = self.frames
        first = self.first
        missing = stop - first - len(frames)
        if missing > 0:
            frames.extend(self._encode(index) for index in range(first + len(frames), stop))
            self.built_during_run += missing
        if stop - start == 1:
            return frames[start - first]
        return b"".join(frames[start - first : stop - first])


class LoadSession:
    """The counters and the clock of one worker's run, shared by its connections."""

    def __init__(self, *, window: int) -> None:
        self.window = window
        self.running = False
        self.in_window = False
        self.connections: list[LoadConnection] = []
        self.book: FrameBook | None = None
        # Frames written, frames resolved (acked or rejected) inside the window and in all, rejections.
        self.sent = 0
        self.resolved_in_window = 0
        self.resolved_total = 0
        self.errors_in_window = 0
        self.errors_total = 0
        self.inflight = 0
        self.lost_connections = 0
        self.lost_frames = 0
        self.close_codes: dict[str, int] = {}
        self.drained: asyncio.Future[None] | None = None

    def resolved(self, count: int, *, errors: int = 0) -> None:
        self.resolved_total += count
        self.errors_total += errors
        if self.in_window:
            self.resolved_in_window += count
            self.errors_in_window += errors
        self.inflight -= count
        self._check_drained()

    def abandoned(self, count: int) -> None:
        """``count`` frames in flight on a connection that closed: they will never be resolved."""
        self.lost_frames += count
        self.inflight -= count
        self._check_drained()

    def _check_drained(self) -> None:
        if self.inflight <= 0 and not self.running and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)


class LoadConnection(asyncio.Protocol):
    """One device's connection: the window and its accounting; subclasses speak the wire protocol.

    A subclass writes its opening in ``connection_made``, parses what arrives in ``data_received``, and calls
    ``opened(last_seq)`` once the device may send, ``resolve(seq)`` for cumulative acks and ``fail(exc)``;
    after a read's acks it calls ``fill()`` to send what the window allows.
    """

    def __init__(self, session: LoadSession) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Highest seq sent, highest seq resolved (frames are sent and resolved in seq order).
        self.sent_seq = 0
        self.resolved_seq = 0
        self._paused = False
        self._closing = False

    # Subclass side.

    def opened(self, last_seq: int) -> None:
        self.sent_seq = self.resolved_seq = last_seq
        if not self.ready.done():
            self.ready.set_result(None)

    def resolve(self, seq: int, *, error: bool = False) -> None:
        """Every frame up to ``seq`` is acked; with ``error``, frame ``seq`` itself was rejected."""
        if seq > self.resolved_seq:
            count = min(seq, self.sent_seq) - self.resolved_seq
            self.resolved_seq += count
            self.session.resolved(count, errors=1 if error else 0)

    def fail(self, exc: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def closing_bytes(self) -> bytes:
        return b""

    def wire(self, start: int, stop: int) -> bytes:
        """The bytes of frames ``start .. stop - 1`` for this device (the same for every device by default)."""
        assert self.session.book is not None
        return self.session.book.window(start, stop)

    # Window.

    def fill(self) -> None:
        target = self.resolved_seq + self.session.window
        if self._paused or self._closing or self.sent_seq >= target or self.transport is None:
            return
        # Frame index i carries seq i + 1: seqs sent_seq+1 .. target are indexes sent_seq .. target-1.
        self.transport.write(self.wire(self.sent_seq, target))
        count = target - self.sent_seq
        self.sent_seq = target
        self.session.sent += count
        self.session.inflight += count

    async def close(self) -> None:
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.closing_bytes())
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT_S)
            except TimeoutError:
                self.transport.abort()
                await self.closed

    # asyncio.Protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self.session.running:
            self.fill()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("the server closed the connection before it was ready"))
        if not self._closing:
            self.session.lost_connections += 1
        unresolved = self.sent_seq - self.resolved_seq
        if unresolved:
            self.resolved_seq = self.sent_seq
            self.session.abandoned(unresolved)
        if not self.closed.done():
            self.closed.set_result(None)


class WebSocketDevice(LoadConnection):
    """A device on telehub's device WebSocket (API.md §4), or on the floor that speaks the same protocol."""

    def __init__(self, session: LoadSession, *, host: str, port: int, path: str, credential: str) -> None:
        super().__init__(session)
        self._request, self._accept = handshake_request(
            host=host,
            port=port,
            path=path,
            headers={"Authorization": f"Bearer {credential}"},
            subprotocol=SUBPROTOCOL,
        )
        self._head: bytearray | None = bytearray()
        self._parser = FrameParser()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.write(self._request)

    def closing_bytes(self) -> bytes:
        return encode_frame((1000).to_bytes(2, "big"), OP_CLOSE)

    def data_received(self, data: bytes) -> None:
        try:
            if self._head is not None:
                self._head += data
                start = parse_handshake_response(self._head, accept=self._accept, subprotocol=SUBPROTOCOL)
                if start is None:
                    return
                data, self._head = bytes(self._head[start:]), None
            for opcode, payload in self._parser.feed(data):
                self._message(opcode, payload)
        except (HandshakeError, ValueError) as exc:
            self.fail(exc)
            return
        # Refill once per read: the acks that arrived together free room for one write.
        if self.session.running:
            self.fill()

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_BINARY:
            message = msgpack.unpackb(payload)
        elif opcode == OP_TEXT:
            message = orjson.loads(payload)
        elif opcode == OP_PING:
            assert self.transport is not None
            self.transport.write(encode_frame(payload, OP_PONG))
            return
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            codes = self.session.close_codes
            codes[str(code)] = codes.get(str(code), 0) + 1
            if not self.ready.done():
                reason = payload[2:].decode(errors="replace")
                self.ready.set_exception(ConnectionError(f"closed by the server before hello: {code} {reason}"))
            assert self.transport is not None
            if not self._closing:
                self._closing = True
                self.transport.write(encode_frame(payload[:2], OP_CLOSE))
            self.transport.close()
            return
        else:
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ack":
            self.resolve(int(message["seq"]))
        elif kind == "error" and isinstance(message.get("seq"), int):
            self.resolve(message["seq"], error=True)
        elif kind == "hello":
            self.opened(int(message.get("last_seq") or 0))


SUBPROTOCOL = "telehub.v1"


def connection_factory(orders: dict[str, Any], session: LoadSession) -> Callable[[str], LoadConnection]:
    """How this worker makes a device connection for one credential, by the protocol its target speaks."""
    protocol = orders["protocol"]
    if protocol == "telehub-ws":
        return lambda credential: WebSocketDevice(
            session, host=orders["host"], port=orders["port"], path=orders["path"], credential=credential
        )
    from benchmarks import peers  # only the peers' own runs need their clients

    return peers.connection_factory(orders, session)


def frame_encoder(orders: dict[str, Any]) -> Callable[[int], bytes]:
    """Frame index -> wire bytes for this worker's target."""
    workload = WORKLOADS[orders["workload"]]
    base_ts_ms = int(orders["base_ts_ms"])
    if orders["protocol"] == "telehub-ws":
        return lambda index: encode_frame(workload.payload(index, base_ts_ms))
    from benchmarks import peers

    return peers.frame_encoder(orders, workload)


async def _open_all(orders: dict[str, Any], session: LoadSession) -> None:
    loop = asyncio.get_running_loop()
    make = connection_factory(orders, session)
    gate = asyncio.Semaphore(int(orders.get("connect_concurrency", 64)))

    async def open_one(credential: str) -> None:
        async with gate:
            _, connection = await loop.create_connection(lambda: make(credential), orders["host"], orders["port"])
            session.connections.append(connection)
            await asyncio.wait_for(connection.ready, OPEN_TIMEOUT_S)

    results = await asyncio.gather(*(open_one(c) for c in orders["credentials"]), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(results)} connections failed to open; first: {failures[0]!r}")


def _say(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def _run(orders: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    session = LoadSession(window=int(orders["window"]))
    try:
        await _open_all(orders, session)
        first = min(c.sent_seq for c in session.connections)
        last = max(c.sent_seq for c in session.connections)
        session.book = FrameBook(frame_encoder(orders), first=first, count=last - first + int(orders["prebuilt"]))
        _say("ready", pid=os.getpid(), devices=len(session.connections), prebuilt=len(session.book.frames))
        line = (await stdin.readline()).decode().split()
        if not line or line[0] != "go":
            raise RuntimeError("stopped before the start")
        await asyncio.sleep(max(0.0, float(line[1]) - time.monotonic()))
        cpu_start, started = procstat.cpu_seconds(os.getpid()) or 0.0, time.monotonic()
        session.running = session.in_window = True
        for connection in session.connections:
            connection.fill()
        await asyncio.sleep(max(0.0, started + float(orders["seconds"]) - time.monotonic()))
        session.in_window = session.running = False
        elapsed = time.monotonic() - started
        cpu_window = (procstat.cpu_seconds(os.getpid()) or 0.0) - cpu_start
        resolved_in_window, errors_in_window = session.resolved_in_window, session.errors_in_window
        session.drained = loop.create_future()
        if session.inflight > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.drained, float(orders["drain_timeout_s"]))
        unresolved = session.inflight
        await asyncio.gather(*(c.close() for c in session.connections))
        _say(
            "result",
            pid=os.getpid(),
            devices=len(session.connections),
            elapsed_s=elapsed,
            cpu_s=cpu_window,
            sent=session.sent,
            acked_in_window=resolved_in_window - errors_in_window,
            errors_in_window=errors_in_window,
            acked_total=session.resolved_total - session.errors_total,
            errors_total=session.errors_total,
            unresolved=unresolved,
            lost_connections=session.lost_connections,
            lost_frames=session.lost_frames,
            close_codes=session.close_codes,
            built_during_run=session.book.built_during_run,
        )
    finally:
        for connection in session.connections:
            if connection.transport is not None:
                connection.transport.abort()


def raise_open_files_limit() -> None:
    """Allow as many sockets as the hard limit does (a worker may hold thousands of connections)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    """A worker process: ``python -m benchmarks.loadgen ORDERS.json``; ``go <start>`` comes on stdin."""
    raise_open_files_limit()
    orders = json.loads(Path(sys.argv[1]).read_text())

    try:
        uvloop.run(_run(orders))
    except Exception as exc:
        _say("error", pid=os.getpid(), message=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
