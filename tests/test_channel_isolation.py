"""Dashboard channels never cross organizations (API.md §2 and §5), live or replayed, whatever the pattern.

Both organizations have a device ``boiler-7``, so a pattern naming that id is also the other organization's
own channel: only its own device's traffic may come. Each organization's traffic carries its marker in every
message (metric, event name, command, alert metric), one message of every channel kind. Organization A
streams first and A's dashboards (the control) see all of it on every pattern; then B streams, and each B
dashboard on the same pattern reads until B's traffic of every kind it spans has come: anything of A's
would have been queued before it. Then ``last`` and ``since`` replays, including ``since`` positions of the
other organization's subscriptions, show nothing of the other organization either. The dashboard WebSocket
has no op that acts on a device (no commands, no publishing); the test of ops checks that none is taken.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, get_args

import msgpack
import orjson
import pytest

from hub.clock import now_ms
from hub.fanout.channels import Kind, parse_pattern
from tests.support import HubClient, Tenant
from tests.test_dashboard_ws import ask, dashboard, next_message
from tests.test_device_gateway import connect, device_key, receive

DEVICE = "boiler-7"  # both organizations have a device with this id
RESOLUTIONS = ("1s", "1m", "1h")
PATTERNS = (
    # One exact channel of each kind.
    "devices/{id}/telemetry",
    "devices/{id}/aggregates/1s",
    "devices/{id}/events",
    "devices/{id}/commands",
    "alerts",
    # Wildcards at each level, with the device's id and without.
    "devices/{id}/#",
    "devices/{id}/+",
    "devices/{id}/aggregates/+",
    "devices/+/telemetry",
    "devices/+/aggregates/+",
    "devices/+/events",
    "devices/+/commands",
    "devices/+/#",
    "devices/#",
    "+/+/aggregates/1s",
    "+/+/+",
    "alerts/#",
    "+",
    "#",
)


@dataclass
class Org:
    tenant: Tenant
    key: str
    marker: str
    seq: int = 0


def kinds_of(pattern: str) -> set[str]:
    return set(parse_pattern(pattern.format(id=DEVICE), resolutions=RESOLUTIONS).kinds)


def kind(channel: str) -> str:
    return "alerts" if channel == "alerts" else channel.split("/")[2]


def shows(message: dict[str, Any], marker: str) -> bool:
    return marker in orjson.dumps(message).decode()


def new_org(client: HubClient, name: str, marker: str) -> Org:
    """An organization with device boiler-7 and an alert rule on the marker metric."""
    tenant = client.new_tenant(name)
    key = device_key(client, tenant, DEVICE)
    rule = {"name": marker, "metric": marker, "op": "gt", "threshold": 80, "severity": "info", "device_id": DEVICE}
    assert client.post("/alert-rules", json=rule, headers=tenant.admin).status_code == 201
    return Org(tenant, key, marker)


def traffic(client: HubClient, org: Org, device: Any, ts: int) -> None:
    """A message of every channel kind, each carrying the organization's marker: an event frame, telemetry that
    closes a 1 s window and raises then resolves an alert, and a command the device completes."""
    s, org.seq = org.seq, org.seq + 3
    frames = [
        {"type": "event", "seq": s + 1, "ts": ts, "name": org.marker, "data": {}},
        {"type": "telemetry", "seq": s + 2, "ts": ts, "metrics": {org.marker: 99.0}},
        {"type": "telemetry", "seq": s + 3, "ts": ts + 10_000, "metrics": {org.marker: 1.0}},
    ]
    for frame in frames:
        device.send_bytes(msgpack.packb(frame))
    while receive(device) != {"type": "ack", "seq": s + 3}:
        pass
    created = client.post(f"/devices/{DEVICE}/commands", json={"command": org.marker}, headers=org.tenant.admin)
    assert created.status_code == 202, created.text
    while (command := receive(device)).get("type") != "command":
        pass
    assert command["command_id"] == created.json()["command_id"]
    result = {"type": "command_result", "command_id": command["command_id"], "status": "completed", "result": {}}
    device.send_bytes(msgpack.packb(result))


def collect(ws: Any, kinds: set[str], marker: str) -> list[dict[str, Any]]:
    """Messages until one of each of ``kinds`` carrying ``marker`` has come."""
    seen: list[dict[str, Any]] = []
    missing = set(kinds)
    while missing:
        message = next_message(ws)
        assert message["type"] == "message", message
        seen.append(message)
        if shows(message["data"], marker):
            missing.discard(kind(message["channel"]))
    return seen


def replay(ws: Any, op: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Subscribe with a replay; the reply and every message before the pong of a ping sent after it."""
    reply = ask(ws, op)
    assert reply["type"] == "reply", reply
    ws.send_text(orjson.dumps({"op": "ping", "id": "end"}).decode())
    messages = []
    while (message := next_message(ws))["type"] != "pong":
        messages.append(message)
    assert ask(ws, {"op": "unsubscribe", "id": "u", "channel": op["channel"]})["type"] == "reply"
    return reply["result"], messages


