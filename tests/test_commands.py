"""Commands in-process: REST to the device and back, queueing, deadlines, cancel, refusals, isolation."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest

from tests.support import HubClient, Tenant, assert_error, bearer
from tests.test_device_gateway import connect, device_key, receive


@pytest.fixture
def tenant(client: HubClient) -> Tenant:
    return client.new_tenant()


def send_command(client: HubClient, tenant: Tenant, device_id: str = "boiler-7", **body: Any) -> str:
    response = client.post(f"/devices/{device_id}/commands", json={"command": "reboot", **body}, headers=tenant.admin)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    command_id: str = response.json()["command_id"]
    return command_id


def command(client: HubClient, tenant: Tenant, command_id: str) -> dict[str, Any]:
    response = client.get(f"/commands/{command_id}", headers=tenant.admin)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def wait_for_status(
    client: HubClient, tenant: Tenant, command_id: str, status: str, within_s: float = 5.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        found = command(client, tenant, command_id)
        if found["status"] == status or time.monotonic() > deadline:
            assert found["status"] == status, found
            return found
        time.sleep(0.05)


def result(command_id: str, status: str = "completed", **extra: Any) -> bytes:
    return msgpack.packb({"type": "command_result", "command_id": command_id, "status": status, **extra})


def test_round_trip_to_a_connected_device(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    with connect(client, key) as ws:
        assert receive(ws)["type"] == "hello"
        command_id = send_command(client, tenant, params={"delay_s": 5}, timeout_s=60)
        frame = receive(ws)
        assert frame["type"] == "command" and frame["command_id"] == command_id
        assert frame["command"] == "reboot" and frame["params"] == {"delay_s": 5} and frame["expires_at"]
        sent = wait_for_status(client, tenant, command_id, "sent")
        assert sent["sent_at"] and sent["completed_at"] is None
        ws.send_bytes(result(command_id, result={"uptime_s": 12}))
        assert receive(ws)["type"] == "ack"
        done = wait_for_status(client, tenant, command_id, "completed")
    assert done["result"] == {"uptime_s": 12} and done["error"] is None and done["completed_at"]
    # The result frame is in the device's message history; the lifecycle in the event log.
    messages = client.get("/devices/boiler-7/messages?type=command_result", headers=tenant.admin).json()["data"]
    assert [m["frame"]["command_id"] for m in messages] == [command_id]
    events = client.get("/events?type=command.completed", headers=tenant.admin).json()["data"]
    assert [e["data"]["command_id"] for e in events] == [command_id]
    kinds = [e["type"] for e in client.get("/events", headers=tenant.admin).json()["data"] if "command" in e["type"]]
    assert kinds == ["command.queued", "command.sent", "command.completed"]


def test_a_failed_result_keeps_the_devices_error(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    with connect(client, key) as ws:
        receive(ws)
        command_id = send_command(client, tenant)
        assert receive(ws)["command_id"] == command_id
        ws.send_bytes(result(command_id, "failed", error="disk full"))
        receive(ws)
        failed = wait_for_status(client, tenant, command_id, "failed")
    assert failed["error"] == "disk full" and failed["result"] is None


def test_offline_device_gets_its_queue_in_creation_order_on_connect(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    ids = [send_command(client, tenant, command=f"step-{n}") for n in range(5)]
    assert [command(client, tenant, i)["status"] for i in ids] == ["queued"] * 5
    with connect(client, key) as ws:
        assert receive(ws)["type"] == "hello"
        frames = [receive(ws) for _ in ids]
        assert [f["command_id"] for f in frames] == ids
        assert [f["command"] for f in frames] == [f"step-{n}" for n in range(5)]
        for command_id in ids:
            wait_for_status(client, tenant, command_id, "sent")


def test_cancel_while_queued_and_not_after(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    first, second = send_command(client, tenant), send_command(client, tenant)
    canceled = client.delete(f"/commands/{first}", headers=tenant.admin)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert_error(client.delete(f"/commands/{first}", headers=tenant.admin), 409, "command_not_queued")
    with connect(client, key) as ws:
        receive(ws)
        assert receive(ws)["command_id"] == second  # the canceled one is never sent
        wait_for_status(client, tenant, second, "sent")
    assert_error(client.delete(f"/commands/{second}", headers=tenant.admin), 409, "command_not_queued")
    assert command(client, tenant, first)["status"] == "canceled"


def test_sent_without_an_answer_times_out_and_a_late_result_is_refused(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    with connect(client, key) as ws:
        receive(ws)
        command_id = send_command(client, tenant, timeout_s=1)
        receive(ws)
        timed_out = wait_for_status(client, tenant, command_id, "timed_out", within_s=4)
        assert timed_out["error"] == "no result within timeout_s"
        ws.send_bytes(result(command_id))
        refused = receive(ws)
        assert refused["type"] == "error" and refused["code"] == "command_ended"
    assert command(client, tenant, command_id)["status"] == "timed_out"


def test_a_command_never_sent_within_its_ttl_expires(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    command_id = send_command(client, tenant, ttl_s=0)
    expired = wait_for_status(client, tenant, command_id, "expired", within_s=3)
    assert expired["sent_at"] is None
    with connect(client, key) as ws:
        receive(ws)
        later = send_command(client, tenant, command="after")
        assert receive(ws)["command_id"] == later  # the expired one is not written


def test_a_result_for_another_devices_command_is_refused(client: HubClient, tenant: Tenant) -> None:
    device_key(client, tenant)
    other = device_key(client, tenant, "pump-1")
    command_id = send_command(client, tenant)
    with connect(client, other) as ws:
        receive(ws)
        ws.send_bytes(result(command_id))
        refused = receive(ws)
        assert refused["type"] == "error" and refused["code"] == "unknown_command"
        ws.send_bytes(result("cmd_doesnotexist"))
        assert receive(ws)["code"] == "unknown_command"
    assert command(client, tenant, command_id)["status"] == "queued"


def test_idempotency_key_replays_the_first_reply(client: HubClient, tenant: Tenant) -> None:
    device_key(client, tenant)
    headers = {**tenant.admin, "Idempotency-Key": "reboot-once"}
    first = client.post("/devices/boiler-7/commands", json={"command": "reboot"}, headers=headers)
    again = client.post("/devices/boiler-7/commands", json={"command": "reboot"}, headers=headers)
    assert first.status_code == again.status_code == 202 and first.json() == again.json()
    listed = client.get("/devices/boiler-7/commands", headers=tenant.admin).json()["data"]
    assert [c["command_id"] for c in listed] == [first.json()["command_id"]]


def test_list_newest_first_with_status_filter_and_cursor(client: HubClient, tenant: Tenant) -> None:
    device_key(client, tenant)
    ids = [send_command(client, tenant, command=f"c{n}") for n in range(5)]
    client.delete(f"/commands/{ids[1]}", headers=tenant.admin)
    first = client.get("/devices/boiler-7/commands?limit=2", headers=tenant.admin).json()
    assert [c["command_id"] for c in first["data"]] == [ids[4], ids[3]]
    cursor = first["meta"]["next_cursor"]
    rest = client.get(f"/devices/boiler-7/commands?limit=10&cursor={cursor}", headers=tenant.admin).json()
    assert [c["command_id"] for c in rest["data"]] == [ids[2], ids[1], ids[0]] and rest["meta"]["next_cursor"] is None
    queued = client.get("/devices/boiler-7/commands?status=queued", headers=tenant.admin).json()["data"]
    assert [c["command_id"] for c in queued] == [ids[4], ids[3], ids[2], ids[0]]
    canceled = client.get("/devices/boiler-7/commands?status=canceled", headers=tenant.admin).json()["data"]
    assert [c["command_id"] for c in canceled] == [ids[1]]
    assert_error(client.get("/devices/boiler-7/commands?status=done", headers=tenant.admin), 400, "validation_error")
    assert_error(client.get("/devices/boiler-7/commands?cursor=nope", headers=tenant.admin), 400, "invalid_cursor")


def test_bad_bodies_are_refused_with_the_field(client: HubClient, tenant: Tenant) -> None:
    device_key(client, tenant)
    for body, field in (
        ({}, "command"),
        ({"command": "bad command!"}, "command"),
        ({"command": "x", "params": [1]}, "params"),
        ({"command": "x", "timeout_s": 0}, "timeout_s"),
        ({"command": "x", "ttl_s": 604_801}, "ttl_s"),
        ({"command": "x", "params": {"blob": "x" * 20_000}}, "params"),
        ({"command": "x", "extra": 1}, "extra"),
    ):
        response = client.post("/devices/boiler-7/commands", json=body, headers=tenant.admin)
        details = assert_error(response, 400, "validation_error")["details"]
        assert field in details, (body, details)
    assert_error(client.post("/devices/nobody/commands", json={"command": "x"}, headers=tenant.admin), 404, "not_found")


def test_roles_device_keys_and_tenant_isolation(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    other_key = device_key(client, tenant, "pump-1")
    command_id = send_command(client, tenant)
    viewer = bearer(client.new_api_key(tenant, "viewer"))
    assert client.get(f"/commands/{command_id}", headers=viewer).status_code == 200
    assert_error(client.post("/devices/boiler-7/commands", json={"command": "x"}, headers=viewer), 403, "forbidden")
    assert_error(client.delete(f"/commands/{command_id}", headers=viewer), 403, "forbidden")
    # A device key reads its own device's commands, no other's, and sends none.
    assert client.get(f"/commands/{command_id}", headers=bearer(key)).json()["command_id"] == command_id
    assert client.get("/devices/boiler-7/commands", headers=bearer(key)).json()["data"][0]["command_id"] == command_id
    assert_error(client.get(f"/commands/{command_id}", headers=bearer(other_key)), 404, "not_found")
    assert_error(client.get("/devices/boiler-7/commands", headers=bearer(other_key)), 404, "not_found")
    assert_error(
        client.post("/devices/boiler-7/commands", json={"command": "x"}, headers=bearer(key)), 403, "forbidden"
    )
    # Another organization sees nothing of it, and cannot command the device.
    rival = client.new_tenant("rival")
    assert_error(client.get(f"/commands/{command_id}", headers=rival.admin), 404, "not_found")
    assert_error(client.delete(f"/commands/{command_id}", headers=rival.admin), 404, "not_found")
    assert_error(client.get("/devices/boiler-7/commands", headers=rival.admin), 404, "not_found")
    assert_error(
        client.post("/devices/boiler-7/commands", json={"command": "x"}, headers=rival.admin), 404, "not_found"
    )
    assert command(client, tenant, command_id)["status"] == "queued"


def test_dashboards_see_every_status_change_on_the_commands_channel(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    with client.http.websocket_connect("/api/v1/ws", headers=tenant.admin) as dashboard:
        dashboard.send_json({"op": "subscribe", "id": 1, "channel": "devices/boiler-7/commands"})
        assert dashboard.receive_json()["type"] == "reply"
        with connect(client, key) as ws:
            receive(ws)
            command_id = send_command(client, tenant)
            receive(ws)
            ws.send_bytes(result(command_id, result=42))
            receive(ws)
            seen = [dashboard.receive_json() for _ in range(3)]
    assert [m["channel"] for m in seen] == ["devices/boiler-7/commands"] * 3
    assert [m["data"]["status"] for m in seen] == ["queued", "sent", "completed"]
    assert all(m["data"]["command_id"] == command_id for m in seen)
    assert seen[-1]["data"]["result"] == 42


def test_a_full_queue_refuses_more_until_one_leaves(
    client: HubClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub.commands import store

    monkeypatch.setattr(store, "MAX_QUEUED", 3)
    device_key(client, tenant)
    ids = [send_command(client, tenant) for _ in range(3)]
    refused = client.post("/devices/boiler-7/commands", json={"command": "one-more"}, headers=tenant.admin)
    assert_error(refused, 409, "command_queue_full")
    assert len(client.get("/devices/boiler-7/commands", headers=tenant.admin).json()["data"]) == 3
    client.delete(f"/commands/{ids[0]}", headers=tenant.admin)
    send_command(client, tenant, command="one-more")
