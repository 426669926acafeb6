"""Every REST operation of the app's OpenAPI document against every way in that must fail (issue 10, item 3).

The operations come from ``/api/openapi.json``, not from a hand list: an authenticated operation missing from
``LOWEST`` (the lowest role allowed, from API.md §2-§3 and the handlers' ``require_role`` calls), or a path
parameter missing from ``PATH_IDS``, fails ``test_every_operation_is_in_the_matrix``, so a new route cannot
escape the matrix. For every authenticated operation:

- no credential, a malformed one, a forged, revoked or expired JWT: 401 ``unauthenticated``;
- every role below the lowest allowed (user JWTs and API keys), and device keys outside their own device's
  ingest, commands and readings: 403 ``forbidden``;
- another organization's admin naming this organization's real ids: 404 ``not_found``, none of its data;

and nothing in Redis changes. Each test ends with a control: the same requests, made with the lowest role
allowed (or by the owner), succeed, so none of the refusals above can come from a wrong URL or body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import orjson
import pytest
import redis

from hub.config import HubConfig
from ingest import stream_keys
from tests.conftest import TIMEOUT
from tests.support import PASSWORD, HubClient, Tenant, assert_error, bearer

ROLES = ("viewer", "operator", "admin")
MARK = "orgasecret"  # in the names of A's resources: must never show in a reply to B
DEVICE = "boiler-7"
P = "/api/v1"

# The lowest role allowed to call each authenticated operation ("any": every credential, device keys too).
LOWEST: dict[str, str] = {
    f"GET {P}/auth/me": "any",
    f"GET {P}/api-keys": "admin",
    f"POST {P}/api-keys": "admin",
    f"DELETE {P}/api-keys/{{key_id}}": "admin",
    f"GET {P}/users": "admin",
    f"POST {P}/users": "admin",
    f"DELETE {P}/users/{{user_id}}": "admin",
    f"GET {P}/devices": "viewer",
    f"POST {P}/devices": "operator",
    f"GET {P}/devices/{{device_id}}": "viewer",
    f"PATCH {P}/devices/{{device_id}}": "operator",
    f"PUT {P}/devices/{{device_id}}": "operator",
    f"DELETE {P}/devices/{{device_id}}": "operator",
    f"POST {P}/devices/{{device_id}}/keys": "operator",
    f"POST {P}/devices/registration/tokens": "operator",
    f"POST {P}/devices/{{device_id}}/readings": "operator",
    f"GET {P}/devices/{{device_id}}/readings": "viewer",
    f"GET {P}/devices/{{device_id}}/readings/latest": "viewer",
    f"GET {P}/devices/{{device_id}}/readings/aggregate": "viewer",
    f"GET {P}/devices/{{device_id}}/messages": "viewer",
    f"POST {P}/devices/{{device_id}}/commands": "operator",
    f"GET {P}/devices/{{device_id}}/commands": "viewer",
    f"GET {P}/commands/{{command_id}}": "viewer",
    f"DELETE {P}/commands/{{command_id}}": "operator",
    f"GET {P}/events": "viewer",
    f"POST {P}/alert-rules": "operator",
    f"GET {P}/alert-rules": "viewer",
    f"GET {P}/alert-rules/{{rule_id}}": "viewer",
    f"DELETE {P}/alert-rules/{{rule_id}}": "operator",
    f"GET {P}/alerts": "viewer",
    f"GET {P}/alerts/{{alert_id}}": "viewer",
    f"POST {P}/alerts/{{alert_id}}/ack": "operator",
    f"POST {P}/webhooks": "admin",
    f"GET {P}/webhooks": "admin",
    f"DELETE {P}/webhooks/{{webhook_id}}": "admin",
    f"GET {P}/webhooks/{{webhook_id}}/deliveries": "admin",
}
# Also open to a device key, for its own device (API.md §2: its ingest, commands and readings).
DEVICE_OWN = {
    f"GET {P}/auth/me",
    f"POST {P}/devices/{{device_id}}/readings",
    f"GET {P}/devices/{{device_id}}/readings",
    f"GET {P}/devices/{{device_id}}/readings/latest",
    f"GET {P}/devices/{{device_id}}/readings/aggregate",
    f"GET {P}/devices/{{device_id}}/commands",
    f"GET {P}/commands/{{command_id}}",
}
PUBLIC = {
    f"POST {P}/auth/login",
    f"POST {P}/devices/provision",
    f"GET {P}/health",
    f"GET {P}/health/redis",
    "GET /metrics",
}
# Path parameters naming an organization's resources; World has A's real id of each under the same name.
PATH_IDS = {"device_id", "user_id", "key_id", "rule_id", "alert_id", "webhook_id", "command_id"}
_serial = itertools.count(1)
BODIES: dict[str, Callable[[], dict[str, Any]]] = {
    f"POST {P}/api-keys": lambda: {"name": "new key", "role": "viewer"},
    f"POST {P}/users": lambda: {"email": f"new{next(_serial)}@example.com", "password": PASSWORD, "role": "viewer"},
    f"POST {P}/devices": lambda: {"name": "new", "type": "t"},
    f"PATCH {P}/devices/{{device_id}}": lambda: {"name": "renamed"},
    f"PUT {P}/devices/{{device_id}}": lambda: {"name": "renamed again"},
    f"POST {P}/devices/registration/tokens": lambda: {"device_name": "new"},
    f"POST {P}/devices/{{device_id}}/readings": lambda: {"metrics": {"hum": 40.0}},
    f"POST {P}/devices/{{device_id}}/commands": lambda: {"command": "ping"},
    f"POST {P}/alert-rules": lambda: {"name": "n", "metric": "m", "op": "gt", "threshold": 1, "severity": "info"},
    f"POST {P}/webhooks": lambda: {"url": "http://127.0.0.1:9/new", "events": ["command.timed_out"]},
}
QUERIES = {
    f"GET {P}/devices/{{device_id}}/readings/aggregate": "?from=2020-01-01T00:00Z&to=2031-01-01T00:00Z&interval=1mo"
}
# Keys that move without any request: rate buckets, node heartbeats, background readers' positions, closed
# aggregate windows, streams' epochs, dashboard leases.
VOLATILE = re.compile(
    r"^th:(rate|loginfail|fanout|nodes|\{webhooks\})(:|$)|:(aggregates|epochs|dashboards|webhook-reader)(:|$)"
)


@dataclass(frozen=True)
class Op:
    method: str
    path: str  # the OpenAPI template
    auth: bool

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)


def operations(client: HubClient) -> list[Op]:
    """Every operation of the served document, deletions last (the device's last of all) for the controls."""
    document = client.http.get("/api/openapi.json").json()
    ops = [
        Op(m.upper(), path, bool(spec["security"]))
        for path, item in document["paths"].items()
        for m, spec in item.items()
    ]
    return sorted(ops, key=lambda op: (op.method == "DELETE", op.path == f"{P}/devices/{{device_id}}", op.key))


@dataclass
class World:
    """Organization A with one resource of every kind an id names; B, its admin only."""

    a: Tenant
    b: Tenant
    device_id: str
    device_key: str
    user_id: str
    key_id: str
    rule_id: str
    alert_id: str
    webhook_id: str
    command_id: str


@pytest.fixture
def config(config: HubConfig) -> HubConfig:
    """Webhooks name a closed loopback port, for an event these tests never cause: nothing is sent."""
    return config.replace(webhook_allow_private=True)


def make_world(client: HubClient) -> World:
    a, b = client.new_tenant("org-a"), client.new_tenant("org-b")

    def create(path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        response = client.post(path, json=body, headers=a.admin)
        assert response.status_code in (201, 202), response.text
        created: dict[str, Any] = response.json()
        return created

    create("/devices", {"id": DEVICE, "name": f"{MARK} boiler", "type": "boiler"})
    device_key = create(f"/devices/{DEVICE}/keys", None)["device_key"]
    user = create("/users", {"email": f"{MARK}{next(_serial)}@org-a.example", "password": PASSWORD, "role": "viewer"})
    key = create("/api-keys", {"name": f"{MARK} key", "role": "viewer"})
    rule = {"name": MARK, "metric": "temp", "op": "gt", "threshold": 80, "severity": "major", "device_id": DEVICE}
    rule_id = create("/alert-rules", rule)["id"]
    webhook = create("/webhooks", {"url": f"http://127.0.0.1:9/{MARK}", "events": ["command.timed_out"]})
    command = create(f"/devices/{DEVICE}/commands", {"command": f"{MARK}.reboot"})  # queued: the device is offline
    create(f"/devices/{DEVICE}/readings", {"metrics": {"temp": 99.0, MARK: 1.0}})
    deadline = time.monotonic() + 5 * TIMEOUT
    while not (alerts := client.get("/alerts", headers=a.admin).json()["data"]):
        assert time.monotonic() < deadline, "the reading raised no alert"
        time.sleep(0.02)
    return World(
        a, b, DEVICE, device_key, user["id"], key["id"], rule_id, alerts[0]["id"], webhook["id"], command["command_id"]
    )


def send(client: HubClient, world: World, op: Op, headers: dict[str, str]) -> httpx.Response:
    path = op.path
    for name in op.params:
        path = path.replace(f"{{{name}}}", getattr(world, name))
    body = BODIES[op.key]() if op.key in BODIES else None
    return client.http.request(op.method, path + QUERIES.get(op.key, ""), json=body, headers=headers)


def refusal(response: httpx.Response, status: int, code: str) -> str | None:
    """What is wrong with ``response`` as the contract's error envelope of ``status`` and ``code``; None if right."""
    try:
        assert_error(response, status, code)
    except (AssertionError, KeyError, ValueError):
        return f"{response.status_code} {response.text[:200]}"
    return None


def redis_state(client: Any) -> dict[str, Any]:
    """Every key a request could change, with its content (stream entries by id)."""
    read: dict[str, Callable[[str], Any]] = {
        "hash": client.hgetall,
        "zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        "set": lambda key: sorted(client.smembers(key)),
        "stream": lambda key: [entry_id for entry_id, _ in client.xrange(key)],
        "list": lambda key: client.lrange(key, 0, -1),
        "string": client.get,
    }
    return {key: read[client.type(key)](key) for key in client.scan_iter("th:*") if not VOLATILE.search(key)}


def succeeds(client: HubClient, world: World, ops: list[Op], headers: Callable[[Op], dict[str, str]]) -> None:
    """The control: each of ``ops``, in order, succeeds with the credential ``headers`` gives it."""
    failed = {}
    for op in ops:
        response = send(client, world, op, headers(op))
        if response.status_code not in (200, 201, 202, 204):
            failed[op.key] = f"{response.status_code} {response.text[:200]}"
    assert not failed, failed


def test_every_operation_is_in_the_matrix(client: HubClient) -> None:
    ops = operations(client)
    authenticated = {op.key for op in ops if op.auth}
    assert authenticated - set(LOWEST) == set(), "an authenticated operation has no lowest role in LOWEST"
    assert set(LOWEST) - authenticated == set(), "LOWEST names an operation the document does not have"
    assert {op.key for op in ops if not op.auth} == PUBLIC, "an operation's auth flag changed"
    assert authenticated >= DEVICE_OWN and set(LOWEST.values()) <= {"any", *ROLES}
    assert {p for op in ops for p in op.params} == PATH_IDS, "a path parameter names an unknown kind of id"
    assert set(BODIES) | set(QUERIES) <= authenticated


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def sign(claims: dict[str, Any], key: str, alg: str = "HS256") -> str:
    """A JWT of ``claims`` signed with ``key`` (HMAC-SHA256 whatever ``alg`` says; none: unsigned)."""
    signing_input = f"{_b64(orjson.dumps({'alg': alg, 'typ': 'JWT'}))}.{_b64(orjson.dumps(claims))}"
    if alg == "none":
        return signing_input + "."
    mac = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def bad_credentials(client: HubClient, world: World, secret: str) -> dict[str, dict[str, str]]:
    """Authorization headers that must not get in, by what is wrong with them."""
    a = world.a
    me = client.get("/auth/me", headers=a.admin).json()
    now = int(time.time())
    claims = {
        "sub": me["id"],
        "org": a.org_id,
        "role": "admin",
        "jti": "j1",
        "iat": now,
        "exp": now + 600,
        "iss": "telehub",
    }
    # The control: these claims, signed with the secret, get in; every variant below changes one thing.
    assert client.get("/auth/me", headers=bearer(sign(claims, secret))).status_code == 200
    revoked = client.post("/api-keys", json={"name": "r", "role": "admin"}, headers=a.admin).json()
    assert client.delete(f"/api-keys/{revoked['id']}", headers=a.admin).status_code == 204
    gone = client.new_user(a, "admin")
    gone_id = client.get("/auth/me", headers=bearer(gone)).json()["id"]
    assert client.delete(f"/users/{gone_id}", headers=a.admin).status_code == 204
    head, payload, _ = a.admin_token.split(".")
    viewer = client.new_user(a, "viewer")
    v_head, v_payload, v_sig = viewer.split(".")
    v_claims = orjson.loads(base64.urlsafe_b64decode(v_payload + "=" * (-len(v_payload) % 4)))
    escalated = f"{v_head}.{_b64(orjson.dumps({**v_claims, 'role': 'admin'}))}.{v_sig}"
    without_jti = {k: v for k, v in claims.items() if k != "jti"}
    tokens = {
        "garbage": "garbage",
        "truncated JWT": a.admin_token[:-6],
        "JWT without its signature": f"{head}.{payload}",
        "role edited in a signed JWT": escalated,
        "JWT signed with another secret": sign(claims, "another-secret-" + "y" * 40),
        "alg none": sign(claims, "", alg="none"),
        "HS256 keyed with the org id": sign(claims, a.org_id),
        "HS256 keyed with the issuer": sign(claims, "telehub"),
        "HS256 keyed with nothing": sign(claims, ""),
        "HS512 header on an HS256 signature": sign(claims, secret, alg="HS512"),
        "JWT without jti": sign(without_jti, secret),
        "JWT of another organization": sign({**claims, "org": world.b.org_id}, secret),
        "expired an hour ago": sign({**claims, "iat": now - 7200, "exp": now - 3600}, secret),
        "expired just now": sign({**claims, "iat": now - 600, "exp": now - 1}, secret),
        "JWT of a deleted user": gone,
        "revoked API key": revoked["key"],
        "unknown API key": "sk_live_" + "A" * 43,
        "unknown device key": "dk_" + "A" * 43,
        "longer than any token": "x" * 5000,
    }
    headers = {name: bearer(token) for name, token in tokens.items()}
    headers |= {
        "no Authorization header": {},
        "Bearer and nothing": {"Authorization": "Bearer"},
        "a JWT without the Bearer scheme": {"Authorization": a.admin_token},
        "Basic scheme": {"Authorization": "Basic " + base64.b64encode(f"{a.admin_email}:{PASSWORD}".encode()).decode()},
    }
    return headers


def test_no_missing_malformed_forged_revoked_or_expired_credential_gets_in(
    client: HubClient, config: HubConfig, sync_redis: redis.Redis
) -> None:
    world = make_world(client)
    ops = [op for op in operations(client) if op.auth]
    bad = bad_credentials(client, world, config.secret)
    before = redis_state(sync_redis)
    failures = {}
    for op in ops:
        for name, headers in bad.items():
            if (problem := refusal(send(client, world, op, headers), 401, "unauthenticated")) is not None:
                failures[op.key, name] = problem
    assert not failures, failures
    assert redis_state(sync_redis) == before
    succeeds(client, world, ops, lambda op: world.a.admin)


@pytest.mark.parametrize("kind", ["user", "api_key"])
def test_every_role_below_the_lowest_allowed_is_403_and_changes_nothing(
    client: HubClient, sync_redis: redis.Redis, kind: str
) -> None:
    world = make_world(client)
    ops = [op for op in operations(client) if op.auth]
    new = client.new_user if kind == "user" else client.new_api_key
    credentials = {role: bearer(new(world.a, role)) for role in ROLES}
    before = redis_state(sync_redis)
    failures = {}
    for op in ops:
        lowest = LOWEST[op.key]
        for role in ROLES[: ROLES.index(lowest)] if lowest != "any" else ():
            if (problem := refusal(send(client, world, op, credentials[role]), 403, "forbidden")) is not None:
                failures[op.key, role] = problem
    assert not failures, failures
    assert redis_state(sync_redis) == before
    succeeds(client, world, ops, lambda op: credentials[LOWEST[op.key] if LOWEST[op.key] in ROLES else "viewer"])


def test_device_keys_reach_only_their_own_devices_ingest_commands_and_readings(
    client: HubClient, sync_redis: redis.Redis
) -> None:
    world = make_world(client)
    ops = [op for op in operations(client) if op.auth]
    own = bearer(world.device_key)
    client.post("/devices", json={"id": "pump-2", "name": "pump", "type": "pump"}, headers=world.a.admin)
    sibling = bearer(client.post("/devices/pump-2/keys", headers=world.a.admin).json()["device_key"])
    client.post("/devices", json={"id": DEVICE, "name": "B's", "type": "boiler"}, headers=world.b.admin)
    namesake = bearer(client.post(f"/devices/{DEVICE}/keys", headers=world.b.admin).json()["device_key"])
    before = redis_state(sync_redis)
    failures = {}
    for op in ops:
        if op.key not in DEVICE_OWN:
            for name, key in (("own", own), ("sibling", sibling), ("namesake", namesake)):
                if (problem := refusal(send(client, world, op, key), 403, "forbidden")) is not None:
                    failures[op.key, name] = problem
        elif op.params:
            # Another device's key, in this organization or in another one with a device of the same id.
            if (problem := refusal(send(client, world, op, sibling), 404, "not_found")) is not None:
                failures[op.key, "sibling"] = problem
            response = send(client, world, op, namesake)
            if "command_id" in op.params and (problem := refusal(response, 404, "not_found")) is not None:
                failures[op.key, "namesake"] = problem
            if MARK in response.text or world.a.org_id in response.text:
                failures[op.key, "namesake"] = f"shows A's data: {response.text[:200]}"
    assert not failures, failures
    after = redis_state(sync_redis)  # nothing changed but B's own device, which the namesake sent readings to
    assert {k: v for k, v in after.items() if world.b.org_id not in k} == {
        k: v for k, v in before.items() if world.b.org_id not in k
    }
    assert stream_keys.device_frames(world.b.org_id, DEVICE) in after
    succeeds(client, world, [op for op in ops if op.key in DEVICE_OWN], lambda op: own)


def test_another_organizations_ids_are_404_show_nothing_and_change_nothing(
    client: HubClient, sync_redis: redis.Redis
) -> None:
    world = make_world(client)
    ops = [op for op in operations(client) if op.auth]
    b_key = bearer(client.new_api_key(world.b, "admin"))
    before = redis_state(sync_redis)
    failures = {}
    for op in ops:
        for name, credential in (("B admin", world.b.admin), ("B admin key", b_key)):
            if op.params:
                response = send(client, world, op, credential)
                problem = refusal(response, 404, "not_found")
            elif op.method == "GET":  # B's own collections: nothing of A's in them
                response = send(client, world, op, credential)
                problem = None if response.status_code == 200 else f"{response.status_code} {response.text[:200]}"
            else:
                continue
            if problem is None and (MARK in response.text or world.a.org_id in response.text):
                problem = f"shows A's data: {response.text[:200]}"
            if problem is not None:
                failures[op.key, name] = problem
    assert not failures, failures
    assert redis_state(sync_redis) == before
    # A body naming A's device from B is refused too, and B's event log filtered by it is empty.
    rule = {"name": "x", "metric": "temp", "op": "gt", "threshold": 1, "severity": "info", "device_id": DEVICE}
    assert_error(client.post("/alert-rules", json=rule, headers=world.b.admin), 400, "validation_error")
    assert client.get(f"/events?device_id={DEVICE}", headers=world.b.admin).json()["data"] == []
    # The control: the very same requests (path ids and all) succeed for A's admin.
    succeeds(client, world, [op for op in ops if op.params], lambda op: world.a.admin)
