"""The client side of RFC 6455 as the load generator needs it: the opening handshake, frames and their parsing.

Plain functions and a parser class that take and return bytes, no I/O, so that the load generator can send a
window of frames that were framed and masked before the clock started in one ``transport.write``: with two
cores shared by server and load generator, every microsecond the client spends per frame is taken from the
server. The floor (the ``websockets`` server, strict about framing and masking) is what checks this codec.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Mapping

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameParser",
    "HandshakeError",
    "encode_frame",
    "handshake_request",
    "parse_handshake_response",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# The longest response head we wait for before deciding the peer is not speaking HTTP.
MAX_HEAD = 64 * 1024


class HandshakeError(Exception):
    """The server refused the WebSocket upgrade (status is its HTTP status, 0 when it did not answer HTTP)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"WebSocket handshake refused: HTTP {status}: {message}" if status else message)
        self.status = status


def handshake_request(
    *, host: str, port: int, path: str, headers: Mapping[str, str], subprotocol: str | None
) -> tuple[bytes, str]:
    """The upgrade request and the ``Sec-WebSocket-Accept`` value a conforming server answers it with."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode(), usedforsecurity=False).digest()).decode()
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), accept


def parse_handshake_response(buffer: bytes | bytearray, *, accept: str, subprotocol: str | None) -> int | None:
    """Where the frames begin in ``buffer`` once the 101 response is complete; None while it is incomplete.

    Raises HandshakeError for any other status, a wrong accept value or a subprotocol the client did not offer.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise HandshakeError(0, "the server's response head is too long")
        return None
    head = bytes(buffer[:end]).decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HandshakeError(0, f"not an HTTP response: {status_line[:80]!r}")
    status = int(parts[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status != 101:
        body = bytes(buffer[end + 4 : end + 4 + 300]).decode(errors="replace")
        raise HandshakeError(status, body or (parts[2] if len(parts) > 2 else ""))
    if headers.get("sec-websocket-accept") != accept:
        raise HandshakeError(status, "wrong Sec-WebSocket-Accept")
    chosen = headers.get("sec-websocket-protocol")
    if chosen is not None and chosen != subprotocol:
        raise HandshakeError(status, f"the server chose subprotocol {chosen!r}, which was not offered")
    if "sec-websocket-extensions" in headers:
        raise HandshakeError(status, "the server enabled an extension, which was not offered")
    return end + 4


def encode_frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    """One final, masked client frame (a fresh random mask per frame, as RFC 6455 §5.3 asks)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    mask = os.urandom(4)
    return header + mask + apply_mask(payload, mask)


class FrameParser:
    """Turns the bytes a server sends into whole messages ``(opcode, payload)``; fragments are joined.

    Server frames are never masked (RFC 6455 §5.1); a masked one, like any other protocol error, raises
    ValueError.
    """

    def __init__(self, *, max_size: int = 1 << 24) -> None:
        self._buffer = bytearray()
        self._max_size = max_size
        # A fragmented data message in progress: its opcode and the payload so far.
        self._fragment_opcode: int | None = None
        self._fragments = bytearray()

    def feed(self, data: bytes | bytearray) -> list[tuple[int, bytes]]:
        buffer = self._buffer
        buffer += data
        messages: list[tuple[int, bytes]] = []
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            if second & 0x80:
                raise ValueError("the server sent a masked frame")
            length = second & 0x7F
            start = offset + 2
            if length == 126:
                if size - start < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            if length > self._max_size:
                raise ValueError(f"a frame of {length} bytes is over the limit")
            if size - start < length:
                break
            payload = bytes(buffer[start : start + length])
            offset = start + length
            self._collect(first & 0x80 != 0, first & 0x0F, payload, messages)
        del buffer[:offset]
        return messages

    def _collect(self, final: bool, opcode: int, payload: bytes, messages: list[tuple[int, bytes]]) -> None:
        if opcode >= OP_CLOSE:  # control frames are never fragmented and may come between fragments
            messages.append((opcode, payload))
        elif opcode == OP_CONTINUATION:
            if self._fragment_opcode is None:
                raise ValueError("a continuation frame without a message to continue")
            self._fragments += payload
            if final:
                messages.append((self._fragment_opcode, bytes(self._fragments)))
                self._fragment_opcode = None
                self._fragments.clear()
        elif final:
            messages.append((opcode, payload))
        else:
            self._fragment_opcode = opcode
            self._fragments = bytearray(payload)
