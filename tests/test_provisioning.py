"""Registration tokens and POST /devices/provision: single use, expiry, and the race for one token."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from hub import keys
from hub.app import create_app
from hub.auth.secrets import key_digest
from hub.config import HubConfig
from hub.errors import Gone, TelehubError
from tests.conftest import TIMEOUT
from tests.support import HubClient, Tenant, assert_error, bearer

ISO_Z = "%Y-%m-%dT%H:%M:%S.%fZ"


def new_token(client: HubClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    response = client.post("/devices/registration/tokens", json={"device_name": "Sensor", **body}, headers=tenant.admin)
    assert response.status_code == 201, response.text
    token: dict[str, Any] = response.json()
    return token


def warm_redis_pool(client: HubClient, connections: int) -> None:
    """Open this many pooled connections, so that racers' Redis calls really overlap instead of queueing."""

    async def ping_all() -> None:
        await asyncio.gather(*(client.services.redis.ping() for _ in range(connections)))

    client.call(ping_all)


def test_a_token_provisions_one_device_once(client: HubClient, sync_redis: redis.Redis) -> None:
    tenant = client.new_tenant()
    token = new_token(client, tenant, device_name="Roof sensor", type="sensor")
    assert set(token) == {"token", "device_id", "device_name", "provision_endpoint", "expires_at"}
    assert token["token"].startswith("rtk_") and len(token["token"]) >= 4 + 43
    assert token["device_id"].startswith("dev_")
    assert token["device_name"] == "Roof sensor"
    assert token["provision_endpoint"] == "http://testserver/api/v1/devices/provision"
    expires_at = datetime.strptime(token["expires_at"], ISO_Z).timestamp()
    assert abs(expires_at - (time.time() + 86_400)) < 60 * TIMEOUT
    # Only the digest is kept.
    stored = sync_redis.hgetall(keys.registration_token(key_digest(token["token"])))
    assert stored["org_id"] == tenant.org_id and stored["used"] == "0"
    assert token["token"] not in str(sync_redis.keys("*")) + str(stored)
    # Not a device yet.
    assert_error(client.get(f"/devices/{token['device_id']}", headers=tenant.admin), 404, "not_found")

    response = client.post("/devices/provision", json={"token": token["token"]})
    assert response.status_code == 201, response.text
    provisioned = response.json()
    assert provisioned["device_id"] == token["device_id"]
    assert provisioned["device_key"].startswith("dk_")
    assert provisioned["ws_url"] == "ws://testserver/api/v1/ws/device"
    device = client.get(f"/devices/{token['device_id']}", headers=tenant.admin).json()
    assert (device["name"], device["type"], device["status"]) == ("Roof sensor", "sensor", "offline")
    me = client.get("/auth/me", headers=bearer(provisioned["device_key"])).json()
    assert me == {"kind": "device", "id": token["device_id"], "org_id": tenant.org_id, "role": "device"}

    assert_error(client.post("/devices/provision", json={"token": token["token"]}), 410, "token_used")
    assert client.get("/devices", headers=tenant.admin).json()["meta"]["total"] == 1
    # The first key still works: a spent token cannot rotate it.
    assert client.get("/auth/me", headers=bearer(provisioned["device_key"])).status_code == 200


def test_a_token_without_a_type_makes_a_generic_device(client: HubClient) -> None:
    tenant = client.new_tenant()
    token = new_token(client, tenant)
    provisioned = client.post("/devices/provision", json={"token": token["token"]}).json()
    assert client.get(f"/devices/{provisioned['device_id']}", headers=tenant.admin).json()["type"] == "generic"


def test_an_expired_token_is_410_until_its_record_is_gone(client: HubClient, sync_redis: redis.Redis) -> None:
    tenant = client.new_tenant()
    token = new_token(client, tenant, expires_in=60)
    expires_at = datetime.strptime(token["expires_at"], ISO_Z).timestamp()
    assert abs(expires_at - (time.time() + 60)) < 30 * TIMEOUT
    key = keys.registration_token(key_digest(token["token"]))
    # Kept a week past expiry, so late devices hear 410 rather than 404.
    assert 60 + 7 * 86_400 - 60 <= sync_redis.ttl(key) <= 60 + 7 * 86_400
    sync_redis.hset(key, "expires_at", str(int(time.time() * 1000) - 1))
    assert_error(client.post("/devices/provision", json={"token": token["token"]}), 410, "token_expired")
    assert_error(client.get(f"/devices/{token['device_id']}", headers=tenant.admin), 404, "not_found")
    sync_redis.delete(key)
    assert_error(client.post("/devices/provision", json={"token": token["token"]}), 404, "not_found")


