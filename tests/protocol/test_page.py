"""docs/protocol.md kept true against the code and a live ``telehub serve``.

Every hex dump on the page decodes (msgpack) to the JSON shown beside it, and its ASCII column and offsets are
those of its bytes; the byte-by-byte annotation is the annotated dump's bytes. The page's conversation is then
replayed in page order against a live hub: each device dump is sent as it is (the command id swapped for the
live one, which the hub makes anew), and each hub dump must be what the hub answers, byte for byte where
nothing in it varies from run to run. What the page says was stored is what REST reads back. The handshake,
the refusals, the close codes, the limits, the error codes and the heartbeat figures are checked too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from datetime import datetime
from typing import Any

import msgpack
import numpy as np
import pytest

from hub.commands.service import MAX_RESULT_BYTES
from hub.config import HubConfig
from ingest import codec
from ingest.gateway import GatewaySettings
from ingest.limits import MAX_ERROR_CHARS, FrameLimits
from tests.protocol.conftest import Live
from tests.protocol.page import COMMAND_ID, DAY_MS, ROOT, WAIT, Dump, as_shown, decode, page, page_dumps, table


def test_every_dump_decodes_to_the_json_beside_it() -> None:
    dumps = page_dumps()
    assert len(dumps) >= 20, "the page lost its frame dumps"
    kinds = {decode(d.data)["type"] for d in dumps if d.shown is not None}
    assert kinds >= {"hello", "telemetry", "columns", "event", "command_result", "ack", "error", "command"}
    for dump in dumps:
        where = f"docs/protocol.md:{dump.line} ({dump.name})"
        if not dump.binary:
            continue  # a text frame is its JSON
        if dump.shown is None:  # shown without JSON: it must not decode (the page's undecodable example)
            with pytest.raises((ValueError, msgpack.UnpackException)):
                msgpack.unpackb(dump.data, raw=False)
            continue
        assert as_shown(msgpack.unpackb(dump.data, raw=False)) == dump.shown, where


def test_the_annotation_is_the_annotated_frame_byte_by_byte() -> None:
    text = page()
    rows = table(text, "<!-- annotation -->")
    assert len(rows) >= 10
    data = b""
    for offset, hex_bytes, fmt, meaning in rows:
        assert int(offset) == len(data), f"annotation row at {offset}, after {len(data)} bytes"
        token = bytes.fromhex(hex_bytes.strip("`"))
        data += token
        value = meaning.rpartition(" = ")[2].split(" (")[0]
        if fmt.startswith("float 64"):
            assert token[0] == 0xCB and msgpack.unpackb(token) == float(value), meaning
        elif fmt.startswith("uint 64"):
            assert token[0] == 0xCF and int.from_bytes(token[1:], "big") == int(value), meaning
        elif fmt.startswith("fixstr"):
            assert 0xA0 <= token[0] <= 0xBF and token[1:].decode() == meaning.split('"')[-2], meaning
    annotated = next(d for d in page_dumps(text) if d.name == "telemetry-point")
    assert data == annotated.data


def test_the_limits_table_is_the_code() -> None:
    limits, config = FrameLimits(), HubConfig()
    rows = {row[0]: row for row in table(page(), "## Limits")}

    def figure(label: str) -> int:
        return int(re.match(r"[\d,]+", rows[label][1])[0].replace(",", ""))  # type: ignore[index]

    assert figure("frame size") == config.max_frame_bytes == limits.max_frame_bytes
    assert figure("metric names per frame") == limits.max_metrics
    assert figure("points per `telemetry` frame") == limits.max_points
    assert figure("samples per frame") == limits.max_samples
    assert figure("`data` of an event, `result` of a command result") == limits.max_event_data_bytes
    assert limits.max_event_data_bytes == MAX_RESULT_BYTES
    assert figure("`error` of a command result") == MAX_ERROR_CHARS
    assert figure("oldest `ts`") * DAY_MS == limits.past_ms
    assert figure("newest `ts`") == limits.future_ms
    assert rows["`seq`"][1].startswith(f"1 to {codec.MAX_SEQ:,} (2^53\u22121)")
    assert rows["metric and event names"][1] == f"`{codec.NAME_PATTERN.pattern}`"
    assert figure("frames of a connection waiting to be stored") == GatewaySettings().max_in_flight


def test_the_error_codes_are_those_the_hub_sends() -> None:
    documented = {row[0].strip("`") for row in table(page(), "## Error codes")}
    sources = {
        ROOT / "ingest" / "codec.py": r'FrameError\("([a-z_]+)"',
        ROOT / "hub" / "commands" / "service.py": r'return "([a-z_]+)", f?"',
        ROOT / "ingest" / "gateway.py": r'refused = \("([a-z_]+)"',
    }
    sent = {"too_large"}  # codec._too_large
    for path, pattern in sources.items():
        found = set(re.findall(pattern, path.read_text()))
        assert found, f"no error codes found in {path}: the pattern is stale"
        sent |= found
    assert documented == sent


def test_the_heartbeat_figures_are_the_hubs_default_setting() -> None:
    text = page()
    interval = float(re.search(r"sends a WebSocket ping after (\d+) s", text)[1])  # type: ignore[index]
    timeout = float(re.search(r"within (\d+) s of that ping", text)[1])  # type: ignore[index]
    assert "TELEHUB_WS_HEARTBEAT_MS" in text
    assert interval == timeout == HubConfig().ws_heartbeat_ms / 1000


# Against a live hub.


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _timestamps(frame: Any) -> list[int]:
    """The real (after 2001) millisecond timestamps of a decoded device frame."""
    stamps: list[int] = []
    if isinstance(frame.get("ts"), int):
        stamps.append(frame["ts"])
    if isinstance(frame.get("ts"), bytes):
        stamps += np.frombuffer(frame["ts"], dtype="<i8").tolist()
    stamps += [point["ts"] for point in frame.get("points", []) if isinstance(point.get("ts"), int)]
    return [t for t in stamps if t >= 10**12]


def recent(data: bytes, now: int) -> bytes:
    """The frame as it is while its timestamps are inside the hub's window (a year after the page was
    generated). After that, the same frame with them moved forward by whole days, so that the replay still
    checks the hub's answers; `docs/protocol_frames.py` regenerates the page with fresh ones."""
    try:
        frame = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException):
        return data
    stamps = _timestamps(frame) if isinstance(frame, dict) else []
    if not stamps or min(stamps) >= now - FrameLimits().past_ms + DAY_MS:
        return data
    shift = (now - max(stamps)) // DAY_MS * DAY_MS
    if isinstance(frame.get("ts"), int) and frame["ts"] >= 10**12:
        frame["ts"] += shift
    elif isinstance(frame.get("ts"), bytes):
        frame["ts"] = (np.frombuffer(frame["ts"], dtype="<i8") + shift).astype("<i8").tobytes()
    for point in frame.get("points", []):
        if isinstance(point.get("ts"), int):
            point["ts"] += shift
    return bytes(msgpack.packb(frame, use_bin_type=True))


