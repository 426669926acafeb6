"""Limits of ``/api/v1/ws``: connections per credential across processes, subscriptions per connection, leases
of a dead process expiring, and every dashboard closed with 1012 when the server drains."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import orjson
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from hub.app import create_app
from hub.auth.principal import Principal, Role
from hub.config import HubConfig
from hub.fanout import limiter
from hub.fanout.limiter import ConnectionLimiter
from hub.fanout.service import Fanout
from hub.redis_client import open_pool_client
from tests.support import HubClient, bearer
from tests.test_dashboard_ws import DASHBOARD, ask, next_message

LIMIT = 2


@pytest.fixture
def limited(config: HubConfig) -> HubConfig:
    return config.replace(dashboard_max_connections=LIMIT, dashboard_max_subscriptions=3)


@contextlib.contextmanager
def hub(config: HubConfig) -> Iterator[HubClient]:
    with TestClient(create_app(config), raise_server_exceptions=False) as test_client:
        yield HubClient(test_client)


def test_connections_per_credential_are_counted_across_processes(limited: HubConfig) -> None:
    with hub(limited) as a, hub(limited) as b:
        tenant = a.new_tenant()
        key = a.post("/api-keys", json={"name": "wall", "role": "viewer"}, headers=tenant.admin).json()["key"]
        with contextlib.ExitStack() as open_:
            for client in (a, b):
                open_.enter_context(client.http.websocket_connect(DASHBOARD, headers=tenant.admin))
            for client in (a, b):  # a third one anywhere: refused, in the contract's envelope
                with pytest.raises(WebSocketDenialResponse) as refused:
                    open_.enter_context(client.http.websocket_connect(DASHBOARD, headers=tenant.admin))
                assert refused.value.status_code == 429
                assert refused.value.json()["error"]["code"] == "too_many_connections"
            ws = open_.enter_context(b.http.websocket_connect(DASHBOARD))  # first-message auth: closed 4029
            ws.send_text(orjson.dumps({"op": "auth", "token": tenant.admin_token}).decode())
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert closed.value.code == 4029
            # Another credential of the same organization has places of its own.
            with b.http.websocket_connect(DASHBOARD, headers=bearer(key)) as other:
                assert ask(other, {"op": "ping", "id": 1}) == {"type": "pong", "id": 1}
        # Closed connections give their places back, every time (the test client cancels the app's task as the
        # socket closes, as an ASGI server may).
        for round_number in range(10):
            with contextlib.ExitStack() as open_:
                for client in (a, b):
                    ws = open_.enter_context(client.http.websocket_connect(DASHBOARD, headers=tenant.admin))
                    assert ask(ws, {"op": "ping", "id": round_number}) == {"type": "pong", "id": round_number}


def test_subscriptions_per_connection_are_limited(limited: HubConfig) -> None:
    with hub(limited) as client:
        tenant = client.new_tenant()
        with client.http.websocket_connect(DASHBOARD, headers=tenant.admin) as ws:
            for n, channel in enumerate(["alerts", "devices/+/events", "devices/a/telemetry"]):
                assert ask(ws, {"op": "subscribe", "id": n, "channel": channel})["type"] == "reply"
            refused = ask(ws, {"op": "subscribe", "id": 9, "channel": "devices/b/telemetry"})
            assert refused["error"]["code"] == "too_many_subscriptions" and refused["id"] == 9
            assert ask(ws, {"op": "unsubscribe", "id": 10, "channel": "alerts"})["type"] == "reply"
            assert ask(ws, {"op": "subscribe", "id": 11, "channel": "devices/b/telemetry"})["type"] == "reply"


async def test_the_leases_of_a_process_that_died_expire(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limiter, "LEASE_S", 1)
    redis = open_pool_client(redis_url, decode_responses=False, max_connections=8)
    try:
        dead, alive = ConnectionLimiter(redis, LIMIT), ConnectionLimiter(redis, LIMIT)
        user = Principal(kind="user", id="usr_1", org_id="org_1", role=Role.VIEWER)
        assert await dead.admit(user) and await dead.admit(user)  # never released: the process was killed
        assert await alive.admit(user) is None
        await asyncio.sleep(1.2)
        lease = await alive.admit(user)
        assert lease is not None
        await alive.release(lease)
        assert await redis.zcard(lease.key) == 0
    finally:
        await redis.aclose()


def test_draining_closes_every_dashboard_with_1012(client: HubClient) -> None:
    tenant = client.new_tenant()
    fanout: Fanout = client.http.app.state.fanout  # type: ignore[attr-defined]
    with client.http.websocket_connect(DASHBOARD, headers=tenant.admin) as ws:
        ask(ws, {"op": "subscribe", "id": 1, "channel": "devices/+/telemetry"})
        client.call(fanout.drain)
        with pytest.raises(WebSocketDisconnect) as closed:
            next_message(ws)
        assert closed.value.code == 1012
    with (  # and no new one is taken
        pytest.raises(WebSocketDenialResponse) as refused,
        client.http.websocket_connect(DASHBOARD, headers=tenant.admin),
    ):
        pass
    assert refused.value.status_code == 503
    assert fanout.hub.sources() == frozenset()  # its subscriptions are gone with it


def test_a_deleted_api_key_or_user_loses_its_dashboards(client: HubClient) -> None:
    tenant = client.new_tenant()
    made = client.post("/api-keys", json={"name": "wall", "role": "viewer"}, headers=tenant.admin).json()
    user = {"email": "viewer@acme.example", "password": "correct-horse-battery", "role": "viewer"}
    user_id = client.post("/users", json=user, headers=tenant.admin).json()["id"]
    token = client.post("/auth/login", json={"email": user["email"], "password": user["password"]}).json()["token"]
    for credential, path in ((made["key"], f"/api-keys/{made['id']}"), (token, f"/users/{user_id}")):
        with (
            client.http.websocket_connect(DASHBOARD, headers=bearer(credential)) as ws,
            client.http.websocket_connect(DASHBOARD, headers=tenant.admin) as admin,
        ):
            ask(ws, {"op": "subscribe", "id": 1, "channel": "alerts"})
            assert client.delete(path, headers=tenant.admin).status_code == 204
            with pytest.raises(WebSocketDisconnect) as closed:
                next_message(ws)
            assert closed.value.code == 4001
            assert ask(admin, {"op": "ping", "id": 2}) == {"type": "pong", "id": 2}  # nobody else's
