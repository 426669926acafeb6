"""/devices: the registry (create, list with filters, get, PATCH/PUT, delete) and device key rotation."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson
import pytest
import redis

from hub import keys
from ingest import stream_keys
from tests.conftest import TIMEOUT
from tests.support import HubClient, Tenant, assert_error, bearer

ISO_Z = "%Y-%m-%dT%H:%M:%S.%fZ"


def create(client: HubClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    response = client.post("/devices", json=body, headers=tenant.admin)
    assert response.status_code == 201, response.text
    device: dict[str, Any] = response.json()
    return device


def key_for(client: HubClient, tenant: Tenant, device_id: str) -> str:
    response = client.post(f"/devices/{device_id}/keys", headers=tenant.admin)
    assert response.status_code == 201, response.text
    device_key: str = response.json()["device_key"]
    return device_key


def next_message(pubsub: Any) -> Any:
    """The next published message (get_message answers None for the subscribe confirmation it skips)."""
    deadline = time.monotonic() + 5 * TIMEOUT
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            return message
    return None


def ids(response: Any) -> list[str]:
    return [d["id"] for d in response.json()["data"]]


def test_create_makes_a_dev_id_and_the_full_record(client: HubClient) -> None:
    tenant = client.new_tenant()
    device = create(client, tenant, name="Boiler", type="boiler")
    assert device["id"].startswith("dev_")
    created_at = datetime.strptime(device["created_at"], ISO_Z)
    assert device == {
        "id": device["id"],
        "name": "Boiler",
        "type": "boiler",
        "manufacturer": None,
        "model": None,
        "location": None,
        "metadata": {},
        "tags": [],
        "status": "offline",
        "last_seen": None,
        "created_at": device["created_at"],
        "updated_at": device["created_at"],
    }
    assert abs(created_at.timestamp() - time.time()) < 60 * TIMEOUT
    assert client.get(f"/devices/{device['id']}", headers=tenant.admin).json() == device


def test_create_with_every_field_and_a_chosen_id(client: HubClient) -> None:
    tenant = client.new_tenant()
    body = {
        "id": "Boiler.7_b-1",
        "name": "Boiler 7",
        "type": "boiler",
        "manufacturer": "Acme",
        "model": "B-7",
        "location": {"lat": 48.85, "lon": 2.35},
        "metadata": {"floor": 2, "serial": "x1", "nested": {"a": [1, 2]}},
        "tags": ["basement", "gas", "basement"],
    }
    device = create(client, tenant, **body)
    assert {k: device[k] for k in body} == {**body, "tags": ["basement", "gas"]}
    text = create(client, tenant, name="Pump", type="pump", location="Basement, row 3")
    assert text["location"] == "Basement, row 3"
    assert client.get("/devices/Boiler.7_b-1", headers=tenant.admin).json() == device


def test_a_device_id_is_unique_in_its_org_only(client: HubClient) -> None:
    a = client.new_tenant("a")
    b = client.new_tenant("b")
    create(client, a, id="boiler-7", name="Boiler", type="boiler")
    again = client.post("/devices", json={"id": "boiler-7", "name": "Other", "type": "x"}, headers=a.admin)
    assert_error(again, 409, "device_exists")
    assert client.get("/devices/boiler-7", headers=a.admin).json()["name"] == "Boiler"
    assert create(client, b, id="boiler-7", name="B's boiler", type="boiler")["name"] == "B's boiler"


def test_create_validates_every_field_at_once(client: HubClient) -> None:
    tenant = client.new_tenant()
    body = {
        "id": "has space",
        "name": "n" * 129,
        "type": "bad/type",
        "manufacturer": 5,
        "location": "l" * 257,
        "metadata": ["not", "an", "object"],
        "tags": [f"t{i}" for i in range(33)],
        "colour": "red",
    }
    error = assert_error(client.post("/devices", json=body, headers=tenant.admin), 400, "validation_error")
    assert set(error["details"]) == {"id", "name", "type", "manufacturer", "location", "metadata", "tags", "colour"}
    assert error["details"]["colour"] == "unknown field"

    cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "t"}, "name"),
        ({"name": "n"}, "type"),
        ({"name": "", "type": "t"}, "name"),
        ({"id": "x" * 65, "name": "n", "type": "t"}, "id"),
        ({"name": "n", "type": "t" * 65}, "type"),
        ({"name": "n", "type": "t", "tags": ["x" * 65]}, "tags"),
        ({"name": "n", "type": "t", "tags": [1]}, "tags"),
        ({"name": "n", "type": "t", "metadata": {"blob": "x" * 8200}}, "metadata"),
        ({"name": "n", "type": "t", "location": {"note": "x" * 1100}}, "location"),
        ({"name": "n", "type": "t", "location": 12}, "location"),
    ]
    for case, field in cases:
        error = assert_error(client.post("/devices", json=case, headers=tenant.admin), 400, "validation_error")
        assert list(error["details"]) == [field], case
    assert client.get("/devices", headers=tenant.admin).json()["meta"]["total"] == 0
    # The limits themselves are allowed.
    create(client, tenant, id="x" * 64, name="n" * 128, type="t" * 64, tags=[f"{i:064d}" for i in range(32)])
    create(client, tenant, name="n", type="t", metadata={"blob": "x" * 8000}, location="l" * 256)


def test_create_refuses_bad_bodies(client: HubClient) -> None:
    tenant = client.new_tenant()
    headers = {**tenant.admin, "content-type": "application/json"}
    assert_error(client.post("/devices", content=b"{nope", headers=headers), 400, "invalid_json")
    assert_error(client.post("/devices", content=b"[1]", headers=headers), 400, "validation_error")
    plain = {**tenant.admin, "content-type": "text/plain"}
    assert_error(client.post("/devices", content=b"name=x", headers=plain), 415, "unsupported_media_type")
    huge = orjson.dumps({"name": "n", "type": "t", "metadata": {"blob": "x" * 70_000}})
    assert_error(client.post("/devices", content=huge, headers=headers), 413, "payload_too_large")
    assert client.get("/devices", headers=tenant.admin).json()["meta"]["total"] == 0


def test_roles_and_credentials(client: HubClient) -> None:
    tenant = client.new_tenant()
    device = create(client, tenant, id="d1", name="D", type="t")
    viewer = bearer(client.new_user(tenant, "viewer"))
    operator = bearer(client.new_api_key(tenant, "operator"))
    device_key = bearer(key_for(client, tenant, "d1"))

    assert client.get("/devices", headers=viewer).json()["data"] == [device]
    assert client.get("/devices/d1", headers=viewer).status_code == 200
    for method, path, body in [
        ("POST", "/devices", {"name": "v", "type": "t"}),
        ("PATCH", "/devices/d1", {"name": "v"}),
        ("PUT", "/devices/d1", {"name": "v"}),
        ("DELETE", "/devices/d1", None),
        ("POST", "/devices/d1/keys", None),
    ]:
        response = client.http.request(method, "/api/v1" + path, json=body, headers=viewer)
        assert_error(response, 403, "forbidden")
        response = client.http.request(method, "/api/v1" + path, json=body, headers={})
        assert_error(response, 401, "unauthenticated")
    # A device key reaches no registry endpoint, not even its own device.
    assert_error(client.get("/devices", headers=device_key), 403, "forbidden")
    assert_error(client.get("/devices/d1", headers=device_key), 403, "forbidden")
    assert_error(client.patch("/devices/d1", json={"name": "x"}, headers=device_key), 403, "forbidden")
    assert_error(client.post("/devices/d1/keys", headers=device_key), 403, "forbidden")
    assert client.get("/devices/d1", headers=tenant.admin).json() == device

    made = client.post("/devices", json={"name": "by operator", "type": "t"}, headers=operator)
    assert made.status_code == 201
    assert client.patch("/devices/d1", json={"name": "renamed"}, headers=operator).json()["name"] == "renamed"


def test_list_filters_paginate_and_count_what_matches(client: HubClient, sync_redis: redis.Redis) -> None:
    tenant = client.new_tenant()
    specs = [
        ("zeta", "Zeta Boiler", "boiler"),
        ("alpha", "Alpha pump", "pump"),
        ("mid", "Basement BOILER", "boiler"),
        ("beta", "Roof sensor", "sensor"),
        ("omega", "Garage boiler", "boiler"),
    ]
    for device_id, name, device_type in specs:
        create(client, tenant, id=device_id, name=name, type=device_type)
    # Presence (hub/presence.py) marks devices online in their state hash.
    for device_id in ("mid", "beta"):
        sync_redis.hset(
            stream_keys.device_state(tenant.org_id, device_id),
            mapping={"status": "online", "last_seen": "1700000000000"},
        )

    def listing(query: str) -> Any:
        response = client.get(f"/devices?{query}", headers=tenant.admin)
        assert response.status_code == 200, response.text
        return response

    everything = listing("")
    assert ids(everything) == ["zeta", "alpha", "mid", "beta", "omega"]  # creation order, not id order
    assert everything.json()["meta"] == {"total": 5, "limit": 50, "offset": 0}
    page = listing("limit=2&offset=1")
    assert ids(page) == ["alpha", "mid"]
    assert page.json()["meta"] == {"total": 5, "limit": 2, "offset": 1}
    assert ids(listing("offset=5")) == []

    assert ids(listing("status=online")) == ["mid", "beta"]
    online = client.get("/devices/mid", headers=tenant.admin).json()
    assert online["status"] == "online"
    assert online["last_seen"] == "2023-11-14T22:13:20.000Z"
    assert ids(listing("status=offline")) == ["zeta", "alpha", "omega"]
    assert ids(listing("type=boiler")) == ["zeta", "mid", "omega"]
    assert ids(listing("q=boiler")) == ["zeta", "mid", "omega"]
    assert ids(listing("q=ROOF")) == ["beta"]
    assert ids(listing("type=boiler&status=offline&q=o")) == ["zeta", "omega"]
    assert listing("type=nothing").json()["meta"]["total"] == 0

    filtered = listing("type=boiler&limit=1&offset=1")
    assert ids(filtered) == ["mid"]
    assert filtered.json()["meta"] == {"total": 3, "limit": 1, "offset": 1}
    scanned = listing("q=boiler&limit=2&offset=2")
    assert ids(scanned) == ["omega"]
    assert scanned.json()["meta"] == {"total": 3, "limit": 2, "offset": 2}


def test_list_validates_its_query(client: HubClient) -> None:
    tenant = client.new_tenant()
    response = client.get(
        "/devices?status=sleeping&type=a%20b&limit=101&offset=-1&q=" + "x" * 129, headers=tenant.admin
    )
    error = assert_error(response, 400, "validation_error")
    assert set(error["details"]) == {"status", "type", "limit", "offset", "q"}
    assert_error(client.get("/devices?limit=0", headers=tenant.admin), 400, "validation_error")
    assert client.get("/devices?limit=100", headers=tenant.admin).status_code == 200


def test_patch_changes_only_the_fields_sent(client: HubClient) -> None:
    tenant = client.new_tenant()
    before = create(
        client, tenant, id="d1", name="Boiler", type="boiler", manufacturer="Acme", tags=["a"], metadata={"k": 1}
    )
    time.sleep(0.01)
    response = client.patch("/devices/d1", json={"name": "Boiler 2", "tags": ["b", "c"]}, headers=tenant.admin)
    assert response.status_code == 200, response.text
    after = response.json()
    assert after["name"] == "Boiler 2"
    assert after["tags"] == ["b", "c"]
    assert after["updated_at"] > before["updated_at"]
    unchanged = {k: v for k, v in before.items() if k not in ("name", "tags", "updated_at")}
    assert {k: after[k] for k in unchanged} == unchanged
    assert client.get("/devices/d1", headers=tenant.admin).json() == after


def test_put_is_a_partial_synonym_of_patch(client: HubClient) -> None:
    tenant = client.new_tenant()
    create(client, tenant, id="d1", name="Boiler", type="boiler", model="B-7")
    response = client.put("/devices/d1", json={"location": "Roof"}, headers=tenant.admin)
    assert response.status_code == 200, response.text
    device = response.json()
    assert (device["name"], device["model"], device["location"]) == ("Boiler", "B-7", "Roof")


def test_null_clears_optional_fields_but_not_name_or_type(client: HubClient) -> None:
    tenant = client.new_tenant()
    create(
        client,
        tenant,
        id="d1",
        name="Boiler",
        type="boiler",
        manufacturer="Acme",
        model="B-7",
        location={"lat": 1},
        metadata={"k": 1},
        tags=["a"],
    )
    cleared = {"manufacturer": None, "model": None, "location": None, "metadata": None, "tags": None}
    device = client.patch("/devices/d1", json=cleared, headers=tenant.admin).json()
    assert {k: device[k] for k in cleared} == {
        "manufacturer": None,
        "model": None,
        "location": None,
        "metadata": {},
        "tags": [],
    }
    error = assert_error(
        client.patch("/devices/d1", json={"name": None, "type": None}, headers=tenant.admin), 400, "validation_error"
    )
    assert error["details"] == {"name": "cannot be null", "type": "cannot be null"}


def test_patch_validates_and_keeps_the_id(client: HubClient) -> None:
    tenant = client.new_tenant()
    device = create(client, tenant, id="d1", name="Boiler", type="boiler")
    error = assert_error(client.patch("/devices/d1", json={"id": "d2"}, headers=tenant.admin), 400, "validation_error")
    assert list(error["details"]) == ["id"]
    bad = {"name": "", "type": "no spaces", "metadata": 3, "serial": "x"}
    error = assert_error(client.put("/devices/d1", json=bad, headers=tenant.admin), 400, "validation_error")
    assert set(error["details"]) == {"name", "type", "metadata", "serial"}
    assert client.get("/devices/d1", headers=tenant.admin).json() == device
    # The unchanged id may be sent back.
    assert client.patch("/devices/d1", json={"id": "d1", "name": "ok"}, headers=tenant.admin).json()["id"] == "d1"
    assert_error(client.patch("/devices/nope", json={"name": "x"}, headers=tenant.admin), 404, "not_found")
    plain = {**tenant.admin, "content-type": "text/plain"}
    assert_error(client.patch("/devices/d1", content=b"x", headers=plain), 415, "unsupported_media_type")


def test_changing_the_type_moves_the_device_between_type_filters(client: HubClient) -> None:
    tenant = client.new_tenant()
    create(client, tenant, id="d1", name="One", type="boiler")
    create(client, tenant, id="d2", name="Two", type="boiler")
    client.patch("/devices/d1", json={"type": "pump"}, headers=tenant.admin)
    assert ids(client.get("/devices?type=boiler", headers=tenant.admin)) == ["d2"]
    assert ids(client.get("/devices?type=pump", headers=tenant.admin)) == ["d1"]
    assert ids(client.get("/devices", headers=tenant.admin)) == ["d1", "d2"]


def test_delete_removes_the_device_everywhere_and_revokes_its_key(client: HubClient, sync_redis: redis.Redis) -> None:
    tenant = client.new_tenant()
    create(client, tenant, id="d1", name="One", type="boiler")
    create(client, tenant, id="d2", name="Two", type="boiler")
    device_key = key_for(client, tenant, "d1")
    assert client.get("/auth/me", headers=bearer(device_key)).json()["id"] == "d1"
    control = sync_redis.pubsub(ignore_subscribe_messages=True)
    control.subscribe(keys.CONTROL_CHANNEL)
    try:
        assert client.delete("/devices/d1", headers=tenant.admin).status_code == 204
        message = next_message(control)
    finally:
        control.close()
    assert message is not None
    assert orjson.loads(message["data"]) == {"type": "device_key_revoked", "org_id": tenant.org_id, "device_id": "d1"}

    assert_error(client.get("/auth/me", headers=bearer(device_key)), 401, "unauthenticated")
    assert_error(client.get("/devices/d1", headers=tenant.admin), 404, "not_found")
    assert_error(client.delete("/devices/d1", headers=tenant.admin), 404, "not_found")
    assert_error(client.post("/devices/d1/keys", headers=tenant.admin), 404, "not_found")
    for query in ("", "?type=boiler", "?q=O", "?status=offline"):
        listed = client.get(f"/devices{query}", headers=tenant.admin).json()
        assert [d["id"] for d in listed["data"]] == ["d2"], query
        assert listed["meta"]["total"] == 1
    assert not sync_redis.exists(keys.device(tenant.org_id, "d1"))
    assert not sync_redis.keys("th:devkey:*")
    # The id is free again; the old key stays dead.
    create(client, tenant, id="d1", name="Reborn", type="pump")
    assert_error(client.get("/auth/me", headers=bearer(device_key)), 401, "unauthenticated")


def test_key_rotation_kills_the_old_key_at_once(client: HubClient, sync_redis: redis.Redis) -> None:
    tenant = client.new_tenant()
    create(client, tenant, id="d1", name="One", type="boiler")
    first = key_for(client, tenant, "d1")
    assert first.startswith("dk_")
    me = client.get("/auth/me", headers=bearer(first)).json()
    assert me == {"kind": "device", "id": "d1", "org_id": tenant.org_id, "role": "device"}
    control = sync_redis.pubsub(ignore_subscribe_messages=True)
    control.subscribe(keys.CONTROL_CHANNEL)
    try:
        second = key_for(client, tenant, "d1")
        message = next_message(control)
    finally:
        control.close()
    assert message is not None and orjson.loads(message["data"])["device_id"] == "d1"
    assert second != first
    assert_error(client.get("/auth/me", headers=bearer(first)), 401, "unauthenticated")
    assert client.get("/auth/me", headers=bearer(second)).json() == me
    assert first not in str(sync_redis.hgetall(keys.device(tenant.org_id, "d1")))
    assert_error(client.post("/devices/ghost/keys", headers=tenant.admin), 404, "not_found")
    assert not sync_redis.exists(keys.device(tenant.org_id, "ghost"))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/devices/shared", None),
        ("PATCH", "/devices/shared", {"name": "taken over"}),
        ("PUT", "/devices/shared", {"name": "taken over"}),
        ("POST", "/devices/shared/keys", None),
        ("DELETE", "/devices/shared", None),
    ],
)
def test_another_orgs_device_is_404_and_untouched(
    client: HubClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    a = client.new_tenant("a")
    b = client.new_tenant("b")
    device = create(client, a, id="shared", name="A's", type="boiler")
    device_key = key_for(client, a, "shared")
    response = client.http.request(method, "/api/v1" + path, json=body, headers=b.admin)
    assert_error(response, 404, "not_found")
    assert client.get("/devices/shared", headers=a.admin).json() == device
    assert client.get("/auth/me", headers=bearer(device_key)).json()["org_id"] == a.org_id
    assert client.get("/devices", headers=b.admin).json()["meta"]["total"] == 0
    assert client.get("/devices?type=boiler&q=a", headers=b.admin).json()["data"] == []
