"""The device WebSocket in-process: handshake, hello, acks, errors, duplicates, replacement, revocation."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from hub import device_ingest, keys, redis_client
from hub.app import create_app
from hub.config import HubConfig
from ingest import stream_keys
from ingest.stream_writer import REFERENCE_OVER_BYTES
from tests.support import HubClient, Tenant, bearer

WS = "/api/v1/ws/device"
NOW_MS = int(time.time() * 1000)


@pytest.fixture
def tenant(client: HubClient) -> Tenant:
    return client.new_tenant()


def device_key(client: HubClient, tenant: Tenant, device_id: str = "boiler-7") -> str:
    client.post("/devices", json={"id": device_id, "name": device_id, "type": "boiler"}, headers=tenant.admin)
    key: str = client.post(f"/devices/{device_id}/keys", headers=tenant.admin).json()["device_key"]
    return key


@contextmanager
def connect(client: HubClient, key: str, **kwargs: Any) -> Iterator[Any]:
    with client.http.websocket_connect(WS, headers=bearer(key), **kwargs) as ws:
        yield ws


def receive(ws: Any) -> dict[str, Any]:
    message = ws.receive()
    if message.get("bytes") is not None:
        decoded: dict[str, Any] = msgpack.unpackb(message["bytes"])
        return decoded
    if message.get("text") is not None:
        return {**orjson.loads(message["text"]), "_text": True}
    raise AssertionError(f"expected a frame, got {message}")


def telemetry(seq: int, **metrics: float) -> bytes:
    return msgpack.packb({"type": "telemetry", "seq": seq, "metrics": metrics or {"temp": 21.5}})


def stored(client: HubClient, tenant: Tenant, device_id: str = "boiler-7") -> list[dict[str, Any]]:
    """The device's frame stream entries, fields decoded except the frame bytes themselves."""
    frames_redis = client.http.app.state.device_ingest.frames_redis  # type: ignore[attr-defined]
    entries = client.call(frames_redis.xrange, stream_keys.device_frames(tenant.org_id, device_id))
    return [{k.decode(): (v if k == b"f" else v.decode()) for k, v in fields.items()} for _, fields in entries]


def raw_frames(client: HubClient, tenant: Tenant, device_id: str = "boiler-7") -> list[bytes]:
    """The frames as stored, read with the ingest side's bytes client."""
    frames_redis = client.http.app.state.device_ingest.frames_redis  # type: ignore[attr-defined]
    key = stream_keys.device_frames(tenant.org_id, device_id)
    return [fields[b"f"] for _, fields in client.call(frames_redis.xrange, key)]


