"""What the ingest side needs from the hub, as small typed callables (the hub imports ingest, never back)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ingest.alert_eval import AlertRule, ConditionSummary
    from ingest.frames import CommandResultFrame

__all__ = ["AlertRules", "AlertSink", "CommandSink", "DeviceAuthenticator", "DeviceIdentity", "PresenceSink"]


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


class AlertRules(Protocol):
    """The organizations' alert rules as this process last read them (rules change rarely).

    ``current``: an organization's rules if the copy is fresh enough to use, else None (refresh first).
    ``refresh``: re-read the rules of those organizations whose copy is not fresh.
    """

    def current(self, org_id: str) -> Sequence[AlertRule] | None: ...

    async def refresh(self, org_ids: Collection[str]) -> None: ...


class AlertSink(Protocol):
    """Applies the condition summaries of a flush to the alert state shared by every process (trigger, resolve,
    one open alert per rule and device). Returns, per organization, the device types it looked up (device id ->
    type, '' for a device with none), for the caller to narrow later type rules."""

    async def apply(self, summaries: Mapping[str, Sequence[ConditionSummary]]) -> dict[str, dict[str, str]]: ...
