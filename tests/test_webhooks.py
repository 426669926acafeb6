"""Webhooks in-process against a real local HTTP receiver: signatures as a receiver checks them, events from
presence, commands and telemetry, retries after 500s and timeouts, coalescing, SSRF refusals, a slow endpoint
that delays no other, tenant isolation and validation."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from hub.app import create_app
from hub.config import HubConfig
from tests.conftest import TIMEOUT
from tests.support import HubClient, Tenant, assert_error, bearer
from tests.test_commands import result, send_command, wait_for_status
from tests.test_device_gateway import connect, device_key, receive
from tests.test_openapi import check_reply, fetch_document
from tests.webhook_receiver import WAIT, Receiver, Reply, receiving, verify_signature

SECRET = "whsec_test-secret-of-the-receiver"
TIMEOUT_MS = int(1000 * TIMEOUT)


def hub_config(config: HubConfig, **changes: Any) -> HubConfig:
    settings: dict[str, Any] = {
        "webhook_allow_private": True,
        "webhook_backoff": "1s,1s,1s",
        "webhook_timeout_ms": TIMEOUT_MS,
        **changes,
    }
    return config.replace(**settings)


@pytest.fixture
def hub(config: HubConfig) -> Iterator[HubClient]:
    """The app with receivers on 127.0.0.1 allowed and retries 1 s apart."""
    with TestClient(create_app(hub_config(config)), raise_server_exceptions=False) as test_client:
        yield HubClient(test_client)


@pytest.fixture
def guarded(config: HubConfig) -> Iterator[HubClient]:
    """The app with the SSRF guard on, as by default."""
    with TestClient(create_app(hub_config(config, webhook_allow_private=False)), raise_server_exceptions=False) as tc:
        yield HubClient(tc)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as server:
        yield server


def create(client: HubClient, tenant: Tenant, url: str, events: list[str], **body: Any) -> dict[str, Any]:
    response = client.post("/webhooks", json={"url": url, "events": events, **body}, headers=tenant.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def deliveries(client: HubClient, tenant: Tenant, webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/webhooks/{webhook_id}/deliveries", headers=tenant.admin)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


def wait_for_log(client: HubClient, tenant: Tenant, webhook_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT
    while len(found := deliveries(client, tenant, webhook_id)) < count:
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    return found


def post_reading(client: HubClient, tenant: Tenant, device_id: str, **metrics: float) -> None:
    response = client.post(
        f"/devices/{device_id}/readings", json={"metrics": metrics or {"t": 1.0}}, headers=tenant.admin
    )
    assert response.status_code == 202, response.text


def new_device(client: HubClient, tenant: Tenant, device_id: str) -> None:
    response = client.post("/devices", json={"id": device_id, "name": device_id, "type": "pump"}, headers=tenant.admin)
    assert response.status_code == 201, response.text


# Signatures and events.


def test_device_online_and_offline_are_delivered_signed(hub: HubClient, receiver: Receiver) -> None:
    tenant = hub.new_tenant()
    created = create(hub, tenant, receiver.url(), ["device.online", "device.offline"], secret=SECRET)
    assert created["secret"] == SECRET and created["id"].startswith("whk_")
    listed = hub.get("/webhooks", headers=tenant.admin).json()
    assert listed["data"] == [{k: created[k] for k in ("id", "url", "events", "created_at")}]
    key = device_key(hub, tenant)
    with connect(hub, key) as ws:
        assert receive(ws)["type"] == "hello"
        (online,) = receiver.wait_for(1)
    (_, offline) = receiver.wait_for(2)
    for request, kind in ((online, "device.online"), (offline, "device.offline")):
        body = request.json
        assert body["type"] == kind and body["org_id"] == tenant.org_id and body["id"].startswith("evt_")
        assert body["data"]["device_id"] == "boiler-7" and body["created_at"].endswith("Z")
        assert request.headers["telehub-event"] == kind
        assert request.headers["telehub-delivery"].startswith("dlv_")
        assert request.headers["content-type"] == "application/json"
        signature = request.headers["telehub-signature"]
        assert verify_signature(signature, SECRET, request.body)
        # What a receiver refuses: another secret, a changed body, an old timestamp (a replay).
        assert not verify_signature(signature, "whsec_someone-else", request.body)
        assert not verify_signature(signature, SECRET, request.body.replace(b"boiler-7", b"boiler-8"))
        assert not verify_signature(signature, SECRET, request.body, now=time.time() + 600)
    log = wait_for_log(hub, tenant, created["id"], 2)
    assert [(a["type"], a["attempt"], a["status_code"], a["outcome"]) for a in log] == [
        ("device.offline", 1, 200, "delivered"),
        ("device.online", 1, 200, "delivered"),
    ]


def test_a_generated_secret_is_shown_once(hub: HubClient, receiver: Receiver) -> None:
    tenant = hub.new_tenant()
    created = create(hub, tenant, receiver.url(), ["device.online"])
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 30
    assert "secret" not in hub.get("/webhooks", headers=tenant.admin).json()["data"][0]
    key = device_key(hub, tenant)
    with connect(hub, key) as ws:
        receive(ws)
        (request,) = receiver.wait_for(1)
    assert verify_signature(request.headers["telehub-signature"], created["secret"], request.body)


def test_a_completed_command_is_delivered(hub: HubClient, receiver: Receiver) -> None:
    tenant = hub.new_tenant()
    create(hub, tenant, receiver.url(), ["command.completed", "command.failed"], secret=SECRET)
    key = device_key(hub, tenant)
    with connect(hub, key) as ws:
        receive(ws)
        command_id = send_command(hub, tenant)
        assert receive(ws)["command_id"] == command_id
        ws.send_bytes(result(command_id, result={"ok": True}))
        receive(ws)
        wait_for_status(hub, tenant, command_id, "completed")
        (request,) = receiver.wait_for(1)
    body = request.json
    assert body["type"] == "command.completed"
    assert body["data"]["command_id"] == command_id and body["data"]["status"] == "completed"
    assert body["data"]["device_id"] == "boiler-7"
    time.sleep(0.3)
    assert len(receiver.requests()) == 1  # queued and sent are not webhook events


def test_an_alert_triggered_and_resolved_is_delivered(hub: HubClient, receiver: Receiver) -> None:
    tenant = hub.new_tenant()
    create(hub, tenant, receiver.url(), ["alert.triggered", "alert.resolved"], secret=SECRET)
    new_device(hub, tenant, "pump-1")
    rule = {"name": "hot", "metric": "temp", "op": "gt", "threshold": 80, "severity": "critical"}
    made = hub.post("/alert-rules", json=rule, headers=tenant.admin)
    assert made.status_code == 201, made.text
    post_reading(hub, tenant, "pump-1", temp=85.0)
    (triggered,) = receiver.wait_for(1)
    post_reading(hub, tenant, "pump-1", temp=20.0)
    (_, resolved) = receiver.wait_for(2)
    for request, kind in ((triggered, "alert.triggered"), (resolved, "alert.resolved")):
        body = request.json
        assert body["type"] == kind and request.headers["telehub-event"] == kind
        assert verify_signature(request.headers["telehub-signature"], SECRET, request.body)
        data = body["data"]
        assert data["device_id"] == "pump-1" and data["rule_id"] == made.json()["id"] and data["metric"] == "temp"
    assert triggered.json["data"]["value"] == 85.0 and triggered.json["data"]["status"] == "active"
    assert resolved.json["data"]["status"] == "resolved"
    assert resolved.json["data"]["alert_id"] == triggered.json["data"]["alert_id"]


# Retries.


def test_retries_after_500s_until_a_2xx_and_the_log_shows_every_attempt(hub: HubClient, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(500), Reply(503))
    tenant = hub.new_tenant()
    webhook = create(hub, tenant, receiver.url(), ["data.received"], secret=SECRET)
    new_device(hub, tenant, "pump-1")
    post_reading(hub, tenant, "pump-1")
    attempts = receiver.wait_for(3)
    assert len({a.headers["telehub-delivery"] for a in attempts}) == 1
    assert len({a.json["id"] for a in attempts}) == 1
    assert all(verify_signature(a.headers["telehub-signature"], SECRET, a.body) for a in attempts)
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    assert all(gap >= 0.75 for gap in gaps), gaps  # 1 s backoff, ±20% jitter
    log = wait_for_log(hub, tenant, webhook["id"], 3)
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in log] == [
        (3, 200, "delivered"),
        (2, 503, "retrying"),
        (1, 500, "retrying"),
    ]
    assert log[0]["next_retry_at"] is None and log[1]["next_retry_at"] and log[2]["error"] is None
    assert all(a["duration_ms"] >= 0 and a["delivery_id"] == log[0]["delivery_id"] for a in log)
    time.sleep(1.5)
    assert len(receiver.requests()) == 3  # delivered: never again


def test_a_timeout_is_retried(hub: HubClient, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(200, delay_s=3 * TIMEOUT))
    tenant = hub.new_tenant()
    webhook = create(hub, tenant, receiver.url(), ["data.received"])
    new_device(hub, tenant, "pump-1")
    post_reading(hub, tenant, "pump-1")
    receiver.wait_for(2)
    log = wait_for_log(hub, tenant, webhook["id"], 2)
    assert (log[1]["attempt"], log[1]["status_code"], log[1]["outcome"]) == (1, None, "retrying")
    assert "timed out" in log[1]["error"] and log[1]["duration_ms"] >= TIMEOUT_MS * 0.9
    assert (log[0]["attempt"], log[0]["status_code"], log[0]["outcome"]) == (2, 200, "delivered")


def test_the_last_attempt_fails_for_good(config: HubConfig, receiver: Receiver) -> None:
    receiver.script("/hook", *[Reply(500)] * 5)
    with TestClient(create_app(hub_config(config, webhook_backoff="1s")), raise_server_exceptions=False) as tc:
        hub = HubClient(tc)
        tenant = hub.new_tenant()
        webhook = create(hub, tenant, receiver.url(), ["data.received"])
        new_device(hub, tenant, "pump-1")
        post_reading(hub, tenant, "pump-1")
        receiver.wait_for(2)
        log = wait_for_log(hub, tenant, webhook["id"], 2)
        assert [(a["attempt"], a["outcome"]) for a in log] == [(2, "failed"), (1, "retrying")]
        time.sleep(1.5)
        assert len(receiver.requests()) == 2


# Coalescing.


def test_frames_of_one_second_make_one_data_received_per_device_with_the_count(
    hub: HubClient, receiver: Receiver
) -> None:
    tenant = hub.new_tenant()
    create(hub, tenant, receiver.url(), ["data.received"])
    for device in ("pump-1", "pump-2"):
        new_device(hub, tenant, device)
    time.sleep(1 - time.time() % 1 + 0.02)  # start just after a second begins
    first_second = int(time.time())
    for n in range(20):
        post_reading(hub, tenant, "pump-1", n=float(n))
    for n in range(3):
        post_reading(hub, tenant, "pump-2", n=float(n))
    one_second = int(time.time()) == first_second
    receiver.wait_for(2)
    time.sleep(1.5)  # nothing more comes
    events = [r.json for r in receiver.requests()]
    counts: dict[str, int] = {}
    for event in events:
        assert event["type"] == "data.received"
        counts[event["data"]["device_id"]] = counts.get(event["data"]["device_id"], 0) + event["data"]["count"]
    assert counts == {"pump-1": 20, "pump-2": 3}
    seconds = [(e["data"]["device_id"], e["data"]["start"]) for e in events]
    assert len(seconds) == len(set(seconds))  # at most one per device per second
    if one_second:  # else a slow machine posted over two seconds: one event per device and second
        assert len(events) == 2, events


# SSRF.


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_private_loopback_and_link_local_urls_are_refused_at_creation(guarded: HubClient, url: str) -> None:
    tenant = guarded.new_tenant()
    response = guarded.post("/webhooks", json={"url": url, "events": ["device.online"]}, headers=tenant.admin)
    error = assert_error(response, 400, "url_not_allowed")
    assert "TELEHUB_WEBHOOK_ALLOW_PRIVATE" in error["details"]["url"]
    assert guarded.get("/webhooks", headers=tenant.admin).json()["meta"]["total"] == 0


def test_a_name_that_resolves_to_a_private_address_at_send_time_is_refused_and_logged(guarded: HubClient) -> None:
    """DNS rebinding: public when the webhook is made, private when a delivery goes out. Nothing is connected
    to: the guard refuses before any connection (and the public address is never called)."""
    answers = iter([["93.184.216.34"]])
    resolved: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        resolved.append(host)
        return next(answers, ["10.0.0.7"])

    guarded.http.app.state.webhooks.guard.resolve = rebinding  # type: ignore[attr-defined]
    tenant = guarded.new_tenant()
    webhook = create(guarded, tenant, "http://hooks.example.test/in", ["device.online"])
    key = device_key(guarded, tenant)
    with connect(guarded, key) as ws:
        receive(ws)
        log = wait_for_log(guarded, tenant, webhook["id"], 1)
    assert (log[0]["attempt"], log[0]["status_code"], log[0]["outcome"]) == (1, None, "retrying")
    assert (
        log[0]["error"].startswith("refused: hooks.example.test resolves to a private")
        and "10.0.0.7" in log[0]["error"]
    )
    assert resolved[:2] == ["hooks.example.test", "hooks.example.test"]


# Isolation of endpoints.


def test_a_hanging_endpoint_does_not_delay_another_webhook(hub: HubClient, receiver: Receiver) -> None:
    receiver.script("/slow", *[Reply(200, delay_s=30)] * 100)
    tenant = hub.new_tenant()
    create(hub, tenant, receiver.url("/slow"), ["data.received"])
    create(hub, tenant, receiver.url("/fast"), ["data.received"])
    devices = [f"pump-{n}" for n in range(12)]
    for device in devices:
        new_device(hub, tenant, device)
    # data.received is coalesced per arrival second and a second's events leave together once it is over:
    # post at the start of one, so the 12 events are released at once and any spread is the sender's.
    time.sleep(1 - time.time() % 1)
    for device in devices:
        post_reading(hub, tenant, device)
    fast = receiver.wait_for(len(devices), "/fast")
    seconds: dict[str, list[float]] = {}
    for request in fast:
        seconds.setdefault(request.json["data"]["start"], []).append(request.at)
    # All of a second's events reached the fast endpoint while the slow one held its 4 (its concurrency)
    # for the timeout; a lane shared with the slow endpoint would have spread them over timeouts.
    assert max(len(arrivals) for arrivals in seconds.values()) >= 8, seconds
    for arrivals in seconds.values():
        assert max(arrivals) - min(arrivals) < 0.8 * TIMEOUT, seconds
    assert len(receiver.requests("/slow")) <= 4
    assert sorted(r.json["data"]["device_id"] for r in fast) == sorted(devices)


# Tenancy, validation, the documented replies.


def test_other_tenants_see_and_receive_nothing_of_a_webhook(hub: HubClient, receiver: Receiver) -> None:
    a, b = hub.new_tenant("org-a"), hub.new_tenant("org-b")
    webhook = create(hub, a, receiver.url(), ["device.online"])
    assert hub.get("/webhooks", headers=b.admin).json()["meta"]["total"] == 0
    assert_error(hub.get(f"/webhooks/{webhook['id']}/deliveries", headers=b.admin), 404, "not_found")
    assert_error(hub.delete(f"/webhooks/{webhook['id']}", headers=b.admin), 404, "not_found")
    with connect(hub, device_key(hub, b)) as ws:  # B's device: nothing for A's webhook
        receive(ws)
    with connect(hub, device_key(hub, a, "a-device")) as ws:
        receive(ws)
        (request,) = receiver.wait_for(1)
    assert request.json["org_id"] == a.org_id and request.json["data"]["device_id"] == "a-device"
    time.sleep(0.3)
    assert len(receiver.requests()) == 1
    assert hub.get("/webhooks", headers=a.admin).json()["meta"]["total"] == 1


def test_only_admins_manage_webhooks(hub: HubClient, receiver: Receiver) -> None:
    tenant = hub.new_tenant()
    operator = bearer(hub.new_user(tenant, "operator"))
    body = {"url": receiver.url(), "events": ["device.online"]}
    assert_error(hub.post("/webhooks", json=body, headers=operator), 403, "forbidden")
    assert_error(hub.get("/webhooks", headers=operator), 403, "forbidden")
    assert_error(hub.post("/webhooks", json=body), 401, "unauthenticated")


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"events": ["device.online"]}, {"url"}),
        ({"url": "ftp://example.com/x", "events": ["device.online"]}, {"url"}),
        ({"url": "http://user:pw@example.com/x", "events": ["device.online"]}, {"url"}),
        ({"url": "http://" + "a" * 2100 + ".com/", "events": ["device.online"]}, {"url"}),
        ({"url": "http://127.0.0.1/x"}, {"events"}),
        ({"url": "http://127.0.0.1/x", "events": []}, {"events"}),
        ({"url": "http://127.0.0.1/x", "events": ["device.exploded"]}, {"events"}),
        ({"url": "http://127.0.0.1/x", "events": "device.online"}, {"events"}),
        ({"url": "http://127.0.0.1/x", "events": ["device.online"], "secret": "short"}, {"secret"}),
        ({"url": "http://127.0.0.1/x", "events": ["device.online"], "colour": "red"}, {"colour"}),
    ],
)
def test_bad_bodies_are_400_with_each_field(hub: HubClient, body: dict[str, Any], fields: set[str]) -> None:
    tenant = hub.new_tenant()
    error = assert_error(hub.post("/webhooks", json=body, headers=tenant.admin), 400, "validation_error")
    assert set(error["details"]) == fields


def test_an_organization_has_at_most_20_webhooks(hub: HubClient, receiver: Receiver) -> None:
    tenant = hub.new_tenant()
    made = [create(hub, tenant, receiver.url(f"/h{n}"), ["alert.triggered"]) for n in range(20)]
    too_many = hub.post("/webhooks", json={"url": receiver.url(), "events": ["alert.resolved"]}, headers=tenant.admin)
    assert_error(too_many, 409, "too_many_webhooks")
    assert hub.delete(f"/webhooks/{made[0]['id']}", headers=tenant.admin).status_code == 204
    create(hub, tenant, receiver.url(), ["alert.resolved"])
    page = hub.get("/webhooks?limit=5&offset=18", headers=tenant.admin).json()
    assert page["meta"] == {"total": 20, "limit": 5, "offset": 18} and len(page["data"]) == 2


def test_replies_match_the_documented_schemas(hub: HubClient, receiver: Receiver) -> None:
    document = fetch_document(hub)
    tenant = hub.new_tenant()

    def call(method: str, path: str, template: str | None = None, **kwargs: Any) -> Any:
        response = hub.http.request(method, "/api/v1" + path, headers=tenant.admin, **kwargs)
        return check_reply(document, response, "/api/v1" + (template or path))

    webhook = call("POST", "/webhooks", json={"url": receiver.url(), "events": ["device.online"]}).json()
    call("POST", "/webhooks", json={"url": "nope", "events": []})
    call("GET", "/webhooks")
    path, template = f"/webhooks/{webhook['id']}", "/webhooks/{webhook_id}"
    with connect(hub, device_key(hub, tenant)) as ws:
        receive(ws)
        wait_for_log(hub, tenant, webhook["id"], 1)
    page = call("GET", path + "/deliveries", template + "/deliveries", params={"limit": 1}).json()
    assert page["meta"]["next_cursor"] and len(page["data"]) == 1
    rest = call("GET", path + "/deliveries", template + "/deliveries", params={"cursor": page["meta"]["next_cursor"]})
    assert [a["type"] for a in rest.json()["data"]] == []
    call("GET", path + "/deliveries", template + "/deliveries", params={"cursor": "garbage"})
    call("DELETE", path, template)
    call("DELETE", path, template)
    call("GET", path + "/deliveries", template + "/deliveries")
