"""Every connection a Redis Cluster node lends goes back to it, whatever happens to the command.

redis-py 7.4's asyncio ``ClusterNode.execute_command`` and ``execute_pipeline`` take a connection from the
node's pool and give it back only once a reply was read: a write that fails (a node restarting, a write
timeout) or a task cancelled while connecting or writing (a device that hangs up while its session opens)
leaves the connection counted as in use for good. After ``max_connections`` such losses the node answers
every later command with ``MaxConnectionsError``, and only a new client recovers (redis-py issue #4110,
fixed in 8.x, which telehub cannot take: pyproject.toml says why). ``install`` replaces both methods with
ones that give the connection back in every case, as the upstream fix does. A connection is never given
back in a state that could mix up replies: redis-py's own write and read disconnect it on any error or
cancellation, and it reconnects on its next use.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import ClusterNode

__all__ = ["install"]


async def _execute_command(self: ClusterNode, *args: Any, **kwargs: Any) -> Any:
    connection = self.acquire_connection()
    try:
        await self.disconnect_if_needed(connection)
        await connection.send_packed_command(connection.pack_command(*args), False)
        return await self.parse_response(connection, args[0], **kwargs)
    finally:
        _give_back(self, connection)


async def _execute_pipeline(self: ClusterNode, commands: list[Any]) -> bool:
    connection = self.acquire_connection()
    try:
        await self.disconnect_if_needed(connection)
        await connection.send_packed_command(connection.pack_commands(cmd.args for cmd in commands), False)
        failed = False
        for cmd in commands:
            try:
                cmd.result = await self.parse_response(connection, cmd.args[0], **cmd.kwargs)
            except Exception as exc:
                cmd.result = exc
                failed = True
        return failed
    finally:
        _give_back(self, connection)


def _give_back(node: ClusterNode, connection: Any) -> None:
    """Return the connection to the node's free list (a connection marked for reconnect is disconnected on
    its next use, by ``disconnect_if_needed``)."""
    node._free.append(connection)


def install() -> None:
    """Patch redis-py's ``ClusterNode`` (once; idempotent)."""
    ClusterNode.execute_command = _execute_command  # type: ignore[method-assign]
    ClusterNode.execute_pipeline = _execute_pipeline  # type: ignore[method-assign]
