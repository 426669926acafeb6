"""Time as the contract writes it: integer epoch milliseconds inside, ISO 8601 UTC strings on REST."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["iso_ms", "now_ms", "parse_time_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_ms(ms: int) -> str:
    """``1763800000123`` -> ``'2025-11-22T08:26:40.123Z'``."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_time_ms(text: str) -> int:
    """An ISO 8601 string (``Z`` or offset; naive means UTC) or integer milliseconds, as epoch ms."""
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        return int(stripped)
    moment = datetime.fromisoformat(stripped.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
