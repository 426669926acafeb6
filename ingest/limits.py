"""Size and range limits applied to every device frame (API.md §4); one frozen instance per server."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property

__all__ = ["MAX_ERROR_CHARS", "FrameLimits"]

# Characters of the error text in a command_result.
MAX_ERROR_CHARS = 1024


@dataclass(frozen=True, kw_only=True)
class FrameLimits:
    """What one device frame may contain. Over a count or size limit the frame is refused with ``too_large``.

    The gateway closes the connection with 1009 above ``max_frame_bytes``; the codec refuses such a frame too,
    so it is safe on its own.
    """

    # Bytes of one WebSocket message (MessagePack bytes or the UTF-8 of the JSON text).
    max_frame_bytes: int = 1_048_576
    # Distinct metric names in one frame.
    max_metrics: int = 256
    # Points in a telemetry "points" frame.
    max_points: int = 10_000
    # Data points in one frame: ts entries x metrics in a columns frame, all metrics of all points otherwise.
    max_samples: int = 1_000_000
    # Size of an event's data / a command result, re-encoded as JSON.
    max_event_data_bytes: int = 65_536
    # Oldest accepted ts, in ms before now.
    past_ms: int = 366 * 86_400_000
    # Newest accepted ts, in ms after now (device clocks run ahead).
    future_ms: int = 300_000

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if type(value) is not int or value < 0 or (value == 0 and field.name.startswith("max_")):
                raise ValueError(f"FrameLimits.{field.name} must be a positive integer, got {value!r}")

    @cached_property
    def decoder_caps(self) -> tuple[int, int, int]:
        """Longest string, array and map any valid frame holds: MessagePack decoding stops beyond them."""
        return (
            max(self.max_event_data_bytes, MAX_ERROR_CHARS),
            max(self.max_points, self.max_samples, self.max_event_data_bytes),
            max(self.max_metrics, self.max_event_data_bytes // 2),
        )
