"""``RestClient`` against a live hub: the main operations of API.md §3, paging, idempotency, provisioning into a
``DeviceClient``, and errors raised as ``ApiError`` carrying the contract's status, code and request id."""

from __future__ import annotations

import time

import pytest

from clients import ApiError, DeviceClient, RestClient
from tests.clients.conftest import ADMIN_EMAIL, WAIT, new_device
from tests.processes import ServeProcess

NOW_MS = int(time.time() * 1000)


async def test_errors_carry_the_contract_code(hub_server: ServeProcess, rest: RestClient) -> None:
    with pytest.raises(ApiError) as missing:
        await rest.get_device("no-such-device")
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert missing.value.request_id is not None and missing.value.request_id.startswith("req_")

    device = await new_device(rest)
    with pytest.raises(ApiError) as taken:
        await rest.create_device(id=device.id, name="again", type="sensor")
    assert (taken.value.status, taken.value.code) == (409, "device_exists")

    with pytest.raises(ApiError) as invalid:
        await rest.list_readings(device.id, limit=5000)
    assert (invalid.value.status, invalid.value.code) == (400, "validation_error")
    assert "limit" in invalid.value.details

    async with RestClient(hub_server.url, token="sk_live_not-a-key") as stranger:
        with pytest.raises(ApiError) as unauthenticated:
            await stranger.me()
        assert (unauthenticated.value.status, unauthenticated.value.code) == (401, "unauthenticated")
        with pytest.raises(ApiError) as wrong_password:
            await stranger.login(ADMIN_EMAIL, "not-the-password")
        assert wrong_password.value.code == "invalid_credentials"
        assert (await stranger.health())["status"] == "healthy"  # no credential needed


async def test_registry_keys_and_users(hub_server: ServeProcess, rest: RestClient) -> None:
    assert (await rest.me())["kind"] == "user"
    created = await rest.create_device(
        id="pump-3", name="Pump 3", type="pump", tags=["basement"], metadata={"floor": -1}, idempotency_key="pump-3"
    )
    replayed = await rest.create_device(
        id="pump-3", name="Pump 3", type="pump", tags=["basement"], metadata={"floor": -1}, idempotency_key="pump-3"
    )
    assert replayed == created
    updated = await rest.update_device("pump-3", name="Pump three")
    assert updated["name"] == "Pump three" and (await rest.get_device("pump-3"))["tags"] == ["basement"]
    pumps = await rest.list_devices(type="pump", limit=10)
    assert [d["id"] for d in pumps["data"]] == ["pump-3"] and pumps["meta"]["total"] == 1
    assert "pump-3" in [d["id"] async for d in rest.iter_devices()]

    key = await rest.create_api_key("grafana", "viewer")
    async with RestClient(hub_server.url, token=key["key"]) as viewer:
        assert (await viewer.me())["role"] == "viewer"
        with pytest.raises(ApiError) as forbidden:
            await viewer.delete_device("pump-3")
        assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
        await rest.delete_api_key(key["id"])
        with pytest.raises(ApiError) as revoked:
            await viewer.me()
        assert revoked.value.status == 401
    assert key["id"] not in [k["id"] for k in (await rest.list_api_keys())["data"]]

    user = await rest.create_user("ops@example.com", "correct-horse-battery", "operator")
    assert user["id"] in [u["id"] for u in (await rest.list_users())["data"]]
    await rest.delete_user(user["id"])

    await rest.delete_device("pump-3")
    with pytest.raises(ApiError) as gone:
        await rest.get_device("pump-3")
    assert gone.value.status == 404


