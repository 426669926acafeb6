"""The Redis client type used by the stores, and how the management client is opened."""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis

__all__ = ["SOCKET_TIMEOUT_S", "StrRedis", "open_pool_client", "open_redis"]

SOCKET_TIMEOUT_S = 5.0

# redis-py's annotations cannot express decode_responses=True (replies as str, not bytes), so the stores see
# the client as Any rather than scatter casts over every reply.
StrRedis: TypeAlias = Any


def open_redis(url: str) -> StrRedis:
    """The management client: decoded strings, a bounded pool, health checks on idle connections, and a
    timeout, so that a stalled Redis turns into 503s instead of requests that hang."""
    return open_pool_client(url, decode_responses=True, max_connections=64)


def open_pool_client(url: str, *, decode_responses: bool, max_connections: int) -> Any:
    """A client whose callers wait (up to the socket timeout) for a free connection when all are busy, rather
    than fail: a burst of device connects or requests must queue, not error."""
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=decode_responses,
        max_connections=max_connections,
        timeout=SOCKET_TIMEOUT_S,
        health_check_interval=30,
        socket_timeout=SOCKET_TIMEOUT_S,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections
