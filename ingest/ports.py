"""What the ingest side needs from the hub, as small typed callables (the hub imports ingest, never back)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ingest.frames import CommandResultFrame

__all__ = ["CommandSink", "DeviceAuthenticator", "DeviceIdentity", "PresenceSink"]


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


class CommandSink(Protocol):
    """The hub's commands, as a device connection meets them.

    ``connected``: the device's session is open on this process (its queued commands are due). ``result``: the
    device answered a command; the error (code, message) to send back when the answer is refused (another
    device's command, an unknown one, one already ended), None when it was taken.
    """

    async def connected(self, device: DeviceIdentity) -> None: ...

    async def result(self, device: DeviceIdentity, frame: CommandResultFrame) -> tuple[str, str] | None: ...
