"""``telehub serve --demo``: a demo organization with an admin whose login is printed at start, simulated devices
and an alert rule, all made directly through the services (no token needed).

The organization is made once and remembered; each start gives its admin a fresh password, since only a
hash of the old one is kept. The devices are made once too and get new keys at each start; the rule is made
once. hub.demo_fleet streams the devices' telemetry into the server once it listens.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from typing import Any

from hub.alerts.service import Alerts
from hub.auth.principal import Role
from hub.bootstrap import bootstrap_organization
from hub.config import HubConfig
from hub.errors import Conflict
from hub.registry.devices import DeviceFields
from hub.services import Services

__all__ = ["DEMO_DEVICES", "DEMO_KEY", "DEMO_RULE", "Demo", "DemoDevice", "demo_login", "local_url", "prepare_demo"]

DEMO_KEY = "th:demo"
DEMO_EMAIL = "demo@telehub.local"
# Frames per second from each demo device.
DEMO_RATE_HZ = 1.0


@dataclass(frozen=True, slots=True)
class DemoDevice:
    device_id: str
    name: str
    type: str
    location: str
    # Its key, new at each start (None in the list of what to make).
    key: str = ""


# Two types (clients.sensors profiles): sensors report temp and hum, pumps temp, pressure and rpm.
DEMO_DEVICES = (
    DemoDevice("demo-sensor-1", "Greenhouse sensor 1", "sensor", "Greenhouse A"),
    DemoDevice("demo-sensor-2", "Greenhouse sensor 2", "sensor", "Greenhouse B"),
    DemoDevice("demo-sensor-3", "Office sensor", "sensor", "Office, 2nd floor"),
    DemoDevice("demo-pump-1", "Boiler-room pump 1", "pump", "Boiler room"),
    DemoDevice("demo-pump-2", "Boiler-room pump 2", "pump", "Boiler room"),
)
# A pump overheats now and then (about 6 times an hour each, or on its `overheat` command) and trips it.
DEMO_RULE: dict[str, Any] = {
    "name": "Pump overheating",
    "metric": "temp",
    "op": "gt",
    "threshold": 80.0,
    "device_type": "pump",
    "device_id": None,
    "for_s": 5,
    "severity": "major",
}


@dataclass(frozen=True, slots=True)
class Demo:
    login: dict[str, str]
    devices: list[DemoDevice]
    rule: dict[str, Any]


async def demo_login(services: Services) -> dict[str, str]:
    """The demo organization (made if missing) and a new password for its admin."""
    password = secrets.token_urlsafe(12)
    remembered = await services.redis.hgetall(DEMO_KEY)
    if remembered and await services.users.role_of(remembered["org_id"], remembered["user_id"]):
        await services.users.set_password(remembered["org_id"], remembered["user_id"], password)
        return {"org_id": remembered["org_id"], "email": DEMO_EMAIL, "password": password}
    org = await services.orgs.create(name="demo")
    user = await services.users.create(org_id=org["id"], email=DEMO_EMAIL, password=password, role=Role.ADMIN)
    await services.redis.hset(DEMO_KEY, mapping={"org_id": org["id"], "user_id": user["id"]})
    return {"org_id": org["id"], "email": DEMO_EMAIL, "password": password}


async def prepare_demo(services: Services) -> Demo:
    """Everything the demo needs, each start: the login, the devices with new keys, the alert rule.

    The bootstrap organization (``TELEHUB_BOOTSTRAP_*``) is made first: the server makes it only when the store
    has no organization, which the demo's would otherwise be by then."""
    await bootstrap_organization(services)
    login = await demo_login(services)
    org_id = login["org_id"]
    devices = [await _demo_device(services, org_id, device) for device in DEMO_DEVICES]
    return Demo(login=login, devices=devices, rule=await _demo_rule(services, org_id))


async def _demo_device(services: Services, org_id: str, device: DemoDevice) -> DemoDevice:
    fields: DeviceFields = {
        "name": device.name,
        "type": device.type,
        "location": device.location,
        "manufacturer": "telehub",
        "model": f"simulated {device.type}",
        "tags": ["demo", "simulated"],
    }
    with contextlib.suppress(Conflict):  # made by an earlier start (or by the user): reused
        await services.devices.create(org_id, fields, device_id=device.device_id)
    key = await services.devices.rotate_key(org_id, device.device_id)
    return DemoDevice(device.device_id, device.name, device.type, device.location, key)


async def _demo_rule(services: Services, org_id: str) -> dict[str, Any]:
    rules = Alerts(services.redis, events_retention_ms=services.config.retention.events_ms).rules
    rule_id = await services.redis.hget(DEMO_KEY, "rule_id")
    if rule_id and (rule := await rules.get(org_id, rule_id)) is not None:
        return rule
    rule = DEMO_RULE
    made = await rules.create(
        org_id,
        name=rule["name"],
        metric=rule["metric"],
        op=rule["op"],
        threshold=rule["threshold"],
        device_id=rule["device_id"],
        device_type=rule["device_type"],
        for_s=rule["for_s"],
        severity=rule["severity"],
    )
    await services.redis.hset(DEMO_KEY, "rule_id", made["id"])
    return made


def local_url(config: HubConfig) -> str:
    """Where this host reaches the server: its address, or loopback when it listens on every address."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(config.host, config.host)  # noqa: S104
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.port}"
