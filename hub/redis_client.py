"""The Redis client type used by the stores, and how the management client is opened."""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import Redis

__all__ = ["SOCKET_TIMEOUT_S", "StrRedis", "open_redis"]

SOCKET_TIMEOUT_S = 5.0

# redis-py's annotations cannot express decode_responses=True (replies as str, not bytes), so the stores see
# the client as Any rather than scatter casts over every reply.
StrRedis: TypeAlias = Any


def open_redis(url: str) -> StrRedis:
    """The management client: decoded strings, a bounded pool, health checks on idle connections, and a
    timeout, so that a stalled Redis turns into 503s instead of requests that hang."""
    return Redis.from_url(
        url, decode_responses=True, health_check_interval=30, max_connections=64, socket_timeout=SOCKET_TIMEOUT_S
    )