def test_the_patterns_cover_every_channel_kind_exactly_and_by_wildcard() -> None:
    exact = [p for p in PATTERNS if "+" not in p and "#" not in p]
    assert set().union(*map(kinds_of, exact)) == set(get_args(Kind))
    wild = [p for p in PATTERNS if p not in exact]
    for each in get_args(Kind):
        assert any(each in kinds_of(p) for p in wild if "{id}" not in p), each
        assert each == "alerts" or any(each in kinds_of(p) for p in wild if "{id}" in p), each


def test_a_dashboard_gets_nothing_of_another_organization_live_or_replayed(client: HubClient) -> None:
    a, b = new_org(client, "org-a", "orgasecret"), new_org(client, "org-b", "orgbmarker")
    patterns = [p.format(id=DEVICE) for p in PATTERNS]
    ts = now_ms() - 60_000
    positions: dict[tuple[str, str], dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        devices = {org.marker: stack.enter_context(connect(client, org.key)) for org in (a, b)}
        for device in devices.values():
            assert receive(device)["type"] == "hello"
        boards = {}
        for org in (a, b):
            for pattern in patterns:
                boards[org.marker, pattern] = ws = stack.enter_context(dashboard(client, org.tenant.admin_token))
                reply = ask(ws, {"op": "subscribe", "id": 1, "channel": pattern})
                assert reply["type"] == "reply", reply
                positions[org.marker, pattern] = {k: reply["result"][k] for k in ("offset", "epoch")}
        traffic(client, a, devices[a.marker], ts)
        for pattern in patterns:  # the control: A's dashboards get A's traffic of every kind the pattern spans
            collect(boards[a.marker, pattern], kinds_of(pattern), a.marker)
        traffic(client, b, devices[b.marker], ts)
        leaks = {}
        for pattern in patterns:
            seen = collect(boards[b.marker, pattern], kinds_of(pattern), b.marker)
            leaks[pattern] = [m for m in seen if shows(m, a.marker)]
        assert leaks == {pattern: [] for pattern in patterns}

    for pattern in patterns:
        for org, other in ((a, b), (b, a)):
            with dashboard(client, org.tenant.admin_token) as ws:
                _, last = replay(ws, {"op": "subscribe", "id": 1, "channel": pattern, "last": 1000})
                mine = {"op": "subscribe", "id": 2, "channel": pattern, "since": positions[org.marker, pattern]}
                recovered, resumed = replay(ws, mine)
                theirs = {"op": "subscribe", "id": 3, "channel": pattern, "since": positions[other.marker, pattern]}
                _, foreign = replay(ws, theirs)
            # Controls: replays of its own channels bring this organization's traffic of every kind. (A position
            # taken on an empty commands or alerts stream, whose retention is unknown, is not recovered.)
            assert {kind(m["channel"]) for m in last if shows(m["data"], org.marker)} == kinds_of(pattern)
            if not kinds_of(pattern) & {"commands", "alerts"}:
                assert recovered["recovered"] is True, (pattern, org.marker)
            if recovered["recovered"]:
                assert {kind(m["channel"]) for m in resumed if shows(m["data"], org.marker)} == kinds_of(pattern)
            leaked = [m for m in last + resumed + foreign if shows(m, other.marker)]
            assert leaked == [], (pattern, org.marker, leaked)


@pytest.mark.parametrize("header", [True, False], ids=["header auth", "first-message auth"])
def test_no_dashboard_op_acts_on_another_organization(client: HubClient, header: bool) -> None:
    a, b = new_org(client, "org-a", "orgasecret"), new_org(client, "org-b", "orgbmarker")
    channel = f"devices/{DEVICE}/telemetry"
    with (
        dashboard(client, a.tenant.admin_token) as mine,
        dashboard(client, b.tenant.admin_token if header else None) as theirs,
        connect(client, a.key) as device,
    ):
        if not header:
            theirs.send_text(orjson.dumps({"op": "auth", "token": b.tenant.admin_token}).decode())
            assert next_message(theirs)["result"]["principal"]["org_id"] == b.tenant.org_id
        assert ask(mine, {"op": "subscribe", "id": 1, "channel": channel})["type"] == "reply"
        for op in (
            {"op": "command", "device_id": DEVICE, "command": "reboot"},
            {"op": "publish", "channel": f"devices/{DEVICE}/commands", "data": {"command": "reboot"}},
        ):
            assert ask(theirs, {**op, "id": 1})["error"]["code"] == "unknown_op"
        # A connection keeps its organization: no switching to A's by authenticating again.
        again = ask(theirs, {"op": "auth", "id": 2, "token": a.tenant.admin_token})
        assert again["error"]["code"] == "already_authenticated"
        # B cannot drop A's subscription to the same channel name.
        assert ask(theirs, {"op": "unsubscribe", "id": 3, "channel": channel})["error"]["code"] == "not_subscribed"
        assert receive(device)["type"] == "hello"
        device.send_bytes(msgpack.packb({"type": "telemetry", "seq": 1, "metrics": {a.marker: 1.0}}))
        assert next_message(mine)["data"]["metrics"] == {a.marker: 1.0}
        assert ask(theirs, {"op": "ping", "id": 4}) == {"type": "pong", "id": 4}
    commands = client.get(f"/devices/{DEVICE}/commands", headers=a.tenant.admin).json()
    assert commands["data"] == []
