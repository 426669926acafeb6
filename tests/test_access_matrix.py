"""Who may do what: every REST operation under every role, and every org-scoped path across tenants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from hub.config import HubConfig
from tests.support import PASSWORD, HubClient, Tenant, assert_error, bearer

RANK = {"viewer": 1, "operator": 2, "admin": 3}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: dict[str, Any] | None
    needs: str  # the lowest role allowed


@dataclass
class World:
    """Two organizations; A has one of everything, B only its admin."""

    a: Tenant
    b: Tenant
    device_id: str
    device_key: str
    user_id: str
    key_id: str
    rule_id: str = ""
    webhook_id: str = ""


@pytest.fixture
def config(config: HubConfig) -> HubConfig:
    """Webhooks here name a closed loopback port, for an event these tests never cause: nothing is sent."""
    return config.replace(webhook_allow_private=True)


def make_world(client: HubClient) -> World:
    a = client.new_tenant("org-a")
    b = client.new_tenant("org-b")
    device = client.post("/devices", json={"id": "boiler-7", "name": "Boiler", "type": "boiler"}, headers=a.admin)
    assert device.status_code == 201, device.text
    device_key = client.post("/devices/boiler-7/keys", headers=a.admin).json()["device_key"]
    user = client.post(
        "/users", json={"email": "v@org-a.example", "password": PASSWORD, "role": "viewer"}, headers=a.admin
    ).json()
    key = client.post("/api-keys", json={"name": "k", "role": "viewer"}, headers=a.admin).json()
    world = World(a=a, b=b, device_id="boiler-7", device_key=device_key, user_id=user["id"], key_id=key["id"])
    rule = client.post("/alert-rules", json=ALERT_RULE, headers=a.admin)
    assert rule.status_code == 201, rule.text
    world.rule_id = rule.json()["id"]
    webhook = client.post("/webhooks", json=WEBHOOK, headers=a.admin)
    assert webhook.status_code == 201, webhook.text
    world.webhook_id = webhook.json()["id"]
    return world


ALERT_RULE = {"name": "hot", "metric": "temp", "op": "gt", "threshold": 80, "severity": "major"}
WEBHOOK = {"url": "http://127.0.0.1:9/access-matrix", "events": ["aggregation.completed"]}


def calls(world: World) -> list[Call]:
    dev = f"/devices/{world.device_id}"
    return [
        Call("GET", "/alert-rules", None, "viewer"),
        Call("GET", f"/alert-rules/{world.rule_id}", None, "viewer"),
        Call("POST", "/alert-rules", ALERT_RULE, "operator"),
        Call("GET", "/alerts", None, "viewer"),
        Call("DELETE", f"/alert-rules/{world.rule_id}", None, "operator"),
        Call("GET", "/devices", None, "viewer"),
        Call("GET", dev, None, "viewer"),
        Call("POST", "/devices", {"name": "new", "type": "t"}, "operator"),
        Call("PATCH", dev, {"name": "renamed"}, "operator"),
        Call("PUT", dev, {"name": "renamed again"}, "operator"),
        Call("POST", f"{dev}/keys", None, "operator"),
        Call("POST", "/devices/registration/tokens", {"device_name": "x"}, "operator"),
        Call("GET", "/users", None, "admin"),
        Call("POST", "/users", {"email": "n@example.com", "password": PASSWORD, "role": "viewer"}, "admin"),
        Call("GET", "/api-keys", None, "admin"),
        Call("POST", "/api-keys", {"name": "n", "role": "viewer"}, "admin"),
        Call("DELETE", f"/api-keys/{world.key_id}", None, "admin"),
        Call("DELETE", f"/users/{world.user_id}", None, "admin"),
        Call("GET", "/webhooks", None, "admin"),
        Call("POST", "/webhooks", WEBHOOK, "admin"),
        Call("GET", f"/webhooks/{world.webhook_id}/deliveries", None, "admin"),
        Call("DELETE", f"/webhooks/{world.webhook_id}", None, "admin"),
        Call("DELETE", dev, None, "operator"),
    ]


def send(client: HubClient, call: Call, headers: dict[str, str]) -> Any:
    return client.http.request(call.method, "/api/v1" + call.path, json=call.body, headers=headers)


@pytest.mark.parametrize("credential", ["user", "api_key"])
@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_role_matrix(client: HubClient, role: str, credential: str) -> None:
    world = make_world(client)
    token = client.new_user(world.a, role) if credential == "user" else client.new_api_key(world.a, role)
    for call in calls(world):
        response = send(client, call, bearer(token))
        if RANK[role] >= RANK[call.needs]:
            assert response.status_code in (200, 201, 204), (call, response.text)
        else:
            assert_error(response, 403, "forbidden")


def test_device_keys_reach_no_management_endpoint(client: HubClient) -> None:
    world = make_world(client)
    for call in calls(world):
        assert_error(send(client, call, bearer(world.device_key)), 403, "forbidden")
    me = client.get("/auth/me", headers=bearer(world.device_key)).json()
    assert me == {"kind": "device", "id": "boiler-7", "org_id": world.a.org_id, "role": "device"}


def test_unauthenticated_calls_are_401(client: HubClient) -> None:
    world = make_world(client)
    for call in calls(world):
        assert_error(send(client, call, {}), 401, "unauthenticated")


def snapshot(client: HubClient, tenant: Tenant) -> dict[str, Any]:
    """Everything tenant A can see about itself."""
    return {
        "devices": client.get("/devices", headers=tenant.admin).json(),
        "device": client.get("/devices/boiler-7", headers=tenant.admin).json(),
        "users": client.get("/users", headers=tenant.admin).json(),
        "keys": client.get("/api-keys", headers=tenant.admin).json(),
        "alert_rules": client.get("/alert-rules", headers=tenant.admin).json(),
        "webhooks": client.get("/webhooks", headers=tenant.admin).json(),
    }


def test_other_tenants_resources_are_404_and_unchanged(client: HubClient) -> None:
    world = make_world(client)
    before = snapshot(client, world.a)
    ids = (world.device_id, world.user_id, world.key_id, world.rule_id, world.webhook_id)
    foreign = [c for c in calls(world) if any(i in c.path for i in ids)]
    assert len(foreign) == 11
    for call in foreign:
        assert_error(send(client, call, world.b.admin), 404, "not_found")
    assert snapshot(client, world.a) == before
    # The old device key still works: the foreign rotation did nothing.
    assert client.get("/auth/me", headers=bearer(world.device_key)).status_code == 200
    # B's listings show nothing of A's.
    assert client.get("/devices", headers=world.b.admin).json()["meta"]["total"] == 0
    assert client.get("/users", headers=world.b.admin).json()["meta"]["total"] == 1
    assert client.get("/api-keys", headers=world.b.admin).json()["meta"]["total"] == 0
    assert client.get("/webhooks", headers=world.b.admin).json()["meta"]["total"] == 0


def test_device_ids_are_unique_per_org_not_across_orgs(client: HubClient) -> None:
    world = make_world(client)
    again = client.post(
        "/devices", json={"id": "boiler-7", "name": "B's boiler", "type": "boiler"}, headers=world.b.admin
    )
    assert again.status_code == 201
    assert client.get("/devices/boiler-7", headers=world.a.admin).json()["name"] == "Boiler"
    assert client.get("/devices/boiler-7", headers=world.b.admin).json()["name"] == "B's boiler"


def test_other_tenants_device_key_cannot_touch_this_org(client: HubClient) -> None:
    world = make_world(client)
    b_device = client.post("/devices", json={"name": "b", "type": "t"}, headers=world.b.admin).json()
    b_key = client.post(f"/devices/{b_device['id']}/keys", headers=world.b.admin).json()["device_key"]
    me = client.get("/auth/me", headers=bearer(b_key)).json()
    assert me["org_id"] == world.b.org_id
    assert_error(client.get("/devices/boiler-7", headers=bearer(b_key)), 403, "forbidden")
