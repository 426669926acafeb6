"""``/api/v1/ws``, in-process: auth by header or first message, subscribe/unsubscribe/ping, wildcards inside
the caller's organization only, both encodings, and resuming with ``since`` or ``last`` without a gap."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import orjson
import pytest
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from hub.auth.jwt_tokens import JwtCodec
from hub.fanout import endpoint
from ingest import stream_keys
from tests.fanout_process_clients import another_history
from tests.fanout_process_clients import position as resume_after
from tests.support import HubClient, Tenant, bearer
from tests.test_device_gateway import connect, device_key, receive

DASHBOARD = "/api/v1/ws"


@pytest.fixture
def tenant(client: HubClient) -> Tenant:
    return client.new_tenant()


@contextlib.contextmanager
def dashboard(client: HubClient, token: str | None, **kwargs: Any) -> Iterator[Any]:
    headers = bearer(token) if token else {}
    with client.http.websocket_connect(DASHBOARD, headers=headers, **kwargs) as ws:
        yield ws


def ask(ws: Any, op: dict[str, Any]) -> dict[str, Any]:
    ws.send_text(orjson.dumps(op).decode())
    reply: dict[str, Any] = orjson.loads(ws.receive_text())
    return reply


def next_message(ws: Any) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(ws.receive_text())
    return message


def stream(client: HubClient, key: str, first: int, last: int) -> None:
    """Frames ``first``..``last`` from the device, each carrying its number as ``n``; waits for the last ack."""
    with connect(client, key) as device:
        receive(device)
        for seq in range(first, last + 1):
            device.send_bytes(msgpack.packb({"type": "telemetry", "seq": seq, "metrics": {"n": float(seq)}}))
        while receive(device) != {"type": "ack", "seq": last}:
            pass


def numbers(ws: Any, count: int) -> list[int]:
    return [int(next_message(ws)["data"]["metrics"]["n"]) for _ in range(count)]


def test_exact_subscription_gets_every_frame_in_order(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    with dashboard(client, tenant.admin_token) as ws:
        reply = ask(ws, {"op": "subscribe", "id": 1, "channel": "devices/boiler-7/telemetry"})
        assert reply["type"] == "reply" and reply["id"] == 1
        assert reply["result"]["channel"] == "devices/boiler-7/telemetry"
        assert reply["result"]["recovered"] is False and reply["result"]["epoch"]
        stream(client, key, 1, 20)
        messages = [next_message(ws) for _ in range(20)]
    assert [m["data"]["metrics"]["n"] for m in messages] == [float(n) for n in range(1, 21)]
    first = messages[0]
    assert first["type"] == "message" and first["channel"] == "devices/boiler-7/telemetry"
    assert first["epoch"] == reply["result"]["epoch"] and first["data"]["device_id"] == "boiler-7"
    assert isinstance(first["data"]["ts"], int)
    offsets = [tuple(map(int, m["offset"].split("-"))) for m in messages]
    assert offsets == sorted(offsets) and len(set(offsets)) == 20


def test_wildcards_stay_inside_the_organization(client: HubClient, tenant: Tenant) -> None:
    key_a = device_key(client, tenant, "a-1")
    key_b = device_key(client, tenant, "a-2")
    other = client.new_tenant("globex")
    other_key = device_key(client, other, "g-1")
    with dashboard(client, tenant.admin_token) as mine, dashboard(client, other.admin_token) as theirs:
        assert ask(mine, {"op": "subscribe", "id": 1, "channel": "devices/+/telemetry"})["type"] == "reply"
        for pattern in ("#", "devices/+/telemetry", "devices/a-1/telemetry", "devices/#"):
            assert ask(theirs, {"op": "subscribe", "id": pattern, "channel": pattern})["type"] == "reply"
        stream(client, key_a, 1, 3)
        stream(client, key_b, 1, 2)
        got = [next_message(mine)["data"]["device_id"] for _ in range(5)]
        assert sorted(got) == ["a-1", "a-1", "a-1", "a-2", "a-2"]
        # The other organization's dashboard sees its own device's frame first: nothing of acme's came before.
        stream(client, other_key, 1, 1)
        seen = next_message(theirs)
        assert seen["data"]["device_id"] == "g-1"


def test_first_message_auth_ping_and_errors(client: HubClient, tenant: Tenant) -> None:
    device_key(client, tenant)
    with dashboard(client, None) as ws:
        ws.send_text(orjson.dumps({"op": "auth", "token": tenant.admin_token}).decode())
        assert next_message(ws)["result"]["principal"]["org_id"] == tenant.org_id
        assert ask(ws, {"op": "ping", "id": 7}) == {"type": "pong", "id": 7}
        bad = ask(ws, {"op": "subscribe", "id": 2, "channel": "devices/boiler-7/#/x"})
        assert bad["type"] == "error" and bad["id"] == 2 and bad["error"]["code"] == "invalid_channel"
        assert ask(ws, {"op": "fly", "id": 3})["error"]["code"] == "unknown_op"
        ws.send_text("{not json")
        assert next_message(ws)["error"]["code"] == "invalid_message"
        assert ask(ws, {"op": "unsubscribe", "id": 4, "channel": "alerts"})["error"]["code"] == "not_subscribed"
        assert ask(ws, {"op": "subscribe", "id": 5, "channel": "alerts"})["type"] == "reply"
        assert ask(ws, {"op": "subscribe", "id": 6, "channel": "alerts"})["error"]["code"] == "already_subscribed"
        assert ask(ws, {"op": "unsubscribe", "id": 7, "channel": "alerts"})["type"] == "reply"
        plain = {"offset": "1-0", "epoch": "x"}  # a channel of several streams resumes from a composite position
        two = {"op": "subscribe", "id": 8, "channel": "devices/boiler-7/#", "since": plain}
        assert ask(ws, two)["error"]["code"] == "invalid_request"
        one = {"op": "subscribe", "id": 9, "channel": "alerts", "since": {"offset": "alerts=1-0", "epoch": "x"}}
        assert ask(ws, one)["error"]["code"] == "invalid_request"


def test_bad_credentials_are_refused(client: HubClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    key = device_key(client, tenant)
    for token in ("sk_live_nope", "not-a-jwt", key):
        with pytest.raises(WebSocketDenialResponse) as refused, dashboard(client, token):
            pass
        assert refused.value.status_code == 401
        assert refused.value.json()["error"]["code"] == "unauthenticated"
    monkeypatch.setattr(endpoint, "AUTH_TIMEOUT_S", 0.2)
    with dashboard(client, None) as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_text()
    assert closed.value.code == 4001
    with dashboard(client, None) as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.send_text(orjson.dumps({"op": "auth", "token": "sk_live_nope"}).decode())
        ws.receive_text()
    assert closed.value.code == 4001


def test_msgpack_subprotocol(client: HubClient, tenant: Tenant) -> None:
    key = device_key(client, tenant)
    with dashboard(client, tenant.admin_token, subprotocols=["telehub.v1.msgpack"]) as ws:
        ws.send_bytes(msgpack.packb({"op": "subscribe", "id": 1, "channel": "devices/boiler-7/telemetry"}))
        assert msgpack.unpackb(ws.receive_bytes())["type"] == "reply"
        stream(client, key, 1, 1)
        message = msgpack.unpackb(ws.receive_bytes())
    assert message["data"]["metrics"] == {"n": 1.0}


@pytest.mark.parametrize("channel", ["devices/boiler-7/telemetry", "devices/+/telemetry"])
def test_resume_with_since_has_no_gap_and_no_duplicate(client: HubClient, tenant: Tenant, channel: str) -> None:
    key = device_key(client, tenant)
    with dashboard(client, tenant.admin_token) as ws:
        first = ask(ws, {"op": "subscribe", "id": 1, "channel": channel})["result"]
        stream(client, key, 1, 10)
        received = [next_message(ws) for _ in range(10)]
    # The wildcard channel over a partitioned organization (the cluster pass) has a composite position.
    position = resume_after(received[-1], first)
    stream(client, key, 11, 25)  # while the dashboard is away
    with dashboard(client, tenant.admin_token) as ws:
        reply = ask(ws, {"op": "subscribe", "id": 2, "channel": channel, "since": position})
        assert reply["result"]["recovered"] is True
        missed = numbers(ws, 15)
        stream(client, key, 26, 30)
        live = numbers(ws, 5)
    assert missed + live == list(range(11, 31))
    with dashboard(client, tenant.admin_token) as ws:
        stale = {"offset": position["offset"], "epoch": another_history(position["epoch"])}
        reply = ask(ws, {"op": "subscribe", "id": 3, "channel": channel, "since": stale})
        assert reply["result"]["recovered"] is False
        last = ask(ws, {"op": "unsubscribe", "id": 4, "channel": channel})
        assert last["type"] == "reply"
        reply = ask(ws, {"op": "subscribe", "id": 5, "channel": channel, "last": 3})
        assert numbers(ws, 3) == [28, 29, 30]


def label(channel: str) -> str:
    """A message's part of a composite position: the channel's levels after the device id."""
    return "/".join(channel.split("/")[2:]) if channel.startswith("devices/") else channel


def parts(position: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in position.split(","))


def until_numbers(ws: Any, wanted: list[int], seen: list[dict[str, Any]]) -> None:
    """Read messages of every channel (kept in ``seen``) until the telemetry numbers ``wanted`` have come."""
    got: list[int] = []
    while got != wanted:
        message = next_message(ws)
        assert message["type"] == "message", message
        seen.append(message)
        if message["channel"].endswith("/telemetry"):
            got.append(int(message["data"]["metrics"]["n"]))
            assert got == wanted[: len(got)], got


def test_a_channel_of_several_streams_resumes_from_its_composite_position(
    client: HubClient, tenant: Tenant, sync_redis: Any
) -> None:
    """``devices/x/#`` reads x's telemetry, aggregates, events and commands streams: the reply's offset and
    epoch name a position in each; moved on per message and sent back as ``since``, nothing is missed twice
    or at all, whatever the channel."""
    key = device_key(client, tenant)
    channel = "devices/boiler-7/#"
    seen: list[dict[str, Any]] = []
    with dashboard(client, tenant.admin_token) as ws:
        reply = ask(ws, {"op": "subscribe", "id": 1, "channel": channel})["result"]
        offsets, epochs = parts(reply["offset"]), parts(reply["epoch"])
        assert {"telemetry", "events", "commands", "aggregates/1s"} <= set(offsets) and set(epochs) == set(offsets)
        stream(client, key, 1, 10)
        until_numbers(ws, list(range(1, 11)), seen)
    for message in seen:
        offsets[label(message["channel"])] = message["offset"]
        assert message["epoch"] == epochs[label(message["channel"])]
    before = len(seen)
    stream(client, key, 11, 25)  # away: telemetry, device.online / device.offline, maybe closed windows
    since = {"offset": ",".join(f"{k}={v}" for k, v in offsets.items()), "epoch": reply["epoch"]}
    with dashboard(client, tenant.admin_token) as ws:
        resumed = ask(ws, {"op": "subscribe", "id": 2, "channel": channel, "since": since})["result"]
        assert resumed["recovered"] is True and resumed["epoch"] == reply["epoch"]
        until_numbers(ws, list(range(11, 26)), seen)
        stream(client, key, 26, 27)
        until_numbers(ws, [26, 27], seen)
        events = [m for m in seen if m["channel"].endswith("/events")]
        stored = sync_redis.xrange(stream_keys.device_events(tenant.org_id, "boiler-7"))
        while len(events) < len(stored):  # the last device.offline may come after the last frame
            message = next_message(ws)
            seen.append(message)
            events += [message] if message["channel"].endswith("/events") else []
    assert [m["offset"] for m in events] == [entry_id for entry_id, _ in stored]
    assert [m["data"]["type"] for m in events[:2]] == ["device.online", "device.offline"]
    offsets_seen = [(m["channel"], m["offset"]) for m in seen]
    assert len(offsets_seen) == len(set(offsets_seen)), "a message came twice"
    assert len(seen) > before

    with dashboard(client, tenant.admin_token) as ws:
        ask(ws, {"op": "subscribe", "id": 3, "channel": channel, "last": 4})
        last = [next_message(ws) for _ in range(4)]
    newest = sorted(offsets_seen, key=lambda item: tuple(map(int, item[1].split("-"))))[-4:]
    assert [(m["channel"], m["offset"]) for m in last] == newest


def test_a_dashboard_on_a_jwt_is_closed_with_4001_when_the_token_expires(client: HubClient, tenant: Tenant) -> None:
    services = client.http.app.state.services
    claims = services.jwt.decode(tenant.admin_token)
    # exp is whole seconds from a whole-second iat: a ttl of N leaves N - 1 to N seconds, and the subscribe must
    # come first even in the slow cluster pass.
    short = JwtCodec(lambda: services.jwt._secret, ttl_s=3).issue(
        user_id=claims.user_id, org_id=claims.org_id, role="admin"
    )
    with dashboard(client, short) as ws:
        assert ask(ws, {"op": "subscribe", "id": 1, "channel": "devices/+/telemetry"})["type"] == "reply"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 4001
    assert "expired" in (closed.value.reason or "")
    # A token good for longer keeps its dashboard open past those seconds.
    with dashboard(client, tenant.admin_token) as ws:
        time.sleep(3.2)
        assert ask(ws, {"op": "ping", "id": 2})["type"] == "pong"
