"""Idempotency-Key on POST /devices: replay, conflicts, in-progress, failed first attempts, scope and TTL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import redis

from hub.api.idempotency import fingerprint, record_key
from hub.auth.principal import Principal, Role
from tests.conftest import TIMEOUT
from tests.support import HubClient, Tenant, assert_error, bearer

JSON = {"content-type": "application/json"}


def post(client: HubClient, headers: dict[str, str], key: str | None, body: dict[str, Any]) -> Any:
    extra = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/devices", content=orjson.dumps(body), headers={**headers, **JSON, **extra})


def total(client: HubClient, tenant: Tenant) -> int:
    count: int = client.get("/devices", headers=tenant.admin).json()["meta"]["total"]
    return count


def admin_principal(client: HubClient, tenant: Tenant) -> Principal:
    me = client.get("/auth/me", headers=tenant.admin).json()
    return Principal(kind=me["kind"], id=me["id"], org_id=me["org_id"], role=Role(me["role"]))


def test_the_same_key_replays_the_first_reply(client: HubClient) -> None:
    tenant = client.new_tenant()
    body = {"name": "Boiler", "type": "boiler"}
    first = post(client, tenant.admin, "create-boiler-1", body)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = post(client, tenant.admin, "create-boiler-1", body)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == "application/json"
    assert again.json() == first.json()
    assert total(client, tenant) == 1
    # Without a key, or with another one, the request runs again.
    assert post(client, tenant.admin, None, body).status_code == 201
    assert post(client, tenant.admin, "create-boiler-2", body).json()["id"] != first.json()["id"]
    assert total(client, tenant) == 3


def test_the_same_key_with_another_body_is_409(client: HubClient) -> None:
    tenant = client.new_tenant()
    assert post(client, tenant.admin, "k1", {"name": "A", "type": "t"}).status_code == 201
    assert_error(post(client, tenant.admin, "k1", {"name": "B", "type": "t"}), 409, "idempotency_key_reused")
    assert total(client, tenant) == 1


def test_a_failed_first_attempt_is_not_kept(client: HubClient) -> None:
    tenant = client.new_tenant()
    invalid = {"name": "A"}
    assert_error(post(client, tenant.admin, "k1", invalid), 400, "validation_error")
    retried = post(client, tenant.admin, "k1", invalid)
    assert_error(retried, 400, "validation_error")
    assert "idempotent-replayed" not in retried.headers
    assert post(client, tenant.admin, "k1", {"name": "A", "type": "t"}).status_code == 201

    # A conflict is a failure too: once the id is free, the same key and body succeed.
    taken = {"id": "d1", "name": "B", "type": "t"}
    assert post(client, tenant.admin, None, taken).status_code == 201
    assert_error(post(client, tenant.admin, "k2", taken), 409, "device_exists")
    assert client.delete("/devices/d1", headers=tenant.admin).status_code == 204
    assert post(client, tenant.admin, "k2", taken).status_code == 201
    plain = {**tenant.admin, "content-type": "text/plain", "Idempotency-Key": "k3"}
    assert_error(client.post("/devices", content=b"x", headers=plain), 415, "unsupported_media_type")
    assert post(client, tenant.admin, "k3", {"name": "C", "type": "t"}).status_code == 201


def test_a_key_in_progress_is_409_until_released(client: HubClient) -> None:
    tenant = client.new_tenant()
    content = orjson.dumps({"name": "Slow", "type": "t"})
    records = client.services.idempotency
    key = record_key(admin_principal(client, tenant), "slow-1")
    marker = client.call(records.claim, key, fingerprint("POST", "/api/v1/devices", content))
    assert isinstance(marker, str)
    blocked = client.post("/devices", content=content, headers={**tenant.admin, **JSON, "Idempotency-Key": "slow-1"})
    assert_error(blocked, 409, "idempotency_in_progress")
    # A different body under a key in progress is still a reuse.
    assert_error(post(client, tenant.admin, "slow-1", {"name": "Other", "type": "t"}), 409, "idempotency_key_reused")
    assert total(client, tenant) == 0
    client.call(records.release, key, marker)
    done = client.post("/devices", content=content, headers={**tenant.admin, **JSON, "Idempotency-Key": "slow-1"})
    assert done.status_code == 201


def test_concurrent_requests_with_one_key_create_one_device(client: HubClient) -> None:
    tenant = client.new_tenant()
    racers = 6
    start = threading.Barrier(racers)

    def send(_: int) -> Any:
        start.wait(timeout=10 * TIMEOUT)
        return post(client, tenant.admin, "race-1", {"name": "Racer", "type": "t"})

    with ThreadPoolExecutor(racers) as pool:
        responses = list(pool.map(send, range(racers)))
    fresh = [r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers]
    assert len(fresh) == 1
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "idempotency_in_progress")
        else:
            assert response.status_code == 201
            assert response.json() == fresh[0].json()
    assert total(client, tenant) == 1


def test_keys_are_scoped_to_one_credential_and_kept_a_day(client: HubClient, sync_redis: redis.Redis) -> None:
    tenant = client.new_tenant()
    operator = bearer(client.new_api_key(tenant, "operator"))
    body = {"name": "Same", "type": "t"}
    first = post(client, tenant.admin, "shared-key", body).json()
    other = post(client, operator, "shared-key", body)
    assert other.status_code == 201 and "idempotent-replayed" not in other.headers
    assert other.json()["id"] != first["id"]
    stored = record_key(admin_principal(client, tenant), "shared-key")
    assert stored.startswith(f"th:{{{tenant.org_id}}}:")
    assert "shared-key" not in stored
    assert 86_400 - 60 <= sync_redis.ttl(stored) <= 86_400
    # Another organization's admin never sees the reply.
    b = client.new_tenant("b")
    assert post(client, b.admin, "shared-key", body).headers.get("idempotent-replayed") is None


def test_idempotency_key_must_be_printable_ascii_up_to_255(client: HubClient) -> None:
    tenant = client.new_tenant()
    body = {"name": "K", "type": "t"}
    for bad in ("", "x" * 256):
        error = assert_error(post(client, tenant.admin, bad, body), 400, "validation_error")
        assert list(error["details"]) == ["Idempotency-Key"]
    assert total(client, tenant) == 0
    assert post(client, tenant.admin, "~" * 255, body).status_code == 201
    assert post(client, tenant.admin, "with spaces and {braces}: ok", body).status_code == 201


def test_roles_are_checked_before_the_key_is_taken(client: HubClient) -> None:
    tenant = client.new_tenant()
    viewer = bearer(client.new_user(tenant, "viewer"))
    body = {"name": "V", "type": "t"}
    assert_error(post(client, viewer, "v1", body), 403, "forbidden")
    assert_error(post(client, {}, "v1", body), 401, "unauthenticated")
    assert post(client, tenant.admin, "v1", body).status_code == 201
