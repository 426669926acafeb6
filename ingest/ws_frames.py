"""The common case of an open WebSocket connection's incoming frames, read without websockets' parser.

Client frames on an open connection are nearly always complete, masked, unfragmented binary or text frames,
with now and then a ping or a pong. :func:`direct_frames` reads those from the received bytes in one loop
(RFC 6455 §5.2; unmasked by websockets' own C ``apply_mask``) and hands each message to the connection. It
takes nothing else: at the first frame that is a close, a fragment, a reserved opcode, unmasked, has RSV bits,
is over the size limit or is a control frame over 125 bytes, or once the connection is no longer open, it
returns the bytes from that frame's first byte on, and the caller gives them (and all that follows) to
websockets' ``ServerProtocol``, whose parser is then at a frame boundary. So every close and every protocol
error is answered by websockets, as before; this module only makes the frequent frames cheap.
"""

from __future__ import annotations

from typing import Protocol

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

__all__ = ["DirectFrames", "FrameReceiver", "direct_frames"]

_TEXT, _BINARY, _PING, _PONG = 1, 2, 9, 10
_MAX_CONTROL = 125


class FrameReceiver(Protocol):
    ws: ServerProtocol

    def message(self, data: bytes, binary: bool) -> None: ...

    def pong_received(self) -> None: ...


class DirectFrames:
    """A connection's state between reads: the start of a frame not yet complete, and how many bytes it needs."""

    __slots__ = ("buffer", "max_size", "need", "replies")

    def __init__(self, *, max_size: int) -> None:
        self.max_size = max_size
        self.buffer = bytearray()
        # Bytes ``buffer`` must hold before the frame at its start can be read (its header, then all of it).
        self.need = 0
        # Pongs were queued on ``ws``: the caller flushes them.
        self.replies = False


def direct_frames(state: DirectFrames, data: bytes, receiver: FrameReceiver) -> bytes | None:
    """Hand every complete frame of ``data`` (after what ``state`` holds) to ``receiver``; None when all were
    taken (an incomplete last frame is kept in ``state``), else the bytes from the first frame not taken on."""
    if state.buffer:
        state.buffer += data
        if len(state.buffer) < state.need:
            return None  # a large frame arriving in pieces: kept without copying it all again
        data = bytes(state.buffer)
        state.buffer.clear()
    ws = receiver.ws
    size = len(data)
    pos = 0
    while size - pos >= 2:
        first, second = data[pos], data[pos + 1]
        opcode = first & 0x0F
        length = second & 0x7F
        # FIN set and no RSV bits, masked (a client's frames must be), a data frame or a short ping or pong.
        if (
            first & 0xF0 != 0x80
            or not second & 0x80
            or not (opcode in (_BINARY, _TEXT) or (opcode in (_PING, _PONG) and length <= _MAX_CONTROL))
            or ws.state is not State.OPEN
        ):
            return data[pos:]
        if length < 126:
            head = pos + 6
        elif length == 126:
            if size - pos < 4:
                return _keep(state, data, pos, 8)
            length = (data[pos + 2] << 8) | data[pos + 3]
            head = pos + 8
        else:
            if size - pos < 10:
                return _keep(state, data, pos, 14)
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            head = pos + 14
        if length > state.max_size:
            return data[pos:]  # websockets closes with 1009
        end = head + length
        if end > size:
            return _keep(state, data, pos, end - pos)
        payload = apply_mask(data[head:end], data[head - 4 : head])
        pos = end
        if ws.debug:  # as websockets' parser logs a frame (and clients/log_redaction.py redacts it)
            ws.logger.debug("< %s", Frame(Opcode(opcode), payload))
        if opcode == _BINARY:
            receiver.message(payload, True)
        elif opcode == _TEXT:
            receiver.message(payload, False)
        elif opcode == _PING:
            ws.send_pong(payload)
            state.replies = True
        else:
            receiver.pong_received()
    if pos < size:
        return _keep(state, data, pos, 2)
    return None


def _keep(state: DirectFrames, data: bytes, pos: int, need: int) -> bytes | None:
    """Keep the incomplete frame at ``pos`` until ``need`` bytes of it have arrived (so: None, all taken)."""
    state.buffer += memoryview(data)[pos:]
    state.need = need
    return None
