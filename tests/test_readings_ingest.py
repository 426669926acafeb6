"""POST /devices/{id}/readings: JSON and MessagePack through the ingest batch, stored before the 202."""

from __future__ import annotations

import time

import msgpack
import orjson

from ingest import stream_keys
from tests.support import HubClient, Tenant, assert_error, bearer

NOW_MS = int(time.time() * 1000)


def make_device(client: HubClient, tenant: Tenant, device_id: str = "pump-1") -> str:
    client.post("/devices", json={"id": device_id, "name": device_id, "type": "pump"}, headers=tenant.admin)
    key: str = client.post(f"/devices/{device_id}/keys", headers=tenant.admin).json()["device_key"]
    return key


def stored(client: HubClient, tenant: Tenant, device_id: str = "pump-1") -> list[dict[bytes, bytes]]:
    frames_redis = client.http.app.state.device_ingest.frames_redis  # type: ignore[attr-defined]
    entries = client.call(frames_redis.xrange, stream_keys.device_frames(tenant.org_id, device_id))
    return [fields for _, fields in entries]


def test_json_and_msgpack_readings_are_stored_before_the_202(client: HubClient) -> None:
    tenant = client.new_tenant()
    key = make_device(client, tenant)
    json_body = {"ts": NOW_MS, "metrics": {"flow": 3.5, "on": True}}
    response = client.post("/devices/pump-1/readings", json=json_body, headers=bearer(key))
    assert response.status_code == 202 and response.json() == {"accepted": 2}
    packed = msgpack.packb({"points": [{"ts": NOW_MS + i, "metrics": {"flow": float(i)}} for i in range(5)]})
    response = client.post(
        "/devices/pump-1/readings", content=packed, headers={**bearer(key), "content-type": "application/msgpack"}
    )
    assert response.status_code == 202 and response.json() == {"accepted": 5}
    frames = stored(client, tenant)
    assert [f[b"k"] for f in frames] == [b"readings", b"readings"]
    assert orjson.loads(frames[0][b"f"]) == json_body and frames[0][b"b"] == b"0"
    assert frames[1][b"f"] == packed and frames[1][b"b"] == b"1"
    telemetry = client.call(
        client.services.redis.xlen, stream_keys.org_telemetry(tenant.org_id, stream_keys.partition_of("pump-1"))
    )
    assert telemetry == 2


def test_operators_may_post_for_any_device_of_their_org_viewers_may_not(client: HubClient) -> None:
    tenant = client.new_tenant()
    make_device(client, tenant)
    operator = client.new_user(tenant, "operator")
    viewer = client.new_user(tenant, "viewer")
    body = {"metrics": {"flow": 1}}
    assert client.post("/devices/pump-1/readings", json=body, headers=bearer(operator)).status_code == 202
    assert_error(client.post("/devices/pump-1/readings", json=body, headers=bearer(viewer)), 403, "forbidden")
    assert_error(client.post("/devices/nope/readings", json=body, headers=bearer(operator)), 404, "not_found")


def test_a_device_key_only_posts_for_its_own_device(client: HubClient) -> None:
    tenant = client.new_tenant()
    key = make_device(client, tenant, "pump-1")
    make_device(client, tenant, "pump-2")
    other = client.post("/devices/pump-2/readings", json={"metrics": {"x": 1}}, headers=bearer(key))
    assert_error(other, 404, "not_found")
    assert stored(client, tenant, "pump-2") == []


def test_other_tenants_device_is_404(client: HubClient) -> None:
    mine = client.new_tenant("mine")
    theirs = client.new_tenant("theirs")
    make_device(client, theirs)
    response = client.post("/devices/pump-1/readings", json={"metrics": {"x": 1}}, headers=mine.admin)
    assert_error(response, 404, "not_found")
    assert stored(client, theirs) == []


def test_bad_bodies_get_the_codecs_error_and_store_nothing(client: HubClient) -> None:
    tenant = client.new_tenant()
    key = make_device(client, tenant)
    cases = [
        ({"metrics": {"bad name": 1}}, "invalid_metric_name"),
        ({"metrics": {"x": "hot"}}, "invalid_value"),
        ({"type": "telemetry", "metrics": {"x": 1}}, "invalid_frame"),
        ({"seq": 4, "metrics": {"x": 1}}, "invalid_frame"),
        ({"ts": 5, "metrics": {"x": 1}}, "invalid_timestamp"),
        ({}, "invalid_frame"),
    ]
    for body, code in cases:
        assert_error(client.post("/devices/pump-1/readings", json=body, headers=bearer(key)), 400, code)
    garbage = {**bearer(key), "content-type": "application/msgpack"}
    assert_error(client.post("/devices/pump-1/readings", content=b"\xc1", headers=garbage), 400, "invalid_encoding")
    plain = {**bearer(key), "content-type": "text/plain"}
    assert_error(client.post("/devices/pump-1/readings", content=b"x", headers=plain), 415, "unsupported_media_type")
    assert stored(client, tenant) == []
