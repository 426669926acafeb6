"""The telemetry frame of the ``fanout`` workload: encoded once, stamped with its send time at each send.

A publisher's frame carries its send time as a metric, ``sent_us`` (microseconds since the epoch, float), so
that a dashboard can tell each delivery's latency from the frame alone on any target. The frame is encoded
before the clock starts with fixed-width placeholders for ``seq``, ``ts`` and ``sent_us``; a send copies the
bytes and writes the three values in place (``struct.pack_into`` for MessagePack, space-padded digits for JSON,
where whitespace between tokens is allowed), which costs far less than encoding a dict per send.

Dashboards decode only a sample of what they receive, and only the ``sent_us`` value: ``sent_us_of`` finds it
in a MessagePack or JSON payload of any shape (the device frame relayed as is, telehub's ``message`` envelope,
a Socket.IO event), so the same cheap reading serves every target.
"""

from __future__ import annotations

import re
import struct

import msgpack
import orjson

__all__ = ["METRICS", "FrameTemplate", "sent_us_of"]

METRICS = {"temp": 21.5, "hum": 40.25, "pres": 1013.25}
# MessagePack placeholders that force the fixed-width encodings: uint32 (0xce), uint64 (0xcf), float64 (0xcb).
_SEQ_MARK = 0xFEEDF00D
_TS_MARK = 0xFEEDFACECAFEBEEF
_SENT_BITS = b"\x7f\xef\xee\xdd\xcc\xbb\xaa\x99"
_SENT_MARK: float = struct.unpack(">d", _SENT_BITS)[0]
# JSON field widths: seq up to 10^12, ts in ms and sent_us in µs since the epoch for centuries.
_JSON_WIDTHS = {"seq": 12, "ts": 15, "sent_us": 20}
_MSGPACK_SENT_KEY = msgpack.packb("sent_us") + b"\xcb"
_JSON_SENT = re.compile(rb'"sent_us"\s*:\s*([-+0-9.eE]+)')


class FrameTemplate:
    """A ``telemetry`` frame's bytes with ``seq``, ``ts`` and ``sent_us`` written in place by ``render``."""

    def __init__(self, data: bytes, *, binary: bool, seq_at: int, ts_at: int, sent_at: int) -> None:
        self.data = data
        self.binary = binary
        self._seq_at, self._ts_at, self._sent_at = seq_at, ts_at, sent_at

    @classmethod
    def msgpack(cls) -> FrameTemplate:
        """``{"type": "telemetry", "seq", "ts", "metrics": {temp, hum, pres, sent_us}}`` in MessagePack (API.md §4)."""
        frame = {"type": "telemetry", "seq": _SEQ_MARK, "ts": _TS_MARK, "metrics": {**METRICS, "sent_us": _SENT_MARK}}
        data = msgpack.packb(frame)
        return cls(
            data,
            binary=True,
            seq_at=data.index(struct.pack(">I", _SEQ_MARK)),
            ts_at=data.index(struct.pack(">Q", _TS_MARK)),
            sent_at=data.index(_SENT_BITS),
        )

    @classmethod
    def json(cls, device_id: str, *, prefix: bytes = b"", suffix: bytes = b"") -> FrameTemplate:
        """``{"device", "seq", "ts", "metrics": {..., sent_us}}`` as JSON between ``prefix`` and ``suffix``."""
        parts = [prefix, orjson.dumps({"device": device_id})[:-1], b',"seq":']
        offsets = {}

        def slot(name: str) -> None:
            offsets[name] = sum(map(len, parts))
            parts.append(b" " * _JSON_WIDTHS[name])

        slot("seq")
        parts.append(b',"ts":')
        slot("ts")
        parts.append(b',"metrics":' + orjson.dumps(METRICS)[:-1] + b',"sent_us":')
        slot("sent_us")
        parts.append(b"}}" + suffix)
        return cls(
            b"".join(parts), binary=False, seq_at=offsets["seq"], ts_at=offsets["ts"], sent_at=offsets["sent_us"]
        )

    def render(self, seq: int, sent_us: float) -> bytes:
        """The frame with these values, as long as the template."""
        data = bytearray(self.data)
        ts_ms = int(sent_us // 1000)
        if self.binary:
            struct.pack_into(">I", data, self._seq_at, seq)
            struct.pack_into(">Q", data, self._ts_at, ts_ms)
            struct.pack_into(">d", data, self._sent_at, sent_us)
        else:
            data[self._seq_at : self._seq_at + _JSON_WIDTHS["seq"]] = b"%12d" % seq
            data[self._ts_at : self._ts_at + _JSON_WIDTHS["ts"]] = b"%15d" % ts_ms
            data[self._sent_at : self._sent_at + _JSON_WIDTHS["sent_us"]] = b"%20.1f" % sent_us
        return bytes(data)


def sent_us_of(payload: bytes | bytearray) -> float | None:
    """The ``sent_us`` metric in a delivered payload, MessagePack or JSON, wherever it sits; None if absent."""
    at = payload.find(_MSGPACK_SENT_KEY)
    if at >= 0 and len(payload) >= at + len(_MSGPACK_SENT_KEY) + 8:
        value: float = struct.unpack_from(">d", payload, at + len(_MSGPACK_SENT_KEY))[0]
        return value
    found = _JSON_SENT.search(payload)
    if found is None:
        return None
    try:
        return float(found.group(1))
    except ValueError:
        return None
