"""A command as the API shows it, from its stored fields."""

from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = ["COMMAND_PATTERN", "STATUSES", "public"]

COMMAND_PATTERN = re.compile(r"[A-Za-z0-9._:/-]{1,64}")
STATUSES = ("queued", "sent", "completed", "failed", "timed_out", "expired", "canceled")


def public(fields: dict[str, str]) -> dict[str, Any]:
    result = fields.get("result")
    return {
        "command_id": fields["command_id"],
        "device_id": fields["device_id"],
        "command": fields["command"],
        "params": orjson.loads(fields.get("params") or "{}"),
        "status": fields["status"],
        "result": orjson.loads(result) if result else None,
        "error": fields.get("error") or None,
        "timeout_s": int(fields["timeout_s"]),
        "ttl_s": int(fields["ttl_s"]),
        "created_at": fields["created_at"],
        "sent_at": fields.get("sent_at") or None,
        "completed_at": fields.get("completed_at") or None,
        "expires_at": fields["expires_at"],
    }
