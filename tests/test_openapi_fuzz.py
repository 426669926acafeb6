"""Schemathesis fuzzes every operation of /api/openapi.json against the app in-process, on a real Redis.

One test per operation, each with its own app (lifespan and all) on an emptied Redis: the bootstrap
organization's admin, whose JWT every request carries, and real resources of the kinds the operation touches
(devices with readings, commands, alert rules and an alert, webhooks with a delivery attempt, API keys, a
user), so that generated requests reach the handlers' success paths and not only their 404s: about half the
generated requests have their path parameters swapped for real ids (DELETE gets spare resources of its own).
Phases: the schema's examples, schemathesis' coverage cases (boundaries, missing and wrong-typed values,
unexpected methods), then MAX_EXAMPLES fuzzed cases, positive and negative, from a fixed seed. Every reply
must be no 5xx, with a documented status and content type and a body valid against the documented schema.

No operation is excluded. What keeps the side effects in bounds:
- the config fixture's rate limits are far above what a test sends, and failed logins are not throttled
  here (fuzzed logins fail by the hundred; the documented 429 has its own test in test_openapi.py);
- webhook URLs never leave this machine: every name resolves to loopback (so private addresses are allowed),
  the sender's guard refuses every attempt, and the sender stops once the seeded delivery was attempted, so
  what the fuzzing creates is never sent.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from hub.api.openapi import document_of
from hub.app import create_app
from hub.config import HubConfig
from hub.webhooks.ssrf import Refused, Target
from tests.support import API, PASSWORD

ADMIN_EMAIL = "fuzz-admin@example.com"
MAX_EXAMPLES = 10
FUZZ_CONFIG = schemathesis.Config.from_dict(
    {
        # The same requests on every run: a fixed seed, derandomized, no example database.
        "seed": 10,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        # Operations one at a time; the stateful phase (chains of calls through links) needs links we do not declare.
        "phases": {"stateful": {"enabled": False}},
    }
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# The document, loaded at import so pytest gets one test per operation; the fixture checks that the app
# under test serves this very document at /api/openapi.json.
DOCUMENT = document_of(create_app(HubConfig(redis_url="redis://unused")))
schema = schemathesis.openapi.from_dict(DOCUMENT, config=FUZZ_CONFIG)


@schemathesis.serializer("application/msgpack")
def to_msgpack(context: schemathesis.SerializationContext, value: Any) -> bytes:
    """POST .../readings also takes MessagePack, with the JSON body's schema."""
    packed: bytes = msgpack.packb(packable(value))
    return packed