def test_frames_older_than_the_window_are_moved_by_whole_days_and_others_kept() -> None:
    dump = next(d for d in page_dumps() if d.name == "columns")
    assert isinstance(dump.data, bytes)
    stamps = _timestamps(msgpack.unpackb(dump.data, raw=False))
    assert recent(dump.data, max(stamps) + 1000) == dump.data
    later = max(stamps) + 400 * DAY_MS + 5000
    moved = msgpack.unpackb(recent(dump.data, later), raw=False)
    assert [t - s for t, s in zip(_timestamps(moved), stamps, strict=True)] == [400 * DAY_MS] * len(stamps)
    assert moved["metrics"] == msgpack.unpackb(dump.data, raw=False)["metrics"]


def expected_reply(dump: Dump, received: Any, ids: dict[str, str]) -> Any:
    """The hub frame the page shows, with what varies from run to run taken from ``received`` once checked:
    ``server_time`` (the hub's clock), a command's id and ``expires_at``, and command ids in messages."""
    shown = json.loads(json.dumps(dump.shown))
    if shown.get("type") == "hello":
        assert isinstance(received.get("server_time"), int) and abs(received["server_time"] - now_ms()) < 60_000
        shown["server_time"] = received["server_time"]
    if shown.get("type") == "command":
        assert COMMAND_ID.fullmatch(received.get("command_id", "")), received
        assert len(received["command_id"]) == len(shown["command_id"])
        ids[shown["command_id"]] = received["command_id"]
        expires = datetime.fromisoformat(received["expires_at"].replace("Z", "+00:00"))
        assert received["expires_at"].endswith("Z") and len(received["expires_at"]) == len(shown["expires_at"])
        assert abs(expires.timestamp() - time.time() - 3600) < 60  # ttl_s: 1 h by default
        shown["command_id"], shown["expires_at"] = received["command_id"], received["expires_at"]
    if isinstance(shown.get("message"), str):
        for old, new in ids.items():
            shown["message"] = shown["message"].replace(old, new)
    return shown


