"""What a dashboard sends (API.md §5): decoding an op, and reading where a subscription resumes.

Positions. A message's ``offset`` is the id of its entry in the stream it was read from, and its ``epoch``
names that stream's history. A pattern read from one stream (``devices/x/telemetry``, ``devices/+/telemetry``,
``alerts``) has plain positions. One read from several (``devices/x/#``, ``devices/+/+``) has *composite*
ones: ``label=value`` parts joined by ``,``, one per stream, where the label is the stream's kind as a channel
names it (``telemetry``, ``aggregates/1m``, ``events``, ``commands``, ``alerts``: the levels after the device
id). The subscribe reply gives the composite offset and epoch; to resume, a client replaces the part of each
message's label with that message's offset, and sends both back as ``since``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import orjson

from hub.fanout.broker import offset_key

__all__ = ["OpError", "Resume", "compose", "decode_op", "parse_resume"]

# Part and label separators of a composite position.
PART_SEPARATOR = ","
LABEL_SEPARATOR = "="


class OpError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Resume:
    # since: label -> (offset, epoch); for a one-stream pattern the one label is "".
    since: dict[str, tuple[str, str]] | None = None
    last: int | None = None


def decode_op(raw: bytes | str) -> dict[str, Any]:
    try:
        op = msgpack.unpackb(raw) if isinstance(raw, bytes) else orjson.loads(raw)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise OpError("invalid_message", f"not a JSON or MessagePack object: {exc}") from None
    if not isinstance(op, dict):
        raise OpError("invalid_message", "a message is an object with an op")
    return op


def compose(parts: dict[str, str]) -> str:
    """A position over several streams (``label`` -> value), or the one value of a one-stream pattern."""
    if list(parts) == [""]:
        return parts[""]
    return PART_SEPARATOR.join(f"{label}{LABEL_SEPARATOR}{value}" for label, value in sorted(parts.items()))


def _decompose(text: str, composite: bool, what: str) -> dict[str, str]:
    if not composite:
        if LABEL_SEPARATOR in text:
            raise OpError("invalid_request", f"since.{what}: this channel reads one stream; give a plain {what}")
        return {"": text}
    parts: dict[str, str] = {}
    for part in text.split(PART_SEPARATOR):
        label, separator, value = part.partition(LABEL_SEPARATOR)
        if not separator or not label or label in parts:
            raise OpError(
                "invalid_request",
                f"since.{what}: this channel reads several streams; give the composite {what} of the subscribe "
                "reply (label=value parts joined by ','), each part moved on to the last message of its label",
            )
        parts[label] = value
    return parts


def parse_resume(op: dict[str, Any], *, composite: bool, max_last: int) -> Resume:
    """``since`` / ``last`` of a subscribe op; ``composite``: the pattern reads several streams."""
    since, last = op.get("since"), op.get("last")
    if since is not None:
        if not (
            isinstance(since, dict) and isinstance(since.get("offset"), str) and isinstance(since.get("epoch"), str)
        ):
            raise OpError("invalid_request", "since is {offset, epoch}, as a reply or message gave them")
        if last is not None:
            raise OpError("invalid_request", "give since or last, not both")
        offsets = _decompose(since["offset"], composite, "offset")
        epochs = _decompose(since["epoch"], composite, "epoch")
        for offset in offsets.values():
            try:
                offset_key(offset)
            except ValueError:
                raise OpError("invalid_request", "since.offset is not an offset this server gave") from None
        # A label with an offset but no epoch (or the reverse) cannot be resumed: it is left out.
        return Resume(since={label: (offsets[label], epochs[label]) for label in offsets if label in epochs})
    if last is not None:
        if type(last) is not int or not 1 <= last <= max_last:
            raise OpError("invalid_request", f"last is an integer from 1 to {max_last}")
        return Resume(last=last)
    return Resume()
