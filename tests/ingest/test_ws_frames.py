"""``ingest.ws_frames``: the frames it takes it reads exactly as websockets does, and it hands over the rest.

The differential test feeds the same client byte stream, cut at random points, to websockets' own
``ServerProtocol`` and to ``direct_frames`` (handing over to a second ``ServerProtocol`` where it stops, as
``LeanWebSocket`` does): the messages, pongs and the close that result must be the same.
"""

from __future__ import annotations

import itertools
import os

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from ingest.ws_frames import DirectFrames, direct_frames

MAX_SIZE = 2_000


REQUEST = (
    b"GET /api/v1/ws/device HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def _open_protocol() -> ServerProtocol:
    """A server protocol past a real handshake: open, its parser at the first frame, nothing buffered."""
    protocol = ServerProtocol(max_size=MAX_SIZE)
    protocol.receive_data(REQUEST)
    (request,) = protocol.events_received()
    protocol.send_response(protocol.accept(request))
    protocol.data_to_send()
    assert protocol.state is State.OPEN and not protocol.reader.buffer
    return protocol


def client_frame(opcode: Opcode, data: bytes, *, fin: bool = True, masked: bool = True, rsv1: bool = False) -> bytes:
    """The bytes a client sends (masked unless told otherwise)."""
    raw = Frame(opcode, data, fin=fin).serialize(mask=masked)
    return bytes([raw[0] | 0x40]) + raw[1:] if rsv1 else raw


class Receiver:
    def __init__(self) -> None:
        self.ws = _open_protocol()
        self.messages: list[tuple[bytes, bool]] = []
        self.pongs = 0

    def message(self, data: bytes, binary: bool) -> None:
        self.messages.append((data, binary))

    def pong_received(self) -> None:
        self.pongs += 1


def through_websockets(chunks: list[bytes]) -> tuple[list[tuple[bytes, bool]], int, list[bytes], State]:
    """Messages, pongs received, bytes sent back and the final state with websockets alone."""
    protocol = _open_protocol()
    frames: list[tuple[bytes, bool, bool]] = []
    pongs = 0
    for chunk in chunks:
        protocol.receive_data(chunk)
        for event in protocol.events_received():
            if event.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT):
                frames.append((bytes(event.data), event.opcode is Opcode.BINARY, event.fin))
            elif event.opcode is Opcode.PONG:
                pongs += 1
    return _joined(frames), pongs, protocol.data_to_send(), protocol.state


def _joined(frames: list[tuple[bytes, bool, bool]]) -> list[tuple[bytes, bool]]:
    """websockets yields fragments: join them into messages as LeanWebSocket does."""
    messages: list[tuple[bytes, bool]] = []
    parts: list[bytes] = []
    binary = True
    for data, is_binary, fin in frames:
        if not parts:
            binary = is_binary
        parts.append(data)
        if fin:
            messages.append((b"".join(parts), binary))
            parts = []
    return messages


def through_direct(chunks: list[bytes]) -> tuple[list[tuple[bytes, bool]], int, list[bytes], State]:
    """The same with direct_frames first and websockets from the frame it hands over."""
    receiver = Receiver()
    state = DirectFrames(max_size=MAX_SIZE)
    handed_over = False
    frames: list[tuple[bytes, bool, bool]] = []
    for chunk in chunks:
        if not handed_over:
            rest = direct_frames(state, chunk, receiver)
            frames += [(data, binary, True) for data, binary in receiver.messages]
            receiver.messages.clear()
            if rest is None:
                continue
            handed_over, chunk = True, rest
        receiver.ws.receive_data(chunk)
        for event in receiver.ws.events_received():
            if event.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT):
                frames.append((bytes(event.data), event.opcode is Opcode.BINARY, event.fin))
            elif event.opcode is Opcode.PONG:
                receiver.pongs += 1
    return _joined(frames), receiver.pongs, receiver.ws.data_to_send(), receiver.ws.state


