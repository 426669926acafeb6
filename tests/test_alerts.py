"""Alerts in-process, through the real entry points: rules over REST, telemetry over the device WebSocket and
HTTP readings, the alert lifecycle on REST, the `alerts` channel and the event log; roles, tenants, limits."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest

from hub import keys
from hub.clock import iso_ms
from tests.conftest import TIMEOUT
from tests.support import API, HubClient, Tenant, assert_error, bearer
from tests.test_dashboard_ws import ask, dashboard, next_message
from tests.test_device_gateway import connect, device_key, receive
from tests.test_openapi import check_reply, fetch_document

# Readings an hour old, on a whole minute: within the accepted range of timestamps (ingest/limits.py) whenever
# the tests run (a fixed instant fell out of it a year after it was written).
T0 = (int(time.time()) // 60 - 60) * 60_000
WAIT_S = 5 * TIMEOUT


@pytest.fixture
def tenant(client: HubClient) -> Tenant:
    return client.new_tenant()


def make_rule(client: HubClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    rule = {"name": "Boiler too hot", "metric": "temp", "op": "gt", "threshold": 80, "severity": "critical", **body}
    response = client.post("/alert-rules", json=rule, headers=tenant.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def alerts_of(client: HubClient, tenant: Tenant, rule_id: str, status: str = "") -> list[dict[str, Any]]:
    query = f"?status={status}" if status else ""
    response = client.get(f"/alerts{query}", headers=tenant.admin)
    assert response.status_code == 200, response.text
    return [a for a in response.json()["data"] if a["rule_id"] == rule_id]


def wait_alerts(client: HubClient, tenant: Tenant, rule_id: str, status: str, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = alerts_of(client, tenant, rule_id, status)
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) == count, found
            return found
        time.sleep(0.02)


def telemetry(seq: int, **body: Any) -> bytes:
    return msgpack.packb({"type": "telemetry", "seq": seq, **body})


def send_all(ws: Any, *frames: bytes) -> None:
    """Send frames and wait for the ack of the last."""
    last = msgpack.unpackb(frames[-1])["seq"]
    for frame in frames:
        ws.send_bytes(frame)
    while receive(ws) != {"type": "ack", "seq": last}:
        pass


def reading(client: HubClient, tenant: Tenant, device_id: str, ts: int, **metrics: float) -> None:
    response = client.post(f"/devices/{device_id}/readings", json={"ts": ts, "metrics": metrics}, headers=tenant.admin)
    assert response.status_code == 202, response.text


def test_a_device_triggers_after_for_s_resolves_and_dashboards_and_the_event_log_see_it(
    client: HubClient, tenant: Tenant
) -> None:
    key = device_key(client, tenant)
    rule = make_rule(client, tenant, device_id="boiler-7", for_s=2)
    # Triggers on the first sample: once its alert is there, the flush that held it was evaluated.
    marker = make_rule(client, tenant, name="any temp", threshold=0, severity="info")
    with dashboard(client, tenant.admin_token) as board, connect(client, key) as ws:
        assert ask(board, {"op": "subscribe", "id": 1, "channel": "alerts"})["type"] == "reply"
        assert receive(ws)["type"] == "hello"
        points = [{"ts": T0, "metrics": {"temp": 85.0}}, {"ts": T0 + 1000, "metrics": {"temp": 86.0}}]
        send_all(ws, telemetry(1, points=points))
        wait_alerts(client, tenant, marker["id"], "active")
        assert next_message(board)["data"]["rule_id"] == marker["id"]
        assert alerts_of(client, tenant, rule["id"]) == []  # held for 1 s of the 2
        send_all(ws, telemetry(2, ts=T0 + 2000, metrics={"temp": 87.5}))
        (alert,) = wait_alerts(client, tenant, rule["id"], "active")
        assert alert == {
            "id": alert["id"],
            "rule_id": rule["id"],
            "device_id": "boiler-7",
            "metric": "temp",
            "value": 87.5,
            "severity": "critical",
            "status": "active",
            "triggered_at": iso_ms(T0 + 2000),
            "resolved_at": None,
            "acknowledged_at": None,
        }
        assert alert["id"].startswith("alr_")
        triggered = next_message(board)
        assert triggered["channel"] == "alerts" and triggered["data"] == {**alert, "type": "alert.triggered"}
        send_all(ws, telemetry(3, ts=T0 + 3000, metrics={"temp": 20.0}))
        (resolved,) = wait_alerts(client, tenant, rule["id"], "resolved")
        assert resolved["resolved_at"] == iso_ms(T0 + 3000) and resolved["triggered_at"] == alert["triggered_at"]
        assert next_message(board)["data"] == {**resolved, "type": "alert.resolved"}
    assert alerts_of(client, tenant, rule["id"], "active") == []
    assert client.get(f"/alerts/{alert['id']}", headers=tenant.admin).json() == resolved
    events = client.get("/events?type=alert.triggered&device_id=boiler-7", headers=tenant.admin).json()["data"]
    assert {e["data"]["alert_id"] for e in events} == {
        alert["id"],
        wait_alerts(client, tenant, marker["id"], "")[0]["id"],
    }
    mine = [
        e for e in client.get("/events", headers=tenant.admin).json()["data"] if e["data"].get("rule_id") == rule["id"]
    ]
    assert [e["type"] for e in mine] == ["alert.triggered", "alert.resolved"]
    assert mine[1]["device_id"] == "boiler-7" and mine[1]["data"]["resolved_at"] == iso_ms(T0 + 3000)


def test_http_readings_acknowledge_and_resolve(client: HubClient, tenant: Tenant) -> None:
    client.post("/devices", json={"id": "pump-1", "name": "Pump", "type": "pump"}, headers=tenant.admin)
    client.post("/devices", json={"id": "boiler-1", "name": "Boiler", "type": "boiler"}, headers=tenant.admin)
    rule = make_rule(client, tenant, metric="rpm", op="gte", threshold=3000, device_type="pump", severity="warning")
    viewer = bearer(client.new_api_key(tenant, "viewer"))
    operator = bearer(client.new_api_key(tenant, "operator"))
    with dashboard(client, tenant.admin_token) as board:
        ask(board, {"op": "subscribe", "id": 1, "channel": "alerts"})
        reading(client, tenant, "boiler-1", T0, rpm=5000)  # not a pump
        reading(client, tenant, "pump-1", T0, rpm=3000)
        (alert,) = wait_alerts(client, tenant, rule["id"], "active")
        assert alert["device_id"] == "pump-1" and alert["value"] == 3000.0
        assert next_message(board)["data"]["type"] == "alert.triggered"
        assert_error(client.post(f"/alerts/{alert['id']}/ack", headers=viewer), 403, "forbidden")
        acked = client.post(f"/alerts/{alert['id']}/ack", headers=operator)
        assert acked.status_code == 200, acked.text
        assert acked.json()["status"] == "acknowledged" and acked.json()["acknowledged_at"]
        message = next_message(board)["data"]
        assert message == {**acked.json(), "type": "alert.acknowledged"}
        again = client.post(f"/alerts/{alert['id']}/ack", headers=operator)
        assert again.status_code == 200 and again.json() == acked.json()
        # Acknowledged stays the open alert: still one, however long the condition holds.
        reading(client, tenant, "pump-1", T0 + 1000, rpm=3500)
        reading(client, tenant, "pump-1", T0 + 2000, rpm=10)
        (resolved,) = wait_alerts(client, tenant, rule["id"], "resolved")
        assert resolved["acknowledged_at"] == acked.json()["acknowledged_at"]
        assert next_message(board)["data"]["type"] == "alert.resolved"
    assert alerts_of(client, tenant, rule["id"]) == [resolved]
    assert_error(client.post(f"/alerts/{alert['id']}/ack", headers=operator), 409, "alert_resolved")
    assert client.get("/alerts?status=acknowledged", headers=viewer).json()["meta"]["total"] == 0


def test_deleting_a_rule_resolves_its_alerts_and_stops_evaluation(client: HubClient, tenant: Tenant) -> None:
    client.post("/devices", json={"id": "boiler-7", "name": "B", "type": "boiler"}, headers=tenant.admin)
    rule = make_rule(client, tenant)
    reading(client, tenant, "boiler-7", T0, temp=99)
    wait_alerts(client, tenant, rule["id"], "active")
    deleted = client.delete(f"/alert-rules/{rule['id']}", headers=tenant.admin)
    assert deleted.status_code == 204
    (resolved,) = alerts_of(client, tenant, rule["id"], "resolved")
    assert resolved["resolved_at"]
    assert_error(client.get(f"/alert-rules/{rule['id']}", headers=tenant.admin), 404, "not_found")
    assert_error(client.delete(f"/alert-rules/{rule['id']}", headers=tenant.admin), 404, "not_found")
    marker = make_rule(client, tenant, threshold=0)
    reading(client, tenant, "boiler-7", T0 + 1000, temp=50)
    reading(client, tenant, "boiler-7", T0 + 2000, temp=99)
    wait_alerts(client, tenant, marker["id"], "active")
    assert alerts_of(client, tenant, rule["id"]) == [resolved]


def test_deleting_a_device_resolves_its_open_alerts_and_clears_its_state(
    client: HubClient, tenant: Tenant, sync_redis: Any
) -> None:
    for device_id in ("boiler-1", "boiler-2", "boiler-3"):
        client.post("/devices", json={"id": device_id, "name": "B", "type": "boiler"}, headers=tenant.admin)
    rule = make_rule(client, tenant)
    other = make_rule(client, tenant, name="warm", threshold=50, severity="minor")
    rival = client.new_tenant("rival")
    client.post("/devices", json={"id": "boiler-1", "name": "theirs", "type": "boiler"}, headers=rival.admin)
    theirs = make_rule(client, rival)
    reading(client, tenant, "boiler-1", T0, temp=99)
    reading(client, tenant, "boiler-2", T0, temp=99)
    reading(client, tenant, "boiler-3", T0, temp=99)  # stays: its alerts are untouched
    reading(client, rival, "boiler-1", T0, temp=99)
    wait_alerts(client, tenant, rule["id"], "active", 3)
    wait_alerts(client, tenant, other["id"], "active", 3)
    (rival_alert,) = wait_alerts(client, rival, theirs["id"], "active")
    opened = {(a["rule_id"], a["device_id"]): a for a in alerts_of(client, tenant, rule["id"], "active")}
    opened |= {(a["rule_id"], a["device_id"]): a for a in alerts_of(client, tenant, other["id"], "active")}
    for rule_id in (rule["id"], other["id"]):
        acked = client.post(f"/alerts/{opened[rule_id, 'boiler-2']['id']}/ack", headers=tenant.admin)
        assert acked.status_code == 200, acked.text
    gone = {alert["id"] for (_, device), alert in opened.items() if device != "boiler-3"}
    with dashboard(client, tenant.admin_token) as board, dashboard(client, rival.admin_token) as rival_board:
        assert ask(board, {"op": "subscribe", "id": 1, "channel": "alerts"})["type"] == "reply"
        assert ask(rival_board, {"op": "subscribe", "id": 1, "channel": "alerts"})["type"] == "reply"
        for device_id in ("boiler-1", "boiler-2"):
            assert client.delete(f"/devices/{device_id}", headers=tenant.admin).status_code == 204
        messages = [next_message(board)["data"] for _ in gone]
        assert {m["id"] for m in messages} == gone and {m["type"] for m in messages} == {"alert.resolved"}
        # The rival's channel saw nothing of it: the first thing it receives is its own next change.
        acked = client.post(f"/alerts/{rival_alert['id']}/ack", headers=rival.admin)
        assert next_message(rival_board)["data"] == {**acked.json(), "type": "alert.acknowledged"}
    for message in messages:
        assert message["status"] == "resolved" and message["resolved_at"]
        assert client.get(f"/alerts/{message['id']}", headers=tenant.admin).json() == {
            k: v for k, v in message.items() if k != "type"
        }
        assert (message["acknowledged_at"] is not None) == (message["device_id"] == "boiler-2")
    active = client.get("/alerts?status=active", headers=tenant.admin).json()["data"]
    assert sorted(a["id"] for a in active) == sorted(opened[r, "boiler-3"]["id"] for r in (rule["id"], other["id"]))
    assert client.get("/alerts?status=acknowledged", headers=tenant.admin).json()["data"] == []
    events = client.get("/events?type=alert.resolved", headers=tenant.admin).json()["data"]
    assert {e["data"]["alert_id"] for e in events} == gone
    assert {e["device_id"] for e in events} == {"boiler-1", "boiler-2"}
    for rule_id in (rule["id"], other["id"]):
        state = sync_redis.hgetall(keys.alert_state(tenant.org_id, rule_id))
        assert list(state) == ["boiler-3"]
    # Another organization's alert of a device with the same id is untouched.
    assert client.get(f"/alerts/{rival_alert['id']}", headers=rival.admin).json()["status"] == "acknowledged"
    assert [e["type"] for e in client.get("/events", headers=rival.admin).json()["data"]] == [
        "alert.triggered",
        "alert.acknowledged",
    ]
    assert list(sync_redis.hgetall(keys.alert_state(rival.org_id, theirs["id"]))) == ["boiler-1"]
    # Deleting again is 404 and resolves nothing more.
    assert_error(client.delete("/devices/boiler-1", headers=tenant.admin), 404, "not_found")
    assert len(client.get("/events?type=alert.resolved", headers=tenant.admin).json()["data"]) == len(gone)
    # Re-created with the same id, the device starts from no state: a sample over the threshold opens a new alert.
    client.post("/devices", json={"id": "boiler-1", "name": "B", "type": "boiler"}, headers=tenant.admin)
    reading(client, tenant, "boiler-1", T0 + 1000, temp=99)
    fresh = [a for a in wait_alerts(client, tenant, rule["id"], "active", 2) if a["device_id"] == "boiler-1"]
    assert len(fresh) == 1 and fresh[0]["id"] not in gone and fresh[0]["triggered_at"] == iso_ms(T0 + 1000)


def test_rules_list_and_validation(client: HubClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    client.post("/devices", json={"id": "boiler-7", "name": "B", "type": "boiler"}, headers=tenant.admin)
    first = make_rule(client, tenant, device_id="boiler-7", for_s=60, threshold=80.5)
    assert first["id"].startswith("rul_") and first["created_at"]
    assert {k: first[k] for k in ("device_id", "device_type", "for_s", "threshold", "op")} == {
        "device_id": "boiler-7",
        "device_type": None,
        "for_s": 60,
        "threshold": 80.5,
        "op": "gt",
    }
    second = make_rule(client, tenant, device_type="boiler", op="lt", threshold=-5)
    listed = client.get("/alert-rules?limit=1&offset=1", headers=tenant.admin).json()
    assert listed == {"data": [second], "meta": {"total": 2, "limit": 1, "offset": 1}}
    assert client.get(f"/alert-rules/{first['id']}", headers=tenant.admin).json() == first
    good = {"name": "n", "metric": "temp", "op": "gt", "threshold": 1, "severity": "info"}
    for change, field in (
        ({"name": ""}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"metric": "bad metric"}, "metric"),
        ({"op": "between"}, "op"),
        ({"threshold": "80"}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"threshold": None}, "threshold"),
        ({"severity": "urgent"}, "severity"),
        ({"for_s": -1}, "for_s"),
        ({"for_s": 1.5}, "for_s"),
        ({"device_id": "nobody"}, "device_id"),
        ({"device_type": "bad type"}, "device_type"),
        ({"device_id": "boiler-7", "device_type": "boiler"}, "device_type"),
        ({"color": "red"}, "color"),
    ):
        response = client.post("/alert-rules", json={**good, **change}, headers=tenant.admin)
        assert field in assert_error(response, 400, "validation_error")["details"], change
    missing = client.post("/alert-rules", json={}, headers=tenant.admin)
    details = assert_error(missing, 400, "validation_error")["details"]
    assert set(details) == {"name", "metric", "op", "threshold", "severity"}
    assert_error(client.get("/alerts?status=open", headers=tenant.admin), 400, "validation_error")
    monkeypatch.setattr("hub.alerts.rules.MAX_RULES", 3)
    make_rule(client, tenant)
    assert_error(client.post("/alert-rules", json=good, headers=tenant.admin), 409, "too_many_alert_rules")
    client.delete(f"/alert-rules/{second['id']}", headers=tenant.admin)
    make_rule(client, tenant)


def test_roles_device_keys_and_tenants(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    rule = make_rule(client, tenant)
    reading(client, tenant, "boiler-7", T0, temp=99)
    (alert,) = wait_alerts(client, tenant, rule["id"], "active")
    viewer = bearer(client.new_api_key(tenant, "viewer"))
    assert client.get("/alert-rules", headers=viewer).json()["meta"]["total"] == 1
    assert client.get(f"/alerts/{alert['id']}", headers=viewer).status_code == 200
    body = {"name": "n", "metric": "temp", "op": "gt", "threshold": 1, "severity": "info"}
    assert_error(client.post("/alert-rules", json=body, headers=viewer), 403, "forbidden")
    assert_error(client.delete(f"/alert-rules/{rule['id']}", headers=viewer), 403, "forbidden")
    for method, path in (
        ("GET", "/alert-rules"),
        ("GET", "/alerts"),
        ("GET", f"/alerts/{alert['id']}"),
        ("POST", f"/alerts/{alert['id']}/ack"),
    ):
        assert_error(client.http.request(method, API + path, headers=bearer(key)), 403, "forbidden")
    # Another organization sees none of it, on REST or on its own alerts channel.
    rival = client.new_tenant("rival")
    client.post("/devices", json={"id": "boiler-7", "name": "theirs", "type": "boiler"}, headers=rival.admin)
    for method, path in (
        ("GET", f"/alert-rules/{rule['id']}"),
        ("DELETE", f"/alert-rules/{rule['id']}"),
        ("GET", f"/alerts/{alert['id']}"),
        ("POST", f"/alerts/{alert['id']}/ack"),
    ):
        assert_error(client.http.request(method, API + path, headers=rival.admin), 404, "not_found")
    assert client.get("/alert-rules", headers=rival.admin).json()["meta"]["total"] == 0
    assert client.get("/alerts", headers=rival.admin).json()["meta"]["total"] == 0
    theirs = make_rule(client, rival, threshold=10)
    with dashboard(client, rival.admin_token) as board:
        ask(board, {"op": "subscribe", "id": 1, "channel": "alerts"})
        reading(client, tenant, "boiler-7", T0 + 1000, temp=1)  # resolves A's alert (A's channel only)
        wait_alerts(client, tenant, rule["id"], "resolved")
        reading(client, rival, "boiler-7", T0, temp=99)
        first = next_message(board)  # the rival's own alert is the first thing it receives
        assert first["data"]["rule_id"] == theirs["id"] and first["data"]["type"] == "alert.triggered"
    assert client.get(f"/alerts/{alert['id']}", headers=tenant.admin).json()["status"] == "resolved"
    assert [e["type"] for e in client.get("/events", headers=rival.admin).json()["data"]] == ["alert.triggered"]


def test_replies_match_the_documented_schemas(client: HubClient, tenant: Tenant) -> None:
    document = fetch_document(client)

    def call(method: str, path: str, template: str | None = None, **kwargs: Any) -> Any:
        return check_reply(document, client.http.request(method, API + path, **kwargs), API + (template or path))

    client.post("/devices", json={"id": "boiler-7", "name": "B", "type": "boiler"}, headers=tenant.admin)
    body = {"name": "hot", "metric": "temp", "op": "gt", "threshold": 80, "severity": "major"}
    rule = call("POST", "/alert-rules", json=body, headers=tenant.admin).json()
    call("POST", "/alert-rules", json={**body, "op": "?"}, headers=tenant.admin)
    call("GET", "/alert-rules", headers=tenant.admin)
    call("GET", f"/alert-rules/{rule['id']}", "/alert-rules/{rule_id}", headers=tenant.admin)
    reading(client, tenant, "boiler-7", T0, temp=99)
    (alert,) = wait_alerts(client, tenant, rule["id"], "active")
    call("GET", "/alerts", headers=tenant.admin)
    call("GET", "/alerts?status=active", "/alerts", headers=tenant.admin)
    call("GET", f"/alerts/{alert['id']}", "/alerts/{alert_id}", headers=tenant.admin)
    call("POST", f"/alerts/{alert['id']}/ack", "/alerts/{alert_id}/ack", headers=tenant.admin)
    call("DELETE", f"/alert-rules/{rule['id']}", "/alert-rules/{rule_id}", headers=tenant.admin)
    call("POST", f"/alerts/{alert['id']}/ack", "/alerts/{alert_id}/ack", headers=tenant.admin)
    call("GET", "/alerts/alr_nope", "/alerts/{alert_id}", headers=tenant.admin)
