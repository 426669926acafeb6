"""Dashboard channels (API.md §5): names, subscription patterns with MQTT wildcards, and the streams behind them.

Channels, always inside the caller's organization (a pattern has no way to name another one)::

    devices/{id}/telemetry    devices/{id}/aggregates/{resolution}    devices/{id}/events
    devices/{id}/commands     alerts

``+`` matches exactly one level, ``#`` the rest and must be the last level. As in MQTT, ``a/#`` also matches
``a`` itself: ``alerts/#`` matches ``alerts`` and ``devices/x/telemetry/#`` matches ``devices/x/telemetry``;
``devices/x/#`` would match ``devices/x`` too, but that is no channel, so nothing is ever delivered there. A
pattern is valid when its levels are well formed and it can match at least one channel; otherwise
``parse_pattern`` raises ``InvalidChannel`` (code ``invalid_channel``) saying what is wrong.

Roles: viewer and up may subscribe to every channel of their organization. A device credential may not
subscribe at all (the WebSocket endpoint enforces that; nothing here looks at roles).

Streams: a pattern whose device level is literal (``devices/boiler-7/telemetry``, ``devices/boiler-7/#``)
reads that device's streams; one with a wildcard there (``devices/+/telemetry``, ``#``) and ``alerts`` read
the organization's stream of each kind it spans: for telemetry, aggregates and events one per partition of
the organization's devices (ingest/stream_keys.py), whose labels in composite positions are then
``<kind>.<partition>`` (``telemetry.3``) when there are several. ``Pattern.sources`` lists them; a message's
``offset`` is the id of the entry in the stream it was read from.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from hub.errors import BadRequest
from ingest import stream_keys
from ingest.aggregates import resolution_label

__all__ = [
    "ALERTS_CHANNEL",
    "InvalidChannel",
    "Kind",
    "Pattern",
    "Source",
    "aggregates_channel",
    "commands_channel",
    "device_commands",
    "events_channel",
    "org_alerts",
    "org_commands",
    "parse_pattern",
    "telemetry_channel",
]

Kind = Literal["telemetry", "aggregates", "events", "commands", "alerts"]

# The longest channel is devices/<64>/aggregates/<resolution>, under 100 characters.
MAX_PATTERN_CHARS = 128
DEVICE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_RESOLUTION = re.compile(r"[1-9][0-9]{0,5}[smh]")
_WIDTH_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000}
_WILD = ("+", "#")
_DEVICE_KINDS = ("telemetry", "aggregates", "events", "commands")
_KIND_HELP = "telemetry, aggregates/{resolution}, events or commands"

# Every channel's levels; _ID and _RES stand for a device id and a resolution.
_ID, _RES = object(), object()
_SHAPES: tuple[tuple[Kind, tuple[object, ...]], ...] = (
    ("telemetry", ("devices", _ID, "telemetry")),
    ("aggregates", ("devices", _ID, "aggregates", _RES)),
    ("events", ("devices", _ID, "events")),
    ("commands", ("devices", _ID, "commands")),
    ("alerts", ("alerts",)),
)


def telemetry_channel(device_id: str) -> str:
    return f"devices/{device_id}/telemetry"


def aggregates_channel(device_id: str, resolution: str) -> str:
    return f"devices/{device_id}/aggregates/{resolution}"


def events_channel(device_id: str) -> str:
    return f"devices/{device_id}/events"


def commands_channel(device_id: str) -> str:
    return f"devices/{device_id}/commands"


ALERTS_CHANNEL = "alerts"


# Streams the later issues write (the others are in ingest/stream_keys.py).


def device_commands(org_id: str, device_id: str) -> str:
    """Stream: every status change of the device's commands (the commands issue writes it)."""
    return f"{stream_keys.PREFIX}:{{{org_id}}}:commands:{device_id}"


def org_commands(org_id: str) -> str:
    """Stream: every command status change in the organization."""
    return f"{stream_keys.PREFIX}:{{{org_id}}}:commands"