def _cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    edges = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


_payload = st.binary(max_size=300) | st.binary(min_size=300, max_size=70_000).map(lambda b: b[:2_500])
_frame = st.one_of(
    st.tuples(st.sampled_from([Opcode.BINARY, Opcode.TEXT]), _payload).map(lambda f: client_frame(*f)),
    st.binary(max_size=125).map(lambda d: client_frame(Opcode.PING, d)),
    st.binary(max_size=125).map(lambda d: client_frame(Opcode.PONG, d)),
    st.binary(max_size=40).map(lambda d: client_frame(Opcode.TEXT, d, fin=False) + client_frame(Opcode.CONT, d)),
    st.just(1000).map(lambda code: client_frame(Opcode.CLOSE, Close(code, "bye").serialize())),
    st.binary(max_size=20).map(lambda d: client_frame(Opcode.BINARY, d, masked=False)),
    st.binary(max_size=20).map(lambda d: client_frame(Opcode.BINARY, d, rsv1=True)),
    # A ping longer than a control frame may be.
    st.binary(min_size=126, max_size=200).map(lambda d: bytes([0x89]) + client_frame(Opcode.BINARY, d)[1:]),
    st.sampled_from([bytes([0x83, 0x80]) + os.urandom(4), bytes([0x8B, 0x80]) + os.urandom(4)]),  # reserved opcodes
    st.just(MAX_SIZE + 1).map(lambda size: client_frame(Opcode.BINARY, b"x" * size)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_frame, min_size=1, max_size=12), st.lists(st.integers(min_value=0), max_size=8))
def test_direct_frames_read_what_websockets_reads(frames: list[bytes], cuts: list[int]) -> None:
    chunks = _cut(b"".join(frames), cuts)
    assert through_direct(chunks) == through_websockets(chunks)


def test_frames_of_the_common_case_are_all_taken_and_a_split_frame_waits_for_its_end() -> None:
    receiver = Receiver()
    state = DirectFrames(max_size=MAX_SIZE)
    stream = client_frame(Opcode.BINARY, b"a" * 10) + client_frame(Opcode.TEXT, b"b" * 300)
    stream += client_frame(Opcode.PING, b"p") + client_frame(Opcode.PONG, b"")
    assert direct_frames(state, stream[:7], receiver) is None
    assert receiver.messages == [] and state.need == 16
    for i in range(7, len(stream) - 1):  # a byte at a time
        assert direct_frames(state, stream[i : i + 1], receiver) is None
    assert direct_frames(state, stream[-1:], receiver) is None
    assert receiver.messages == [(b"a" * 10, True), (b"b" * 300, False)]
    assert receiver.pongs == 1 and state.replies
    assert receiver.ws.data_to_send() == [Frame(Opcode.PONG, b"p").serialize(mask=False)]


def test_a_close_frame_and_what_follows_it_are_handed_over_from_its_first_byte() -> None:
    receiver = Receiver()
    state = DirectFrames(max_size=MAX_SIZE)
    close = client_frame(Opcode.CLOSE, Close(1000, "").serialize())
    after = client_frame(Opcode.BINARY, b"late")
    assert direct_frames(state, client_frame(Opcode.BINARY, b"x") + close + after, receiver) == close + after
    assert receiver.messages == [(b"x", True)]


def test_nothing_is_taken_once_the_connection_is_closing() -> None:
    receiver = Receiver()
    receiver.ws.send_close(1000)
    frame = client_frame(Opcode.BINARY, b"x")
    assert direct_frames(DirectFrames(max_size=MAX_SIZE), frame, receiver) == frame
    assert receiver.messages == []


def test_an_oversize_frame_is_handed_over_before_its_payload_arrives() -> None:
    receiver = Receiver()
    frame = client_frame(Opcode.BINARY, b"x" * (MAX_SIZE + 1))
    assert direct_frames(DirectFrames(max_size=MAX_SIZE), frame[:8], receiver) == frame[:8]