def test_provision_errors(client: HubClient) -> None:
    assert_error(client.post("/devices/provision", json={"token": "rtk_unknown"}), 404, "not_found")
    error = assert_error(client.post("/devices/provision", json={"tok": "x"}), 400, "validation_error")
    assert error["details"] == {"tok": "unknown field", "token": "is required"}
    plain = {"content-type": "text/plain"}
    assert_error(client.post("/devices/provision", content=b"x", headers=plain), 415, "unsupported_media_type")
    # No credential is needed, and a bad one is ignored.
    tenant = client.new_tenant()
    token = new_token(client, tenant)
    response = client.post("/devices/provision", json={"token": token["token"]}, headers=bearer("dk_bogus"))
    assert response.status_code == 201, response.text


def test_token_creation_validates_and_needs_an_operator(client: HubClient) -> None:
    tenant = client.new_tenant()
    path = "/devices/registration/tokens"
    for body, field in [
        ({}, "device_name"),
        ({"device_name": "x" * 129}, "device_name"),
        ({"device_name": "x", "type": "a b"}, "type"),
        ({"device_name": "x", "expires_in": 59}, "expires_in"),
        ({"device_name": "x", "expires_in": 2_592_001}, "expires_in"),
        ({"device_name": "x", "expires_in": "60"}, "expires_in"),
        ({"device_name": "x", "owner": "me"}, "owner"),
    ]:
        error = assert_error(client.post(path, json=body, headers=tenant.admin), 400, "validation_error")
        assert list(error["details"]) == [field], body
    longest = new_token(client, tenant, expires_in=2_592_000)
    assert datetime.strptime(longest["expires_at"], ISO_Z).timestamp() > time.time() + 2_591_000

    viewer = bearer(client.new_user(tenant, "viewer"))
    assert_error(client.post(path, json={"device_name": "x"}, headers=viewer), 403, "forbidden")
    assert_error(client.post(path, json={"device_name": "x"}), 401, "unauthenticated")
    device_key = client.post("/devices/provision", json={"token": longest["token"]}).json()["device_key"]
    assert_error(client.post(path, json={"device_name": "x"}, headers=bearer(device_key)), 403, "forbidden")
    operator = bearer(client.new_api_key(tenant, "operator"))
    assert client.post(path, json={"device_name": "x"}, headers=operator).status_code == 201


def test_a_token_provisions_into_its_own_org_only(client: HubClient) -> None:
    a = client.new_tenant("a")
    b = client.new_tenant("b")
    token = new_token(client, a)
    provisioned = client.post("/devices/provision", json={"token": token["token"]}).json()
    assert_error(client.get(f"/devices/{provisioned['device_id']}", headers=b.admin), 404, "not_found")
    assert client.get("/devices", headers=b.admin).json()["meta"]["total"] == 0
    assert client.get("/devices", headers=a.admin).json()["meta"]["total"] == 1


def test_concurrent_provisions_over_http_let_exactly_one_through(client: HubClient) -> None:
    tenant = client.new_tenant()
    token = new_token(client, tenant)["token"]
    racers = 8
    start = threading.Barrier(racers)
    warm_redis_pool(client, racers * 2)

    def provision(_: int) -> Any:
        start.wait(timeout=10 * TIMEOUT)
        return client.post("/devices/provision", json={"token": token})

    with ThreadPoolExecutor(racers) as pool:
        responses = list(pool.map(provision, range(racers)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [410] * (racers - 1), [r.text for r in responses]
    for response in responses:
        if response.status_code == 410:
            assert_error(response, 410, "token_used")
    assert client.get("/devices", headers=tenant.admin).json()["meta"]["total"] == 1


def test_concurrent_claims_on_one_event_loop_let_exactly_one_through(client: HubClient) -> None:
    tenant = client.new_tenant()
    token = new_token(client, tenant)["token"]
    provisioning = client.services.provisioning

    async def race() -> list[Any]:
        return await asyncio.gather(*(provisioning.provision(token) for _ in range(16)), return_exceptions=True)

    warm_redis_pool(client, 16)
    outcomes = client.call(race)
    winners = [o for o in outcomes if isinstance(o, dict)]
    losers = [o for o in outcomes if isinstance(o, TelehubError)]
    assert len(winners) == 1 and len(losers) == 15, outcomes
    assert all(isinstance(o, Gone) and o.code == "token_used" for o in losers)


@pytest.fixture
def public_client(config: HubConfig) -> Iterator[HubClient]:
    app = create_app(config.replace(public_url="https://hub.example.com/"))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield HubClient(test_client)


def test_links_use_the_public_url_when_set(public_client: HubClient) -> None:
    tenant = public_client.new_tenant()
    token = new_token(public_client, tenant)
    assert token["provision_endpoint"] == "https://hub.example.com/api/v1/devices/provision"
    provisioned = public_client.post("/devices/provision", json={"token": token["token"]}).json()
    assert provisioned["ws_url"] == "wss://hub.example.com/api/v1/ws/device"
