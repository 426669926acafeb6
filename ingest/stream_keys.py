"""The Redis keys of the ingest side: streams of frames and events, and each device's last stored seq.

Every key carries its organization's hash tag ``{org_id}``, so one flush for one organization is one Lua call
on one Redis Cluster slot. The registry keys (devices, users, keys) are in ``hub/keys.py``.
"""

from __future__ import annotations

__all__ = [
    "device_aggregates",
    "device_events",
    "device_frames",
    "last_seqs",
    "org_aggregates",
    "org_events",
    "org_telemetry",
]

PREFIX = "th"


def device_frames(org_id: str, device_id: str) -> str:
    """Stream: every frame the device sent, as received (k kind, s seq, b binary 1/0, f frame bytes)."""
    return f"{PREFIX}:{{{org_id}}}:frames:{device_id}"


def device_events(org_id: str, device_id: str) -> str:
    """Stream: the device's events (device.online/offline, its own event frames)."""
    return f"{PREFIX}:{{{org_id}}}:events:{device_id}"


def org_telemetry(org_id: str) -> str:
    """Stream: every accepted telemetry/columns frame of the organization (d device, s seq, b, f)."""
    return f"{PREFIX}:{{{org_id}}}:telemetry"


def org_events(org_id: str) -> str:
    """Stream: the organization's event log (device.*, and later alert.* and command.*)."""
    return f"{PREFIX}:{{{org_id}}}:events"


def device_aggregates(org_id: str, device_id: str, resolution: str) -> str:
    """Stream: the device's closed windows of one resolution (``1s``, ``1m``, ``1h``): d device, s window start
    (ms), c corrected 1/0, p the ``devices/{id}/aggregates/{resolution}`` channel payload (JSON)."""
    return f"{PREFIX}:{{{org_id}}}:aggregates:{resolution}:{device_id}"


def org_aggregates(org_id: str, resolution: str) -> str:
    """Stream: every closed window of one resolution in the organization (same fields as the device's)."""
    return f"{PREFIX}:{{{org_id}}}:aggregates:{resolution}"


def connection_generations(org_id: str) -> str:
    """Hash: device id -> how many connections it has opened (over every process): orders the connections of
    one device, so a late notice from an older one never closes a newer one."""
    return f"{PREFIX}:{{{org_id}}}:conngen"


def last_seqs(org_id: str) -> str:
    """Hash: device id -> the highest seq stored for it, written in the same script as its frames."""
    return f"{PREFIX}:{{{org_id}}}:lastseq"
