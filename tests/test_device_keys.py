"""The device hash decides which key is live; a stale index entry (a raced rotation or delete) grants nothing."""

from __future__ import annotations

from hub import keys
from hub.auth.secrets import key_digest
from tests.support import HubClient, assert_error, bearer


def test_a_stale_index_entry_for_a_rotated_key_is_refused(client: HubClient) -> None:
    tenant = client.new_tenant()
    client.post("/devices", json={"id": "d1", "name": "d", "type": "t"}, headers=tenant.admin)
    old = client.post("/devices/d1/keys", headers=tenant.admin).json()["device_key"]
    new = client.post("/devices/d1/keys", headers=tenant.admin).json()["device_key"]
    # Put the old key's index entry back, as a rotation racing another could leave it.
    index = keys.device_key_by_digest(key_digest(old))
    client.call(client.services.redis.hset, index, mapping={"org_id": tenant.org_id, "device_id": "d1"})
    assert_error(client.get("/auth/me", headers=bearer(old)), 401, "unauthenticated")
    assert client.get("/auth/me", headers=bearer(new)).status_code == 200


def test_a_deleted_devices_key_is_refused_even_if_its_index_entry_survives(client: HubClient) -> None:
    tenant = client.new_tenant()
    client.post("/devices", json={"id": "d1", "name": "d", "type": "t"}, headers=tenant.admin)
    key = client.post("/devices/d1/keys", headers=tenant.admin).json()["device_key"]
    assert client.delete("/devices/d1", headers=tenant.admin).status_code == 204
    index = keys.device_key_by_digest(key_digest(key))
    client.call(client.services.redis.hset, index, mapping={"org_id": tenant.org_id, "device_id": "d1"})
    assert_error(client.get("/auth/me", headers=bearer(key)), 401, "unauthenticated")
    # Rotating a deleted device's key is a 404 and leaves no half-made device behind.
    assert_error(client.post("/devices/d1/keys", headers=tenant.admin), 404, "not_found")
    assert not client.call(client.services.redis.exists, keys.device(tenant.org_id, "d1"))


def test_a_key_revoke_announces_the_close_to_every_process(client: HubClient) -> None:
    tenant = client.new_tenant()
    client.post("/devices", json={"id": "d1", "name": "d", "type": "t"}, headers=tenant.admin)
    client.post("/devices/d1/keys", headers=tenant.admin)

    async def rotate_and_listen() -> list[bytes]:
        pubsub = client.services.redis.pubsub()
        await pubsub.subscribe(keys.CONTROL_CHANNEL)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        await client.services.devices.rotate_key(tenant.org_id, "d1")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        await pubsub.aclose()
        return [message["data"]] if message else []

    messages = client.call(rotate_and_listen)
    assert len(messages) == 1
    assert '"device_key_revoked"' in messages[0] and '"d1"' in messages[0]
