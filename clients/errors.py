"""The SDK's exceptions, under one root.

::

    TelehubClientError
     ├── ApiError             a REST call answered with the contract's error envelope (status, code, request id)
     ├── FrameRejected        the hub refused one device frame (its ``error`` frame: seq, code, message)
     ├── BufferFull           a device's offline buffer is full (``send_nowait``; ``send`` waits instead)
     ├── SubscriptionError    the dashboard WebSocket refused an op (``error`` reply: code, message)
     └── SessionEnded         a WebSocket session ended for good: the client stops reconnecting
          └── ClientClosed    the client was closed while the operation waited
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "BufferFull",
    "ClientClosed",
    "FrameRejected",
    "SessionEnded",
    "SubscriptionError",
    "TelehubClientError",
]


class TelehubClientError(Exception):
    """The root of every error the SDK raises on purpose."""


class ApiError(TelehubClientError):
    """A REST error: the HTTP ``status`` and the envelope's ``code``, ``message``, ``request_id`` and ``details``."""

    def __init__(
        self, status: int, code: str, message: str, request_id: str | None = None, details: Any = None
    ) -> None:
        super().__init__(status, code, message, request_id)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = details

    def __str__(self) -> str:
        where = f" [{self.request_id}]" if self.request_id else ""
        return f"{self.status} {self.code}: {self.message}{where}"


class FrameRejected(TelehubClientError):
    """The hub answered a device frame with an ``error`` frame; nothing of that frame was stored.

    ``seq`` is None for errors about frames without one (a ``command_result``) or that could not be read."""

    def __init__(self, code: str, message: str, seq: int | None = None) -> None:
        super().__init__(code, message, seq)
        self.code = code
        self.message = message
        self.seq = seq

    def __str__(self) -> str:
        frame = f"frame {self.seq}" if self.seq is not None else "a frame"
        return f"{frame} rejected: {self.code}: {self.message}"


class BufferFull(TelehubClientError):
    """The device's buffer of frames not yet acked holds its maximum."""


class SubscriptionError(TelehubClientError):
    """The dashboard WebSocket answered an op with an ``error``: ``code`` is the contract's (``invalid_channel``…)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class SessionEnded(TelehubClientError):
    """The WebSocket session ended for good; the client no longer reconnects.

    ``code`` is the close code (4001 revoked or token expired, 4003 session replaced) or, for a refused
    handshake, the HTTP status (401, 403, 404); ``reason`` says why in words."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"session ended ({self.code}): {self.reason}"


class ClientClosed(SessionEnded):
    """The client was closed (``close()`` or leaving ``async with``) before this operation finished."""

    def __init__(self, reason: str = "the client was closed") -> None:
        super().__init__(1000, reason)