async def test_provisioning_readings_history_and_commands(hub_server: ServeProcess, rest: RestClient) -> None:
    registration = await rest.create_registration_token("field-unit", type="sensor")
    async with RestClient(hub_server.url) as anonymous:
        provisioned = await anonymous.provision(registration["token"])
        with pytest.raises(ApiError) as used:
            await anonymous.provision(registration["token"])
    assert (used.value.status, used.value.code) == (410, "token_used")
    device_id = provisioned["device_id"]

    # The provisioning reply's ws_url is all the device needs.
    async with DeviceClient(provisioned["ws_url"], provisioned["device_key"]) as device:
        for n in range(150):
            await device.send({"temp": 20.0 + n / 10, "rpm": float(n)}, ts=NOW_MS - 150_000 + n * 1000)
        await device.flush()
        assert device.device_id == device_id

    # (with ts: the hub reads a reading posted without one back at ts 0; see the SDK's report)
    assert (await rest.post_readings(device_id, {"temp": 99.0}, ts=NOW_MS))["accepted"] == 1
    assert (await rest.latest_readings(device_id, metric=["temp"]))["data"]["temp"]["value"] == 99.0
    first = await rest.list_readings(device_id, metric=["rpm"], limit=100)
    assert len(first["data"]) == 100 and first["meta"]["next_cursor"]
    assert len([row async for row in rest.iter_readings(device_id, metric=["rpm"])]) == 150
    assert len([m async for m in rest.iter_messages(device_id, type="telemetry")]) == 151  # two pages and more
    hourly = await rest.aggregate_readings(
        device_id, from_=NOW_MS - 3_600_000, to=NOW_MS + 3_600_000, interval="1h", metric=["rpm"], fn=["count", "max"]
    )
    assert sum(bucket["count"] for bucket in hourly["data"]) == 150
    assert max(bucket["max"] for bucket in hourly["data"]) == 149.0
    online = [e async for e in rest.iter_events(device_id=device_id, type="device.online")]
    assert len(online) == 1

    # Commands: idempotent create, cancel while queued, 409 once it is not.
    command = await rest.create_command(device_id, "reboot", {"delay_s": 1}, ttl_s=600, idempotency_key="r-1")
    assert await rest.create_command(device_id, "reboot", {"delay_s": 1}, ttl_s=600, idempotency_key="r-1") == command
    assert (await rest.get_command(command["command_id"]))["status"] == "queued"
    assert (await rest.cancel_command(command["command_id"]))["status"] == "canceled"
    with pytest.raises(ApiError) as not_queued:
        await rest.cancel_command(command["command_id"])
    assert (not_queued.value.status, not_queued.value.code) == (409, "command_not_queued")
    listed = [c["command_id"] async for c in rest.iter_commands(device_id)]
    assert listed == [command["command_id"]]


async def test_device_keys_read_their_own_readings_only(hub_server: ServeProcess, rest: RestClient) -> None:
    mine, other = await new_device(rest), await new_device(rest)
    async with RestClient(hub_server.url, token=mine.key, timeout=WAIT) as device:
        assert (await device.post_readings(mine.id, points=[{"ts": NOW_MS, "metrics": {"x": 1.0}}]))["accepted"] == 1
        assert [row["value"] async for row in device.iter_readings(mine.id)] == [1.0]
        with pytest.raises(ApiError) as elsewhere:
            await device.list_readings(other.id)
        assert elsewhere.value.status == 404


async def test_alert_rules_alerts_and_webhooks(hub_server: ServeProcess, rest: RestClient) -> None:
    rule = await rest.create_alert_rule(
        name="hot", metric="temp", op="gt", threshold=80.0, severity="major", device_type="boiler"
    )
    assert (await rest.get_alert_rule(rule["id"]))["id"] == rule["id"]
    assert rule["id"] in [r["id"] for r in (await rest.list_alert_rules())["data"]]
    await rest.delete_alert_rule(rule["id"])
    with pytest.raises(ApiError) as gone:
        await rest.get_alert_rule(rule["id"])
    assert gone.value.status == 404
    assert [a async for a in rest.iter_alerts(status="active")] == []
    with pytest.raises(ApiError) as unknown_alert:
        await rest.ack_alert("alr_missing")
    assert unknown_alert.value.status == 404

    hook = await rest.create_webhook("http://127.0.0.1:9/hook", ["device.online"], secret="s" * 32)
    assert hook["secret"] == "s" * 32
    assert hook["id"] in [w["id"] for w in (await rest.list_webhooks())["data"]]
    assert (await rest.list_webhook_deliveries(hook["id"]))["data"] == []
    await rest.delete_webhook(hook["id"])
    with pytest.raises(ApiError) as refused:
        await rest.create_webhook("not a url", ["device.online"])
    assert (refused.value.status, refused.value.code) == (400, "validation_error")
