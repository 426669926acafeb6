"""The Redis client type used by the stores, and how the management client is opened."""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import Redis

__all__ = ["StrRedis", "open_redis"]

# redis-py's annotations cannot express decode_responses=True (replies as str, not bytes), so the stores see
# the client as Any rather than scatter casts over every reply.
StrRedis: TypeAlias = Any


def open_redis(url: str) -> StrRedis:
    """The management client: decoded strings, a bounded pool, health checks on idle connections."""
    return Redis.from_url(url, decode_responses=True, health_check_interval=30, max_connections=64)