async def test_the_pages_conversation_gets_the_pages_answers_from_a_live_hub(live: Live) -> None:
    dumps = page_dumps()
    first = dumps[0]
    assert first.direction == "hub" and first.shown["type"] == "hello", "the conversation starts with hello"
    device_id, key = await live.device(first.shown["device_id"])
    ids: dict[str, str] = {}  # the page's command ids -> the live ones
    sent: list[Any] = []  # every device frame as sent, decoded, with the hub's answer
    async with contextlib.AsyncExitStack() as stack:
        ws: Any = None
        for dump in dumps:
            where = f"docs/protocol.md:{dump.line} ({dump.direction} {dump.name})"
            if dump.direction == "hub" and dump.shown["type"] == "hello":  # a new connection
                if ws is not None:
                    await ws.close()
                ws = await stack.enter_async_context(live.connect(key, "" if dump.binary else "?encoding=json"))
                assert ws.subprotocol == "telehub.v1"
            if dump.direction == "device":
                data = dump.data
                for old, new in ids.items():  # the same length: the frame's layout is unchanged
                    data = (
                        data.replace(old.encode(), new.encode()) if isinstance(data, bytes) else data.replace(old, new)
                    )
                if isinstance(data, bytes):
                    data = recent(data, now_ms())
                await ws.send(data)
                sent.append([dump, data, None])
                continue
            if dump.shown["type"] == "command":  # an operator's POST, as the page says
                body = {"command": dump.shown["command"], "params": dump.shown["params"]}
                reply = await live.http.post(f"/devices/{device_id}/commands", json=body)
                assert reply.status_code == 202, reply.text
            received = await asyncio.wait_for(ws.recv(), WAIT)
            assert isinstance(received, bytes) == dump.binary, f"{where}: a {'binary' if dump.binary else 'text'} frame"
            value = decode(received)
            assert value == expected_reply(dump, value, ids), where
            assert list(value) == list(dump.shown), f"{where}: the keys come in the page's order"
            varies = value["type"] in ("hello", "command") or any(old in json.dumps(dump.shown) for old in ids)
            if varies:  # fixed-width fields (uint 64 clock, 26-character ids, 24-character times)
                assert len(received) == len(dump.data), where
            else:
                assert received == dump.data, f"{where}: the bytes differ from the page's"
            if sent and sent[-1][2] is None:
                sent[-1][2] = value
    # What the page says was stored is what was stored: each frame acked past its seq, once, in order.
    stored, highest = [], 0
    for dump, data, answer in sent:
        assert answer is not None, f"the page shows no answer to {dump.name}"
        frame = decode(data) if answer["type"] == "ack" else None
        if frame is not None and (frame.get("seq", 0) > highest or "seq" not in frame):
            stored.append(frame)
            highest = max(highest, frame.get("seq", 0))
    messages = await live.stored(device_id)
    assert [m["frame"] for m in messages] == [json.loads(json.dumps(_lists(f))) for f in stored]
    # The columns dump's $values are the readings stored (little-endian int64 ts, float64 values).
    columns = next(d.shown for d in dumps if d.direction == "device" and d.shown and d.shown["type"] == "columns")
    columns_frame = next(f for f in stored if f["type"] == "columns")
    ts = np.frombuffer(columns_frame["ts"], dtype="<i8").tolist()
    reply = await live.http.get(
        f"/devices/{device_id}/readings",
        params={"metric": ",".join(columns["metrics"]), "from": min(ts), "to": max(ts) + 1, "limit": 1000},
    )
    readings = {(r["metric"], _ms(r["ts"]), r["value"]) for r in reply.json()["data"]}
    assert readings == {
        (name, t, v) for name, column in columns["metrics"].items() for t, v in zip(ts, column["$values"], strict=True)
    }