def org_alerts(org_id: str) -> str:
    """Stream: alert.triggered / resolved / acknowledged of the organization (the alerts issue writes it)."""
    return f"{stream_keys.PREFIX}:{{{org_id}}}:alerts"


class InvalidChannel(BadRequest):
    """A subscription pattern that is malformed or can match no channel."""

    default_code = "invalid_channel"
    default_message = "not a channel"


@dataclass(frozen=True, slots=True)
class Source:
    """One stream a reader follows: a device's (``device_id`` set) or the organization's of one kind."""

    org_id: str
    kind: Kind
    # None: the organization-wide stream of the kind (always so for alerts).
    device_id: str | None = None
    # Aggregates only: the resolution label (``1m``).
    resolution: str | None = None
    # The organization's stream of a partitioned kind (telemetry, aggregates, events): which partition.
    partition: int | None = None

    @property
    def label(self) -> str:
        """The stream's name inside one subscription: its kind, ``aggregates/<resolution>`` for aggregates
        (a channel's levels after the device id; ``alerts`` for alerts), then ``.<partition>`` for one of
        several partitions. Composite offsets use it."""
        label = f"aggregates/{self.resolution}" if self.kind == "aggregates" else self.kind
        if self.partition is not None and stream_keys.partitions() > 1:
            return f"{label}.{self.partition}"
        return label

    @property
    def key(self) -> str:
        """The Redis stream key. A device's telemetry is its frames stream (other frame kinds are skipped)."""
        org, device, kind, partition = self.org_id, self.device_id, self.kind, self.partition or 0
        if kind == "telemetry":
            if device is None:
                return stream_keys.org_telemetry(org, partition)
            return stream_keys.device_frames(org, device)
        if kind == "aggregates":
            resolution = self.resolution or ""
            if device is None:
                return stream_keys.org_aggregates(org, resolution, partition)
            return stream_keys.device_aggregates(org, device, resolution)
        if kind == "events":
            return stream_keys.org_events(org, partition) if device is None else stream_keys.device_events(org, device)
        if kind == "commands":
            return org_commands(org) if device is None else device_commands(org, device)
        return org_alerts(org)


@dataclass(frozen=True, slots=True)
class Pattern:
    """A parsed subscription pattern (make one with ``parse_pattern``); equal patterns have equal text."""

    text: str
    levels: tuple[str, ...]
    # The kinds of channel it can match, in _SHAPES order.
    kinds: tuple[Kind, ...]
    # The literal device level, if any: such a pattern reads that device's streams.
    device_id: str | None
    # The literal resolution level of an aggregates pattern, if any.
    resolution: str | None

    @property
    def exact(self) -> bool:
        """No wildcard: the pattern is one channel."""
        return "+" not in self.levels and "#" not in self.levels

    def matches(self, channel: str) -> bool:
        return self.matches_levels(channel.split("/"))

    def matches_levels(self, levels: list[str]) -> bool:
        """``matches`` for a channel already split on ``/`` (split once, match against many patterns)."""
        pattern = self.levels
        count = len(pattern)
        if pattern[-1] == "#":
            count -= 1
            if len(levels) < count:
                return False
        elif len(levels) != count:
            return False
        for i in range(count):
            level = pattern[i]
            if level != "+" and level != levels[i]:
                return False
        return True

    def sources(self, org_id: str, resolutions: Iterable[str]) -> frozenset[Source]:
        """The streams a reader must follow for this pattern; ``resolutions`` are the configured aggregate
        resolutions, read when the resolution level is a wildcard."""
        device = self.device_id
        # A wildcard device level reads every partition of the organization's telemetry, aggregates and events.
        partitions: Iterable[int | None] = range(stream_keys.partitions()) if device is None else (None,)
        found: set[Source] = set()
        for kind in self.kinds:
            if kind == "alerts":
                found.add(Source(org_id, kind))
            elif kind == "commands":
                found.add(Source(org_id, kind, device))
            elif kind == "aggregates":
                for resolution in (self.resolution,) if self.resolution else resolutions:
                    found.update(Source(org_id, kind, device, resolution, p) for p in partitions)
            else:
                found.update(Source(org_id, kind, device, None, p) for p in partitions)
        return frozenset(found)