def test_hello_then_acks_in_the_frames_encoding(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    with connect(client, key) as ws:
        hello = receive(ws)
        assert hello["type"] == "hello" and hello["device_id"] == "boiler-7" and hello["last_seq"] == 0
        assert abs(hello["server_time"] - time.time() * 1000) < 60_000
        ws.send_bytes(telemetry(1))
        assert receive(ws) == {"type": "ack", "seq": 1}
        ws.send_text(orjson.dumps({"type": "telemetry", "seq": 2, "metrics": {"temp": 22}}).decode())
        assert receive(ws) == {"type": "ack", "seq": 2, "_text": True}
    frames = stored(client, tenant)
    assert [f["s"] for f in frames] == ["1", "2"]
    assert frames[0]["k"] == "telemetry" and frames[0]["b"] == "1" and frames[1]["b"] == "0"
    org_stream = client.call(
        client.services.redis.xlen, stream_keys.org_telemetry(tenant.org_id, stream_keys.partition_of("boiler-7"))
    )
    assert org_stream == 2


def test_every_frame_kind_is_stored_as_received(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    columns = msgpack.packb(
        {
            "type": "columns",
            "seq": 1,
            "ts": [NOW_MS + i for i in range(3)],
            "metrics": {"t": [1.0, 2.0, 3.0]},
        }
    )
    event = msgpack.packb({"type": "event", "seq": 2, "name": "door_opened", "data": {"door": 3}})
    with connect(client, key) as ws:
        receive(ws)
        sent = client.post("/devices/boiler-7/commands", json={"command": "reboot"}, headers=tenant.admin).json()
        assert receive(ws)["command_id"] == sent["command_id"]
        answer = {"type": "command_result", "command_id": sent["command_id"], "status": "completed", "result": 1}
        result = msgpack.packb(answer)
        ws.send_bytes(columns)
        assert receive(ws) == {"type": "ack", "seq": 1}
        ws.send_bytes(event)
        assert receive(ws) == {"type": "ack", "seq": 2}
        ws.send_bytes(result)  # no seq: answered by the cumulative ack once stored (after the command took it)
        assert receive(ws) == {"type": "ack", "seq": 2}
        ws.send_bytes(telemetry(3))
        assert receive(ws) == {"type": "ack", "seq": 3}
    frames = stored(client, tenant)
    assert [f["k"] for f in frames] == ["columns", "event", "command_result", "telemetry"]
    assert raw_frames(client, tenant) == [columns, event, result, telemetry(3)]
    frames_redis = client.http.app.state.device_ingest.frames_redis  # type: ignore[attr-defined]
    events = client.call(frames_redis.xrange, stream_keys.device_events(tenant.org_id, "boiler-7"))
    assert [e[1][b"e"] for e in events][:2] == [b"device.online", b"device.event"]
    assert events[1][1][b"f"] == event


def test_a_resent_seq_is_acked_and_not_stored_twice(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    with connect(client, key) as ws:
        receive(ws)
        for seq in (1, 2, 3):
            ws.send_bytes(telemetry(seq))
            assert receive(ws)["seq"] == seq
    with connect(client, key) as ws:
        assert receive(ws)["last_seq"] == 3
        ws.send_bytes(telemetry(2))
        assert receive(ws) == {"type": "ack", "seq": 3}
        ws.send_bytes(telemetry(4))
        assert receive(ws) == {"type": "ack", "seq": 4}
    assert [f["s"] for f in stored(client, tenant)] == ["1", "2", "3", "4"]


def test_bad_frames_get_errors_and_the_connection_keeps_working(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    with connect(client, key) as ws:
        receive(ws)
        ws.send_bytes(b"\xc1\xff not msgpack")
        error = receive(ws)
        assert error["type"] == "error" and error["code"] == "invalid_encoding" and "seq" not in error
        ws.send_bytes(msgpack.packb({"type": "telemetry", "seq": 5, "metrics": {"bad name!": 1}}))
        error = receive(ws)
        assert (error["type"], error["seq"], error["code"]) == ("error", 5, "invalid_metric_name")
        assert error["message"]
        ws.send_text("{not json")
        text_error = receive(ws)
        assert text_error["code"] == "invalid_encoding" and text_error["_text"]
        ws.send_bytes(telemetry(6))
        assert receive(ws) == {"type": "ack", "seq": 6}
    assert [f["s"] for f in stored(client, tenant)] == ["6"]


def test_handshake_needs_a_valid_device_key(client: HubClient, tenant: Tenant) -> None:
    for headers in ({}, bearer("dk_nope"), bearer(tenant.admin_token)):
        with pytest.raises(WebSocketDenialResponse) as denied, client.http.websocket_connect(WS, headers=headers):
            pass
        assert denied.value.status_code == 401
        assert denied.value.json()["error"]["code"] == "unauthenticated"


def test_subprotocol_is_accepted_when_offered(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    with connect(client, key, subprotocols=["telehub.v1"]) as ws:
        assert ws.accepted_subprotocol == "telehub.v1"
        assert receive(ws)["type"] == "hello"


def test_hello_in_json_when_asked(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    with client.http.websocket_connect(WS + "?encoding=json", headers=bearer(key)) as ws:
        assert receive(ws)["_text"] is True


def test_a_second_connection_replaces_the_first(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    with connect(client, key) as first:
        receive(first)
        with connect(client, key) as second:
            receive(second)
            with pytest.raises(WebSocketDisconnect) as closed:
                first.receive_bytes()
            assert closed.value.code == 4003
            second.send_bytes(telemetry(1))
            assert receive(second) == {"type": "ack", "seq": 1}


@pytest.mark.parametrize("action", ["rotate", "delete"])
def test_rotating_or_deleting_closes_the_connection_with_4001(client: HubClient, tenant: Tenant, action: str) -> None:
    key = device_key(client, tenant)
    with connect(client, key) as ws:
        receive(ws)
        if action == "rotate":
            assert client.post("/devices/boiler-7/keys", headers=tenant.admin).status_code == 201
        else:
            assert client.delete("/devices/boiler-7", headers=tenant.admin).status_code == 204
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_bytes()
        assert closed.value.code == 4001


def test_presence_marks_online_and_offline(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    assert client.get("/devices/boiler-7", headers=tenant.admin).json()["status"] == "offline"
    with connect(client, key) as ws:
        receive(ws)
        device = client.get("/devices/boiler-7", headers=tenant.admin).json()
        assert device["status"] == "online" and device["last_seen"] is not None
        assert client.get("/devices?status=online", headers=tenant.admin).json()["meta"]["total"] == 1
    # The disconnect is handled as the socket closes; poll the record briefly.
    for _ in range(100):
        if client.get("/devices/boiler-7", headers=tenant.admin).json()["status"] == "offline":
            break
        time.sleep(0.01)
    assert client.get("/devices/boiler-7", headers=tenant.admin).json()["status"] == "offline"
    events = client.call(
        client.services.redis.xrange, stream_keys.org_events(tenant.org_id, stream_keys.partition_of("boiler-7"))
    )
    assert [e[1]["e"] for e in events] == ["device.online", "device.offline"]


def test_a_device_without_a_state_hash_gets_one_when_it_connects(client: HubClient, tenant: Tenant) -> None:
    # A store from before state hashes (or a crash between the record and its state) has a device record with
    # no state: the status shown is the record's, and connecting makes the state and marks it online.
    key = device_key(client, tenant)
    redis = client.services.redis
    client.call(redis.delete, stream_keys.device_state(tenant.org_id, "boiler-7"))
    client.call(redis.hset, keys.device(tenant.org_id, "boiler-7"), mapping={"status": "offline", "last_seen": "5"})
    assert client.get("/devices/boiler-7", headers=tenant.admin).json()["last_seen"] == "1970-01-01T00:00:00.005Z"
    with connect(client, key) as ws:
        receive(ws)
        device = client.get("/devices/boiler-7", headers=tenant.admin).json()
        assert device["status"] == "online" and device["last_seen"] != "1970-01-01T00:00:00.005Z"
    state = client.call(redis.hgetall, stream_keys.device_state(tenant.org_id, "boiler-7"))
    assert state["status"] in ("online", "offline") and "last_seen" in state


def test_a_deleted_device_leaves_no_state_and_no_presence_event(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    redis = client.services.redis
    with connect(client, key) as ws:
        receive(ws)
        assert client.delete("/devices/boiler-7", headers=tenant.admin).status_code == 204
    time.sleep(0.2)  # the close and its offline mark
    assert not client.call(redis.exists, stream_keys.device_state(tenant.org_id, "boiler-7"))
    events = client.call(redis.xrange, stream_keys.org_events(tenant.org_id, stream_keys.partition_of("boiler-7")))
    assert [e[1]["e"] for e in events] == ["device.online"]


def test_every_disconnect_is_marked_offline_even_when_the_handler_is_cancelled(
    client: HubClient, tenant: Tenant
) -> None:
    # The test client cancels the app's task as soon as the socket closes, as an ASGI server may: the offline
    # mark must land anyway, every time.
    key = device_key(client, tenant)
    for _ in range(10):
        with connect(client, key) as ws:
            receive(ws)
        deadline = time.monotonic() + 5
        while client.get("/devices/boiler-7", headers=tenant.admin).json()["status"] != "offline":
            assert time.monotonic() < deadline, "the device was never marked offline"
            time.sleep(0.02)
    events = client.call(
        client.services.redis.xrange, stream_keys.org_events(tenant.org_id, stream_keys.partition_of("boiler-7"))
    )
    assert [e[1]["e"] for e in events] == ["device.online", "device.offline"] * 10


def test_a_large_frame_is_referenced_not_copied_in_the_org_telemetry_stream(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    count = REFERENCE_OVER_BYTES // 8  # one column of this many float64 is larger than the threshold
    large = msgpack.packb(
        {
            "type": "columns",
            "seq": 1,
            "ts": [NOW_MS + i for i in range(count)],
            "metrics": {"temp": struct.pack(f"<{count}d", *range(count))},
        }
    )
    assert len(large) > REFERENCE_OVER_BYTES
    with connect(client, key) as ws:
        receive(ws)
        ws.send_bytes(large)
        assert receive(ws) == {"type": "ack", "seq": 1}
        ws.send_bytes(telemetry(2))
        assert receive(ws) == {"type": "ack", "seq": 2}
    redis = client.http.app.state.device_ingest.frames_redis  # type: ignore[attr-defined]
    device_entries = client.call(redis.xrange, stream_keys.device_frames(tenant.org_id, "boiler-7"))
    org_entries = client.call(
        redis.xrange, stream_keys.org_telemetry(tenant.org_id, stream_keys.partition_of("boiler-7"))
    )
    assert [fields[b"f"] for _, fields in device_entries] == [large, telemetry(2)]
    (_, referenced), (_, copied) = org_entries
    assert referenced[b"r"] == device_entries[0][0] and b"f" not in referenced
    assert copied[b"f"] == telemetry(2) and b"r" not in copied
    assert referenced[b"d"] == copied[b"d"] == b"boiler-7"


def test_a_quiet_control_channel_stays_subscribed_and_a_later_revoke_still_closes(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # With a socket timeout far below the quiet span, a blocking read on the control channel would fail and
    # resubscribe (missing what is published meanwhile); the listener's bounded waits never meet it.
    monkeypatch.setattr(redis_client, "SOCKET_TIMEOUT_S", 0.3)
    monkeypatch.setattr(device_ingest, "CONTROL_POLL_S", 0.1)
    config = HubConfig(redis_url=redis_url, data_dir=tmp_path / "data", secret="test-secret-" + "x" * 60)
    with TestClient(create_app(config)) as test_client:
        client = HubClient(test_client)
        tenant = client.new_tenant()
        key = device_key(client, tenant)
        with connect(client, key) as ws:
            receive(ws)
            time.sleep(1.0)
            assert client.post("/devices/boiler-7/keys", headers=tenant.admin).status_code == 201
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_bytes()
            assert closed.value.code == 4001
    assert "control channel lost" not in caplog.text
