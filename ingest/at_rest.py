"""Frames at rest: how a frame's bytes are stored (the 'b' field of its stream entries), and columns frames
packed so that Redis stores (and writes to its append-only file) fewer bytes.

In ``ingest-columns`` Redis spends most of its time in the kernel on the bytes of each frame: zeroing the
pages the stream entry takes and copying it into the AOF's page cache (docs/performance.md). A MessagePack
``columns`` frame whose columns all arrived as little-endian bytes is therefore stored packed: the timestamps
as deltas, then every 8-byte column shuffled in 2-byte planes (bytes 2k and 2k + 1 of each element together,
so the sign, exponent and high mantissa bits of neighbouring samples sit side by side) and compressed with
LZ4. The benchmark's frame of 1,000 x 4 goes from 40,065 to 24,527 bytes; regular timestamps take tens of
bytes instead of 8,000. Planes of single bytes would save 600 bytes more for twice the time of a numpy
transpose of 1-byte elements (14 against 7 µs here).

A packed frame is stored with encoding ``PACKED``; :func:`as_sent` gives every reader a MessagePack frame with
the same fields and byte-identical columns, which it decodes as it decodes what a device sends. A frame that
would not get smaller is stored as received.
"""

from __future__ import annotations

from typing import Any

import lz4.block
import msgpack
import numpy as np
import numpy.typing as npt

from ingest.frames import TelemetryFrame

__all__ = [
    "JSON",
    "MSGPACK",
    "PACKED",
    "PACK_OVER_BYTES",
    "as_sent",
    "encoding",
    "pack",
    "restore",
    "stored",
    "unpacked",
]

# How a stored frame's bytes are encoded.
JSON = b"0"
MSGPACK = b"1"
PACKED = b"2"

# Smaller frames are stored as received: packing them saves a few bytes for a few microseconds.
PACK_OVER_BYTES = 1024
_FORMAT = 1
_I8 = np.dtype("<i8")
_F8 = np.dtype("<f8")
_PLANE = np.dtype("<u2")
# The largest column a packed frame may hold when read back (a forged size header allocates no more): frames
# larger than this (FrameLimits.max_frame_bytes is 1 MiB by default) are stored as received.
_MAX_COLUMN_BYTES = 1 << 28


def encoding(binary: bool) -> bytes:
    """A frame stored as received: MessagePack (a binary message) or JSON (a text one)."""
    return MSGPACK if binary else JSON


def stored(frame: TelemetryFrame) -> tuple[bytes, bytes]:
    """``(encoding, bytes)`` a frame is stored as: packed when it is a binary columns frame of byte columns
    over ``PACK_OVER_BYTES`` that packing makes smaller, else as received."""
    raw = frame.raw
    # Only a MessagePack columns frame has bin_columns: JSON cannot carry bytes.
    if not frame.bin_columns or not PACK_OVER_BYTES < len(raw) <= _MAX_COLUMN_BYTES:
        return encoding(frame.binary), raw
    samples = frame.samples
    packed = pack(frame.seq, samples.column_ts, samples.value, samples.names)
    return (PACKED, packed) if len(packed) < len(raw) else (MSGPACK, raw)


def pack(seq: int, ts: npt.NDArray[np.int64], values: npt.NDArray[np.float64], names: tuple[str, ...]) -> bytes:
    """T timestamps and the M x T values (metric-major) of one columns frame, packed."""
    deltas = np.empty(len(ts), dtype=_I8)
    deltas[0] = ts[0]
    np.subtract(ts[1:], ts[:-1], out=deltas[1:])
    return msgpack.packb(
        [_FORMAT, seq, list(names), _compress(deltas), _compress(values.astype(_F8, copy=False))],
        use_bin_type=True,
    )


def as_sent(encoded_as: bytes, raw: bytes) -> tuple[bool, bytes]:
    """``(binary, bytes)`` of a stored frame as a device sends it: packed frames restored, others as stored."""
    if encoded_as == PACKED:
        return True, restore(raw)
    return encoded_as == MSGPACK, raw


def restore(packed: bytes) -> bytes:
    """The MessagePack columns frame a packed one was made from."""
    seq, names, ts, values = unpacked(packed)
    count = len(ts)
    column = values.tobytes()
    step = count * 8
    metrics = {name: column[i * step : (i + 1) * step] for i, name in enumerate(names)}
    frame = {"type": "columns", "seq": seq, "ts": ts.tobytes(), "metrics": metrics}
    return msgpack.packb(frame, use_bin_type=True)


def unpacked(packed: bytes) -> tuple[int, list[str], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """seq, metric names, the T timestamps and the M x T values (metric-major) of a packed frame."""
    fields: Any = msgpack.unpackb(packed, raw=False)
    if not isinstance(fields, list) or len(fields) != 5 or fields[0] != _FORMAT:
        raise ValueError("not a packed columns frame")
    _, seq, names, ts_block, value_block = fields
    ts = np.cumsum(_decompress(ts_block, _I8), dtype=_I8)
    values = _decompress(value_block, _F8)
    if len(ts) == 0 or len(values) != len(ts) * len(names):
        raise ValueError("a packed columns frame whose columns do not match its timestamps")
    return int(seq), [str(name) for name in names], ts, values


def _compress(column: npt.NDArray[Any]) -> bytes:
    """8-byte elements shuffled in 2-byte planes, then LZ4 (a block, its size first)."""
    shuffled = np.ascontiguousarray(column.view(_PLANE).reshape(-1, 4).T)
    return bytes(lz4.block.compress(shuffled, store_size=True))


def _decompress(block: bytes, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """A column of ``_compress``; ValueError for anything else (nor does a forged size header allocate more
    than a frame can hold)."""
    size = int.from_bytes(block[:4], "little")
    if len(block) < 4 or size % 8 or size > _MAX_COLUMN_BYTES:
        raise ValueError("not a packed column")
    try:
        data = lz4.block.decompress(block)
    except lz4.block.LZ4BlockError as exc:
        raise ValueError(f"not a packed column: {exc}") from None
    return np.ascontiguousarray(np.frombuffer(data, dtype=_PLANE).reshape(4, -1).T).view(dtype).reshape(-1)