def packable(value: Any) -> Any:
    """``value`` with integers past 64 bits (MessagePack has none) sent as floats, as a client would."""
    if isinstance(value, dict):
        return {key: packable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [packable(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value) if abs(value) < 2**1000 else str(value)
    return value


class NoDeliveries:
    """The sender's guard: refuses every attempt, so no webhook URL is ever connected to."""

    async def target(self, url: str) -> Target:
        raise Refused("deliveries are off while fuzzing")


async def loopback(host: str, port: int) -> list[str]:
    """The webhook guard's resolver: no DNS query leaves the machine."""
    return ["127.0.0.1"]


class Hub:
    """The app under test, started, with the ids of real resources by path parameter name."""

    def __init__(self, app: Starlette, token: str) -> None:
        self.app = app
        self.headers = {"Authorization": f"Bearer {token}"}
        self.ids: dict[str, str] = {}
        self.victims: dict[str, str] = {}  # spare resources, for DELETE

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, status: int = 200) -> dict[str, Any]:
        with asgi.get_client(self.app) as http:
            reply = http.request(method, API + path, json=body, headers=self.headers)
        assert reply.status_code == status, f"{method} {path}: {reply.status_code} {reply.text}"
        result: dict[str, Any] = reply.json()
        return result

    def first(self, path: str) -> str:
        """The id of the first item of a list that the seeded readings fill in the background."""
        deadline = time.monotonic() + 5
        while not (items := self.call("GET", path)["data"]):
            assert time.monotonic() < deadline, f"{path} stayed empty"
            time.sleep(0.02)
        return str(items[0].get("id"))

    def seed(self, path: str) -> None:
        """Resources of every kind ``path`` (an operation's path) touches, two of each (one spare)."""
        post = self.call
        for ids in (self.ids, self.victims):
            ids["device_id"] = post("POST", "/devices", {"name": "Boiler", "type": "boiler"}, 201)["id"]
            if "/api-keys" in path:
                ids["key_id"] = post("POST", "/api-keys", {"name": "backend", "role": "operator"}, 201)["id"]
            if "/commands" in path:
                command = post("POST", f"/devices/{ids['device_id']}/commands", {"command": "reboot"}, 202)
                ids["command_id"] = command["command_id"]
            if "/alert" in path:
                rule = {"name": "hot", "metric": "temp", "op": "gt", "threshold": 0, "severity": "warning"}
                ids["rule_id"] = post("POST", "/alert-rules", rule, 201)["id"]
            if "/webhooks" in path:
                webhook = {"url": "http://hooks.test/in", "events": ["alert.triggered"]}
                ids["webhook_id"] = post("POST", "/webhooks", webhook, 201)["id"]
        if "/users" in path:
            user = {"email": "viewer@example.com", "password": PASSWORD, "role": "viewer"}
            self.victims["user_id"] = post("POST", "/users", user, 201)["id"]
        if path == API + "/events" or "/devices/{device_id}/" in path or "/alerts" in path or "/deliveries" in path:
            device = self.ids["device_id"]
            if "/alert" not in path:  # an alert (and so a webhook delivery) needs a rule
                rule = {"name": "hot", "metric": "temp", "op": "gt", "threshold": 0, "severity": "warning"}
                post("POST", "/alert-rules", rule, 201)
            now_ms = int(time.time() * 1000)
            for n in range(3):
                reading = {"ts": now_ms - 1000 * n, "metrics": {"temp": 20.5 + n, "rpm": 900 + n}}
                post("POST", f"/devices/{device}/readings", reading, 202)
            self.ids["alert_id"] = self.victims["alert_id"] = self.first("/alerts")
            if "/deliveries" in path:
                # The alert's deliveries, one per webhook, were attempted (and refused) and logged.
                for ids in (self.ids, self.victims):
                    self.first(f"/webhooks/{ids['webhook_id']}/deliveries")

    def swap_in_real_ids(self, case: schemathesis.Case) -> None:
        """Half the cases (chosen from their content, so a replayed case chooses alike) get real ids."""
        if not case.path_parameters:
            return
        body = None if isinstance(case.body, NotSet) else case.body
        if zlib.crc32(repr((case.path_parameters, case.query, body)).encode()) % 2:
            return
        known = self.victims if case.method.upper() == "DELETE" else self.ids
        for name in case.path_parameters:
            if name in known:
                case.path_parameters[name] = known[name]


@pytest.fixture
def hub(config: HubConfig, request: pytest.FixtureRequest) -> Iterator[Hub]:
    """The app, started (schemathesis runs its lifespan and ends it after the test), seeded for the operation."""
    app = create_app(
        config.replace(
            bootstrap_email=ADMIN_EMAIL,
            bootstrap_password=PASSWORD,
            login_max_failures=1_000_000,
            webhook_allow_private=True,
        )
    )
    with asgi.get_client(app) as http:
        served = http.get("/api/openapi.json")
        assert served.status_code == 200
        assert served.json() == DOCUMENT
        login = http.post(API + "/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD})
        assert login.status_code == 200, login.text
    webhooks = app.state.webhooks
    webhooks.guard.resolve = loopback
    webhooks.sender.guard = NoDeliveries()
    hub = Hub(app, login.json()["token"])
    # The item's operation, e.g. "GET /api/v1/devices/{device_id}" (a schemathesis test item's attribute).
    label: str = getattr(request.node, "operation_label", None) or "GET /"
    hub.seed(label.partition(" ")[2])
    # Delivery attempts retry with jitter from `random`, which Hypothesis must see untouched while it generates.
    webhooks.sender.running = False
    yield hub
    asgi.shutdown_lifespans()  # the schemathesis plugin does it too, after every test


@schema.parametrize()
# One credential; parametrized so the test ids name the operation (schemathesis 4.32 leaves it out on pytest 9).
@pytest.mark.parametrize("credential", ["admin"])
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_operation_answers_as_documented(case: schemathesis.Case, credential: str, hub: Hub) -> None:
    hub.swap_in_real_ids(case)
    case.call_and_validate(headers=hub.headers, checks=CHECKS, app=hub.app)


# numpy warns as the stored windows' sums overflow; the suite makes warnings errors, and the app logs and skips
# the batch where in production it keeps the infinite sum: this test wants the production path.
@pytest.mark.filterwarnings("ignore:overflow encountered in add:RuntimeWarning")
def test_a_sum_past_the_float_range_is_the_documented_null(hub: Hub) -> None:
    """Found probing what the fuzzed POST .../readings accepts (any finite number): two readings near the float
    maximum in one bucket made the aggregate's sum and avg infinite, sent as null where the document said number."""
    device = hub.ids["device_id"]
    now_ms = int(time.time() * 1000)
    point = {"ts": now_ms, "metrics": {"big": 1.7e308}}
    hub.call("POST", f"/devices/{device}/readings", {"points": [point, point]}, 202)
    operation = schema[API + "/devices/{device_id}/readings/aggregate"]["GET"]
    window = {"from": str(now_ms - 60_000), "to": str(now_ms), "interval": "1h", "fn": "count,sum,min,max,avg"}
    case = operation.Case(path_parameters={"device_id": device}, query=window)
    response = case.call_and_validate(headers=hub.headers, checks=CHECKS, app=hub.app)
    [row] = response.json()["data"]
    assert (row["metric"], row["count"], row["min"], row["max"]) == ("big", 2, 1.7e308, 1.7e308)
    assert row["sum"] is None and row["avg"] is None