def _lists(frame: dict[str, Any]) -> dict[str, Any]:
    """A stored columns frame as REST shows it: bin columns as number lists."""
    if frame.get("type") != "columns":
        return frame
    shown = as_shown(frame)
    return {
        **frame,
        "ts": shown["ts"]["$values"],
        "metrics": {name: column["$values"] for name, column in shown["metrics"].items()},
    }


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def test_a_frame_sent_out_of_order_is_refused_and_a_resend_after_reconnect_is_acked(live: Live) -> None:
    """The page: "a frame sent out of order (seq 9 after seq 10 on the wire) gets an `invalid_seq` error"; a resend
    of a frame sent on the connection, or at or below hello's last_seq, is acked and not stored again."""
    text = " ".join(page().split())
    assert "a frame sent out of order (seq 9 after seq 10 on the wire) gets an `invalid_seq` error" in text
    device_id, key = await live.device()

    async def answer(ws: Any, seq: int) -> dict[str, Any]:
        await ws.send(msgpack.packb({"type": "telemetry", "seq": seq, "metrics": {"temp": float(seq)}}))
        reply: dict[str, Any] = msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))
        return reply

    async with live.connect(key) as ws:
        await ws.recv()
        assert await answer(ws, 10) == {"type": "ack", "seq": 10}
        for seq in (9, 1):
            refused = await answer(ws, seq)
            assert (refused["type"], refused["seq"], refused["code"]) == ("error", seq, "invalid_seq")
        assert await answer(ws, 10) == {"type": "ack", "seq": 10}  # a resend of a stored frame
        assert await answer(ws, 11) == {"type": "ack", "seq": 11}
    async with live.connect(key) as ws:
        assert msgpack.unpackb(await ws.recv())["last_seq"] == 11
        assert await answer(ws, 9) == {"type": "ack", "seq": 11}
    assert [m["seq"] for m in await live.stored(device_id)] == [10, 11]


async def test_the_limits_hold_on_a_live_hub(live: Live) -> None:
    limits = FrameLimits()
    _, key = await live.device()
    async with live.connect(key) as ws:
        await ws.recv()

        async def answer(frame: dict[str, Any]) -> dict[str, Any]:
            await ws.send(msgpack.packb(frame))
            reply: dict[str, Any] = msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))
            return reply

        many = {f"m{i}": 1.0 for i in range(limits.max_metrics)}
        assert await answer({"type": "telemetry", "seq": 1, "metrics": many}) == {"type": "ack", "seq": 1}
        too_many = {**many, "one_more": 1.0}
        assert (await answer({"type": "telemetry", "seq": 2, "metrics": too_many}))["code"] == "too_large"
        ahead = now_ms() + limits.future_ms + 60_000
        reply = await answer({"type": "telemetry", "seq": 3, "ts": ahead, "metrics": {"t": 1}})
        assert (reply["seq"], reply["code"]) == (3, "invalid_timestamp")
        reply = await answer({"type": "telemetry", "seq": codec.MAX_SEQ + 1, "metrics": {"t": 1}})
        assert reply["code"] == "invalid_seq" and "seq" not in reply
        reply = await answer({"type": "command_result", "seq": 4, "command_id": "cmd_x", "status": "completed"})
        assert (reply["code"], reply["message"]) == ("invalid_frame", "seq: unknown field")


# The handshake.
