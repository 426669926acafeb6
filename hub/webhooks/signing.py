"""Stripe-style signatures of webhook deliveries: ``Telehub-Signature: t=<unix>,v1=<hex>``.

``v1`` is HMAC-SHA256 keyed with the webhook's secret over ``"<t>.<body>"`` (the raw request body). ``t`` is
the time of the attempt, so a receiver can refuse old requests (replays). Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["SECRET_PREFIX", "new_secret", "sign", "signature_header", "verify"]

SECRET_PREFIX = "whsec_"
# How old a signed request a receiver accepts by default, in seconds.
TOLERANCE_S = 300


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(header: str, secret: str, body: bytes, *, now: int, tolerance_s: int = TOLERANCE_S) -> bool:
    """What a receiver does: parse ``t`` and every ``v1``, refuse a ``t`` older (or newer) than the
    tolerance, and compare in constant time."""
    parts = [item.split("=", 1) for item in header.split(",") if "=" in item]
    stamps = [value for key, value in parts if key.strip() == "t"]
    candidates = [value.strip() for key, value in parts if key.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not candidates:
        return False
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