def parse_pattern(text: object, *, resolutions: Collection[str] | None = None) -> Pattern:
    """Check a subscription pattern and parse it. With ``resolutions`` (the configured labels), a literal
    resolution must be one of them; without, any canonical label (``1s``, ``5m``, ``1h``; not ``60s``)."""
    if not isinstance(text, str) or not text:
        raise InvalidChannel("channel: required, a string such as devices/{id}/telemetry")
    if len(text) > MAX_PATTERN_CHARS:
        raise InvalidChannel(f"channel: longer than {MAX_PATTERN_CHARS} characters")
    levels = tuple(text.split("/"))
    for i, level in enumerate(levels):
        if not level:
            raise InvalidChannel(f"channel {text!r}: empty level")
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise InvalidChannel(f"channel {text!r}: '#' must be a whole level, and the last one")
        if "+" in level and level != "+":
            raise InvalidChannel(f"channel {text!r}: '+' must be a whole level")
    kinds = tuple(kind for kind, shape in _SHAPES if _fits(levels, shape, resolutions))
    if not kinds:
        raise InvalidChannel(f"channel {text!r}: {_diagnose(levels, resolutions)}")
    device = levels[1] if len(levels) > 1 and levels[1] not in _WILD and levels[0] != "alerts" else None
    resolution = levels[3] if len(levels) > 3 and levels[3] not in _WILD else None
    return Pattern(text, levels, kinds, device, resolution)


def _fits(levels: tuple[str, ...], shape: tuple[object, ...], resolutions: Collection[str] | None) -> bool:
    """Whether the pattern matches at least one channel of this shape."""
    for i, level in enumerate(levels):
        if level == "#":
            return len(shape) >= i
        if i >= len(shape):
            return False
        spec = shape[i]
        if level == "+":
            continue
        if spec is _ID:
            if DEVICE_ID.fullmatch(level) is None:
                return False
        elif spec is _RES:
            if not _valid_resolution(level, resolutions):
                return False
        elif level != spec:
            return False
    return len(levels) == len(shape)


def _valid_resolution(label: str, resolutions: Collection[str] | None) -> bool:
    if resolutions is not None:
        return label in resolutions
    if _RESOLUTION.fullmatch(label) is None:
        return False
    return resolution_label(int(label[:-1]) * _WIDTH_MS[label[-1]]) == label


def _diagnose(levels: tuple[str, ...], resolutions: Collection[str] | None) -> str:
    """Why a well-formed pattern matches no channel (only called for refused patterns)."""
    first = levels[0]
    if first not in ("devices", "alerts", "+"):
        return f"unknown channel {first!r}: channels are devices/{{id}}/... and alerts"
    if first == "alerts":
        return "alerts has no sub-levels"
    if len(levels) < 3:
        if len(levels) == 2 and levels[1] not in _WILD and DEVICE_ID.fullmatch(levels[1]) is None:
            return "a device id must match [A-Za-z0-9._-]{1,64}"
        return f"incomplete: a device channel is devices/{{id}}/ then {_KIND_HELP}"
    device, kind = levels[1], levels[2]
    if device not in _WILD and DEVICE_ID.fullmatch(device) is None:
        return "a device id must match [A-Za-z0-9._-]{1,64}"
    if kind not in _WILD and kind not in _DEVICE_KINDS:
        return f"unknown kind {kind!r}: one of {_KIND_HELP}"
    if kind == "aggregates" and len(levels) == 3:
        return "aggregates needs a resolution level (aggregates/1m, aggregates/+)"
    if len(levels) == 4 and levels[3] not in _WILD and kind in ("aggregates", "+"):
        known = ", ".join(sorted(resolutions)) if resolutions is not None else "such as 1s, 1m, 1h"
        return f"unknown resolution {levels[3]!r} ({known})"
    return "too many levels"
