"""Two fixes of redis-py 8.x's asyncio cluster client, for the 7.4 that telehub runs (pyproject.toml says why).

Every connection a node lends goes back to it, whatever happens to the command. redis-py 7.4's asyncio
``ClusterNode.execute_command`` and ``execute_pipeline`` take a connection from the node's pool and give it
back only once a reply was read: a write that fails (a node restarting, a write timeout) or a task cancelled
while connecting or writing (a device that hangs up while its session opens) leaves the connection counted as
in use for good. After ``max_connections`` such losses the node answers every later command with
``MaxConnectionsError``, and only a new client recovers (redis-py issue #4110, fixed in 8.x). ``install``
replaces both methods with ones that give the connection back in every case, as the upstream fix does. A
connection is never given back in a state that could mix up replies: redis-py's own write and read disconnect
it on any error or cancellation, and it reconnects on its next use.

Commands go to the nodes of the client's node list, whose connections ``aclose`` closes. redis-py 7.4's
topology reload (``NodesManager.initialize``, run at start and again after a ``MOVED``, a failover or a
connection error) builds a new ``ClusterNode`` for every node it is told of, keeps the old one in its node
list when the name is known, but routes slots to the new one. Commands then open connections on nodes that
``aclose`` never sees, and each reload leaves up to one more connection per node open until the garbage
collector finds it (``unclosed Connection``). ``install`` wraps the reload so that slots point at the nodes of
the node list, as redis-py 8.0.1 does.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import ClusterNode, NodesManager

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


_reload = NodesManager.initialize


async def _initialize(self: NodesManager) -> None:
    await _reload(self)
    # No await between the reload's end and here: no command is routed in between.
    known = self.nodes_cache
    lists: dict[int, list[ClusterNode]] = {}  # slot ranges share one list; keep them shared
    for slot, nodes in self.slots_cache.items():
        shared = lists.get(id(nodes))
        if shared is None:
            shared = lists[id(nodes)] = [known.get(node.name, node) for node in nodes]
        self.slots_cache[slot] = shared


def install() -> None:
    """Patch redis-py's ``ClusterNode`` and ``NodesManager`` (idempotent)."""
    ClusterNode.execute_command = _execute_command  # type: ignore[method-assign]
    ClusterNode.execute_pipeline = _execute_pipeline  # type: ignore[method-assign]
    NodesManager.initialize = _initialize  # type: ignore[method-assign]
