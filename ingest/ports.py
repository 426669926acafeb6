"""What the ingest side needs from the hub, as small typed callables (the hub imports ingest, never back)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["DeviceAuthenticator", "DeviceIdentity", "PresenceSink"]


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """The device a connection or request speaks for."""

    org_id: str
    device_id: str


class DeviceAuthenticator(Protocol):
    """Resolve a ``dk_…`` device key to its device; None for an unknown, revoked or deleted key."""

    async def __call__(self, token: str) -> DeviceIdentity | None: ...


class PresenceSink(Protocol):
    """Told when a device's connection opens and closes (online/offline, last_seen, events).

    ``connection_id`` tells connections of one device apart: the close of a replaced connection must not
    mark offline a device whose newer connection is open.
    """

    async def connected(self, device: DeviceIdentity, connection_id: str) -> None: ...

    async def disconnected(self, device: DeviceIdentity, connection_id: str) -> None: ...
