"""History endpoints: readings, latest, messages and events; every page walk sees each item exactly once."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import numpy as np
import pytest

from ingest import stream_keys
from tests.support import HubClient, Tenant, assert_error, bearer
from tests.test_dashboard_ws import ask, dashboard, next_message

NOW_MS = int(time.time() * 1000) - 60_000
WS = "/api/v1/ws/device"


@pytest.fixture
def tenant(client: HubClient) -> Tenant:
    return client.new_tenant()


@pytest.fixture
def key(client: HubClient, tenant: Tenant) -> str:
    client.post("/devices", json={"id": "m1", "name": "m1", "type": "meter"}, headers=tenant.admin)
    device_key: str = client.post("/devices/m1/keys", headers=tenant.admin).json()["device_key"]
    return device_key


def post(client: HubClient, key: str, body: dict[str, Any]) -> None:
    assert client.post("/devices/m1/readings", json=body, headers=bearer(key)).status_code == 202


def walk(client: HubClient, path: str, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = client.get(path, params=query, headers=headers)
        assert page.status_code == 200, page.text
        items.extend(page.json()["data"])
        cursor = page.json()["meta"]["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the walk did not end")


def test_walking_readings_pages_returns_each_sample_once(client: HubClient, tenant: Tenant, key: str) -> None:
    expected = []
    for i in range(12):
        points = [{"ts": NOW_MS + i * 10 + j, "metrics": {"a": i * 10 + j, "b": -(i * 10 + j)}} for j in range(3)]
        post(client, key, {"points": points})
        expected += [
            (NOW_MS + i * 10 + j, name, v) for j in range(3) for name, v in (("a", i * 10 + j), ("b", -(i * 10 + j)))
        ]
    for limit in (1, 7, 72, 1000):
        rows = walk(client, "/devices/m1/readings", tenant.admin, limit=limit)
        assert [(_ms(r["ts"]), r["metric"], r["value"]) for r in rows] == expected
        backwards = walk(client, "/devices/m1/readings", tenant.admin, limit=limit, order="desc")
        assert [(_ms(r["ts"]), r["metric"], r["value"]) for r in backwards] == expected[::-1]
    only_a = walk(client, "/devices/m1/readings", tenant.admin, metric="a", limit=5)
    assert [r["value"] for r in only_a] == [v for _, n, v in expected if n == "a"]
    window = walk(client, "/devices/m1/readings", tenant.admin, **{"from": NOW_MS + 30, "to": NOW_MS + 52})
    assert {_ms(r["ts"]) for r in window} == {t for t, _, _ in expected if NOW_MS + 30 <= t <= NOW_MS + 52}


def _ms(iso: str) -> int:
    from hub.clock import parse_time_ms

    return parse_time_ms(iso)


def test_columns_sent_as_bin_read_back_as_samples(client: HubClient, tenant: Tenant, key: str) -> None:
    ts = np.arange(NOW_MS, NOW_MS + 4, dtype="<i8")
    frame = {
        "type": "columns",
        "seq": 1,
        "ts": ts.tobytes(),
        "metrics": {"v": np.array([1.5, 2.5, 3.5, 4.5]).tobytes()},
    }
    with client.http.websocket_connect(WS, headers=bearer(key)) as ws:
        ws.receive_bytes()
        ws.send_bytes(msgpack.packb(frame))
        assert msgpack.unpackb(ws.receive_bytes()) == {"type": "ack", "seq": 1}
    rows = client.get("/devices/m1/readings", headers=tenant.admin).json()["data"]
    assert [(_ms(r["ts"]), r["value"]) for r in rows] == [(NOW_MS + i, 1.5 + i) for i in range(4)]
    messages = client.get("/devices/m1/messages?type=telemetry", headers=tenant.admin).json()["data"]
    assert messages[0]["type"] == "columns" and messages[0]["encoding"] == "msgpack" and messages[0]["seq"] == 1
    assert messages[0]["frame"]["ts"] == ts.tolist() and messages[0]["frame"]["metrics"]["v"] == [1.5, 2.5, 3.5, 4.5]


def test_a_large_bin_columns_frame_is_stored_packed_and_read_back_exactly(
    client: HubClient, tenant: Tenant, key: str
) -> None:
    """The benchmark's frame shape (1,000 x 4, bin): Redis holds it packed, smaller (ingest.at_rest); history,
    messages and a dashboard see every value bit for bit, -0.0 and the extremes included."""
    ts = np.arange(NOW_MS - 1_000, NOW_MS, dtype="<i8")
    phase = np.linspace(0.0, 2 * np.pi, 1_000)
    extremes = np.array([-0.0, 5e-324, 1.7976931348623157e308, -2.2250738585072014e-308])
    columns = {
        "temp": np.sin(phase) * 5 + 21,
        "hum": np.cos(phase) * 10 + 45,
        "volt": np.concatenate([extremes, np.full(996, 3.3)]),
        "n": np.arange(1_000, dtype="<f8"),
    }
    frame = {"type": "columns", "seq": 1, "ts": ts.tobytes(), "metrics": {k: v.tobytes() for k, v in columns.items()}}
    sent = msgpack.packb(frame)
    with dashboard(client, tenant.admin_token) as watcher:
        assert ask(watcher, {"op": "subscribe", "id": 1, "channel": "devices/m1/telemetry"})["type"] == "reply"
        with client.http.websocket_connect(WS, headers=bearer(key)) as ws:
            ws.receive_bytes()
            ws.send_bytes(sent)
            assert msgpack.unpackb(ws.receive_bytes()) == {"type": "ack", "seq": 1}
        live = next_message(watcher)["data"]
    frames_redis = client.http.app.state.device_ingest.frames_redis  # type: ignore[attr-defined]
    [(_, stored)] = client.call(frames_redis.xrange, stream_keys.device_frames(tenant.org_id, "m1"))
    assert stored[b"b"] == b"2" and len(stored[b"f"]) < 0.8 * len(sent)
    assert live["ts"] == ts.tolist()
    assert {name: np.array(v).tobytes() for name, v in live["metrics"].items()} == frame["metrics"]
    rows = walk(client, "/devices/m1/readings", tenant.admin, limit=1000)
    assert len(rows) == 4_000
    got = {(r["metric"], _ms(r["ts"])): r["value"] for r in rows}
    for name, values in columns.items():
        assert np.array([got[(name, int(t))] for t in ts]).tobytes() == values.tobytes(), name
    [message] = client.get("/devices/m1/messages", headers=tenant.admin).json()["data"]
    assert message["encoding"] == "msgpack" and message["seq"] == 1 and message["frame"]["ts"] == ts.tolist()
    assert {k: np.array(v).tobytes() for k, v in message["frame"]["metrics"].items()} == frame["metrics"]


def test_latest_holds_the_newest_value_of_each_metric(client: HubClient, tenant: Tenant, key: str) -> None:
    post(client, key, {"ts": NOW_MS, "metrics": {"a": 1, "b": 2}})
    post(client, key, {"ts": NOW_MS + 5, "metrics": {"a": 3}})
    post(client, key, {"ts": NOW_MS - 5, "metrics": {"a": 99}})  # late, older: not the latest
    latest = client.get("/devices/m1/readings/latest", headers=bearer(key)).json()["data"]
    assert {k: v["value"] for k, v in latest.items()} == {"a": 3, "b": 2}
    only_b = client.get("/devices/m1/readings/latest?metric=b", headers=tenant.admin).json()["data"]
    assert list(only_b) == ["b"] and _ms(only_b["b"]["ts"]) == NOW_MS


def test_messages_are_every_frame_as_received_with_type_filter(client: HubClient, tenant: Tenant, key: str) -> None:
    sent = []
    with client.http.websocket_connect(WS, headers=bearer(key)) as ws:
        ws.receive_bytes()
        for seq in range(1, 8):
            frame = {"type": "telemetry", "seq": seq, "ts": NOW_MS + seq, "metrics": {"t": seq}}
            if seq % 3 == 0:
                frame = {"type": "event", "seq": seq, "ts": NOW_MS + seq, "name": "tick", "data": {"n": seq}}
            sent.append(frame)
            ws.send_bytes(msgpack.packb(frame))
            assert msgpack.unpackb(ws.receive_bytes())["seq"] == seq
    every = walk(client, "/devices/m1/messages", tenant.admin, limit=2)
    assert [m["frame"] for m in every] == sent
    events = walk(client, "/devices/m1/messages", tenant.admin, type="event", limit=1)
    assert [m["seq"] for m in events] == [3, 6]
    newest_first = walk(client, "/devices/m1/messages", tenant.admin, order="desc", limit=3)
    assert [m["seq"] for m in newest_first] == [7, 6, 5, 4, 3, 2, 1]


def test_events_log_presence_and_device_events(client: HubClient, tenant: Tenant, key: str) -> None:
    with client.http.websocket_connect(WS, headers=bearer(key)) as ws:
        ws.receive_bytes()
        ws.send_bytes(msgpack.packb({"type": "event", "seq": 1, "name": "door_opened", "data": {"door": 2}}))
        ws.receive_bytes()
    for _ in range(100):
        if len(client.get("/events", headers=tenant.admin).json()["data"]) == 3:
            break
        time.sleep(0.01)
    events = walk(client, "/events", tenant.admin, limit=1)
    assert [e["type"] for e in events] == ["device.online", "device.event", "device.offline"]
    assert events[1]["data"]["name"] == "door_opened" and events[1]["data"]["data"] == {"door": 2}
    assert {e["device_id"] for e in events} == {"m1"}
    online = client.get("/events?type=device.online", headers=tenant.admin).json()["data"]
    assert len(online) == 1
    assert client.get("/events?device_id=other", headers=tenant.admin).json()["data"] == []


def test_history_access_and_bad_parameters(client: HubClient, tenant: Tenant, key: str) -> None:
    post(client, key, {"metrics": {"a": 1}})
    viewer = client.new_user(tenant, "viewer")
    assert client.get("/devices/m1/readings", headers=bearer(viewer)).status_code == 200
    assert client.get("/devices/m1/readings", headers=bearer(key)).status_code == 200
    assert_error(client.get("/devices/m1/messages", headers=bearer(key)), 403, "forbidden")
    assert_error(client.get("/events", headers=bearer(key)), 403, "forbidden")
    other = client.new_tenant("other")
    for path in ("/devices/m1/readings", "/devices/m1/readings/latest", "/devices/m1/messages"):
        assert_error(client.get(path, headers=other.admin), 404, "not_found")
    assert client.get("/events", headers=other.admin).json()["data"] == []
    assert_error(client.get("/devices/m1/readings?cursor=bogus", headers=tenant.admin), 400, "invalid_cursor")
    assert_error(client.get("/devices/m1/readings?limit=1001", headers=tenant.admin), 400, "validation_error")
    bad_range = client.get("/devices/m1/readings", params={"from": NOW_MS + 10, "to": NOW_MS}, headers=tenant.admin)
    assert_error(bad_range, 400, "validation_error")
    assert_error(client.get("/devices/m1/readings?from=yesterday", headers=tenant.admin), 400, "validation_error")
    assert_error(client.get("/devices/m1/messages?type=nope", headers=tenant.admin), 400, "validation_error")


def test_readings_sent_without_ts_read_back_at_their_arrival(client: HubClient, tenant: Tenant, key: str) -> None:
    post(client, key, {"ts": NOW_MS, "metrics": {"a": 1}})
    before = int(time.time() * 1000)
    post(client, key, {"metrics": {"a": 2}})  # no ts: the server's time of arrival
    after = int(time.time() * 1000)
    readings = walk(client, "/devices/m1/readings", tenant.admin, metric="a")
    stamped = {r["value"]: _ms(r["ts"]) for r in readings}
    assert stamped[1] == NOW_MS
    assert before - 1000 <= stamped[2] <= after + 1000, stamped
    latest = client.get("/devices/m1/readings/latest", headers=tenant.admin).json()["data"]
    assert latest["a"]["value"] == 2 and before - 1000 <= _ms(latest["a"]["ts"]) <= after + 1000
