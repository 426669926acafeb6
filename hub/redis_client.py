"""The Redis client type used by the stores, and how clients are opened from the Redis URL.

A URL ``redis://``, ``rediss://`` or ``unix://`` is one server. ``redis+cluster://`` (``rediss+cluster://``
with TLS) is a Redis Cluster, given by one or more of its nodes (the client discovers the rest):
``redis+cluster://[[user]:password@]host:port[,host:port...][/0][?option=value...]``; the credentials and the
query options (redis-py's URL options) apply to every node, and the database can only be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import redis as sync_redis
import redis.cluster as sync_cluster
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, parse_url
from redis.commands.core import AsyncScript
from redis.exceptions import MaxConnectionsError, NoScriptError, RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub import cluster_backports

__all__ = [
    "CLUSTER_SCHEMES",
    "SOCKET_TIMEOUT_S",
    "ClusterUrl",
    "StrRedis",
    "TelehubCluster",
    "is_cluster_url",
    "open_pool_client",
    "open_redis",
    "open_sync_client",
    "parse_cluster_url",
]

SOCKET_TIMEOUT_S = 5.0
HEALTH_CHECK_INTERVAL_S = 30
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379

# redis-py's annotations cannot express decode_responses=True (replies as str, not bytes), so the stores see
# the client as Any rather than scatter casts over every reply.
StrRedis: TypeAlias = Any


@dataclass(frozen=True)
class ClusterUrl:
    """A ``redis+cluster://`` URL taken apart: the startup nodes, and the connection options of every node."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool
    options: dict[str, Any] = field(default_factory=dict)


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterUrl:
    """Parse ``redis+cluster://[[user]:password@]host:port[,host:port...][/0][?query]``; ValueError if bad."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError(f"a cluster URL starts with {' or '.join(s + '://' for s in CLUSTER_SCHEMES)}")
    tls = scheme.lower() == "rediss+cluster"
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    nodes = tuple(_host_port(item) for item in hosts.split(","))
    # The credentials, database and query options are the same for every node: let redis-py parse them from a
    # one-node URL, so the options cast exactly as they do in a redis:// URL.
    first_host, first_port = nodes[0]
    host_text = f"[{first_host}]" if ":" in first_host else first_host
    single = f"{'rediss' if tls else 'redis'}://{userinfo}{at}{host_text}:{first_port}{slash}{path}"
    options: dict[str, Any] = dict(parse_url(single + (f"?{query}" if query else "")))
    for name in ("host", "port", "connection_class"):
        options.pop(name, None)
    if options.pop("db", 0) not in (0, None):
        raise ValueError("a Redis Cluster has database 0 only")
    return ClusterUrl(nodes=nodes, tls=tls, options=options)


def _host_port(item: str) -> tuple[str, int]:
    item = item.strip()
    if not item:
        raise ValueError("a cluster URL lists its nodes as host:port,host:port")
    parsed = urlsplit(f"//{item}")
    try:
        port = parsed.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"bad port in cluster node {item!r}") from exc
    if not parsed.hostname:
        raise ValueError(f"no host in cluster node {item!r}")
    return parsed.hostname, port


def open_redis(url: str) -> StrRedis:
    """The management client: decoded strings, a bounded pool, health checks on idle connections, and a
    timeout, so that a stalled Redis turns into 503s instead of requests that hang."""
    return open_pool_client(url, decode_responses=True, max_connections=64)


def open_pool_client(url: str, *, decode_responses: bool, max_connections: int) -> Any:
    """A client whose callers wait (up to the socket timeout) for a free connection when all are busy, rather
    than fail: a burst of device connects or requests must queue, not error.

    For a cluster URL, redis-py's asyncio ``RedisCluster`` (``TelehubCluster``): at most ``max_connections``
    commands or pipelines in flight, so at most that many connections to each node; callers wait likewise.
    """
    if is_cluster_url(url):
        return _open_cluster(url, decode_responses=decode_responses, max_connections=max_connections)
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=decode_responses,
        max_connections=max_connections,
        timeout=SOCKET_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        socket_timeout=SOCKET_TIMEOUT_S,
    )
    return _OneServer.from_pool(pool)  # the client owns the pool: aclose() closes its connections


class _OneServer(Redis):
    """redis-py's client, with pipelines that call scripts without asking first (``_ScriptPipeline``)."""

    def pipeline(self, transaction: bool = True, shard_hint: Any | None = None) -> Pipeline:
        return _ScriptPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class _ScriptPipeline(Pipeline):
    """A pipeline (not a transaction) whose registered scripts go as ``EVALSHA`` at once. redis-py asks the
    server ``SCRIPT EXISTS`` before every pipeline that calls a script: one more round trip for each flush of
    the ingest loop and each command change. A script the server lacks (it restarted, or its scripts were
    flushed) answers ``NOSCRIPT`` and ran nothing; that call alone is sent again as ``EVAL`` (which also
    loads it), after the rest of the pipeline, whose other commands ran as queued."""

    async def load_scripts(self) -> None:
        if self.is_transaction or self.explicit_transaction:
            await super().load_scripts()  # type: ignore[no-untyped-call]

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.is_transaction or self.explicit_transaction or not self.scripts:
            return await super().execute(raise_on_error)
        stack = list(self.command_stack)
        bodies = {script.sha: script.script for script in self.scripts}
        replies: list[Any] = await super().execute(raise_on_error=False)
        for index, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                args, options = stack[index]
                body = bodies.get(str(args[1]))
                if body is None:
                    continue
                again = Redis(connection_pool=self.connection_pool)
                try:
                    replies[index] = await again.execute_command("EVAL", body, *args[2:], **options)  # type: ignore[no-untyped-call]
                except ResponseError as exc:  # the script's own error: the reply, as in a pipeline
                    replies[index] = exc
        if raise_on_error:
            self.raise_first_error(stack, replies)
        return replies


class _CancellableSend(Connection):
    """A connection whose write timeout is ``asyncio.timeout`` rather than redis-py's ``asyncio.wait_for``:
    Python 3.11's ``wait_for`` drops a cancellation that arrives as the write completes, and on a cluster most
    cancels of a task looping on commands landed there (measured: 250 of 300 first cancels swallowed), so a
    service loop did not stop at shutdown."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        timeout = self.socket_timeout
        if not timeout:
            await super().send_packed_command(command, check_health)
            return
        self.socket_timeout = None  # the write below is bounded by asyncio.timeout instead
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


class _CancellableSSLSend(_CancellableSend, SSLConnection):
    pass


class TelehubCluster(RedisCluster):
    """redis-py's asyncio ``RedisCluster`` with what the stores use of a one-server client.

    - Scripts in pipelines: redis-py's cluster pipeline refuses ``EVALSHA``, which a registered script called
      with ``client=pipe`` sends; here it sends ``EVAL`` with the script's text (known from
      ``register_script``), which also never meets ``NOSCRIPT`` on a node that restarted or took over.
    - ``ping()`` answers for every master, not one.
    - ``pubsub()`` and ``publish()``: the asyncio cluster client has neither. Classic pub/sub is broadcast to
      every node of a cluster, so a subscription on any one node hears every ``PUBLISH``; each call picks a
      random master, so a listener that resubscribes after losing its node finds another.
    - Connections: callers wait for one rather than fail (below).
    """

    def __init__(self, *, node_options: dict[str, Any], max_connections: int, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        connection_class = _CancellableSSLSend if kwargs.get("ssl") else _CancellableSend
        self.nodes_manager.connection_kwargs["connection_class"] = connection_class
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = connection_class
        self.script_bodies: dict[str, bytes | str] = {}
        self._node_options = node_options
        # redis-py raises MaxConnectionsError when a node's connections are all busy; callers wait here instead
        # (up to the socket timeout, as with the one-server BlockingConnectionPool): one permit per command or
        # pipeline, so no node ever has more than max_connections of this client's connections in use.
        self._permits = asyncio.Semaphore(max_connections)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.permit():
            return await super().execute_command(*args, **kwargs)

    async def _determine_slot(self, *args: Any) -> int:
        """The slot of a command; for ``XREAD`` / ``XREADGROUP`` from the keys after ``STREAMS``. redis-py
        asks a server for those keys (``COMMAND GETKEYS``): a round trip before every stream read."""
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        if name.upper() not in ("XREAD", "XREADGROUP"):
            return int(await super()._determine_slot(*args))
        words = [a.decode() if isinstance(a, bytes) else str(a) for a in args]
        # After XREADGROUP come GROUP <group> <consumer>, which could be named "streams".
        first = 4 if name.upper() == "XREADGROUP" else 1
        upper = [w.upper() for w in words[first:]]
        if "STREAMS" not in upper:
            return int(await super()._determine_slot(*args))
        start = first + upper.index("STREAMS") + 1
        keys = words[start : start + (len(words) - start) // 2]
        slots = {self.keyslot(key) for key in keys}
        if len(slots) != 1:
            raise RedisClusterException(f"{name} - all keys must map to the same key slot")  # type: ignore[no-untyped-call]
        return slots.pop()

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that arrives as the
        # permit is granted, and a task looping on commands would then not stop when cancelled.
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT_S):
                await self._permits.acquire()
        except TimeoutError:
            raise MaxConnectionsError("no Redis connection became free in time") from None
        try:
            yield
        finally:
            self._permits.release()

    def register_script(self, script: bytes | str) -> AsyncScript:  # type: ignore[override]
        registered = AsyncScript(self, script)  # type: ignore[arg-type]
        self.script_bodies[registered.sha] = script
        return registered

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise ValueError("shard_hint is not supported in cluster mode")
        return _ScriptingPipeline(self, transaction)  # type: ignore[abstract]

    async def ping(self, **kwargs: Any) -> bool:
        """PING every master (redis-py pings one node by default): the health check then fails while any
        master is unreachable, not only the one the client happens to use for keyless commands."""
        kwargs.setdefault("target_nodes", self.PRIMARIES)
        answered: bool = await self.execute_command("PING", **kwargs)
        return answered

    async def publish(self, channel: str | bytes, message: str | bytes) -> int:
        """PUBLISH through one node (the asyncio cluster client has no ``publish``); every node hears it."""
        received: int = await self.execute_command("PUBLISH", channel, message, target_nodes=self.DEFAULT_NODE)
        return received

    def pubsub(self, **kwargs: Any) -> PubSub:
        node = random.choice(self.get_primaries() or list(self.nodes_manager.startup_nodes.values()))
        return PubSub(ConnectionPool(host=node.host, port=node.port, **self._node_options), **kwargs)


class _ScriptingPipeline(ClusterPipeline):
    """A cluster pipeline in which a registered script's ``EVALSHA`` goes as ``EVAL`` (see TelehubCluster).

    Awaiting it (``await pipe.hset(...)``, as a registered script called with ``client=pipe`` does) leaves the
    queued commands alone: redis-py's cluster pipeline empties its queue when awaited, so every command queued
    before a script call would silently not run; a one-server pipeline keeps them.
    """

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        # redis-py passes ``keys`` (for client-side caching) with reads such as HGETALL; its cluster
        # transactions hand it on to the reply callbacks, which fail on it (TypeError). Not needed here.
        kwargs.pop("keys", None)
        return super().execute_command(*args, **kwargs)

    def __await__(self) -> Generator[Any, None, ClusterPipeline]:
        return self._ready().__await__()

    async def initialize(self) -> ClusterPipeline:
        # The client's topology is (re)loaded here, on the running loop: redis-py's transaction strategy would
        # otherwise load it from the thread (and throw-away event loop) it runs each queued command's slot
        # lookup in, leaving connections bound to a closed loop (leaked sockets, broken later commands).
        await self._ready()
        return await super().initialize()

    async def _ready(self) -> ClusterPipeline:
        if self.cluster_client._initialize:
            await self.cluster_client.initialize()
        return self

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = self.cluster_client
        if not isinstance(client, TelehubCluster):
            return await super().execute(raise_on_error, allow_redirections)
        async with client.permit():
            return await super().execute(raise_on_error, allow_redirections)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        client = self.cluster_client
        body = client.script_bodies.get(sha) if isinstance(client, TelehubCluster) else None
        if body is None:
            raise ValueError("EVALSHA in a cluster pipeline needs a script registered on the client")
        return self.execute_command("EVAL", body, numkeys, *keys_and_args)


def _open_cluster(url: str, *, decode_responses: bool, max_connections: int) -> TelehubCluster:
    cluster_backports.install()
    parsed = parse_cluster_url(url)
    options = {k: v for k, v in parsed.options.items() if k not in ("decode_responses", "max_connections")}
    options.setdefault("socket_timeout", SOCKET_TIMEOUT_S)
    options.setdefault("socket_connect_timeout", SOCKET_TIMEOUT_S)
    options.setdefault("health_check_interval", HEALTH_CHECK_INTERVAL_S)
    node_options = {**options, "decode_responses": decode_responses}
    if parsed.tls:
        node_options["connection_class"] = SSLConnection
    return TelehubCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
        decode_responses=decode_responses,
        max_connections=max_connections,
        ssl=parsed.tls,
        node_options=node_options,
        **options,
    )


def open_sync_client(url: str, *, decode_responses: bool = False) -> Any:
    """A synchronous client for the same URL (``redis.Redis``, or ``redis.cluster.RedisCluster`` for a
    cluster URL), with the socket timeout of the asyncio clients; for scripts, tools and tests."""
    if not is_cluster_url(url):
        return sync_redis.Redis.from_url(url, decode_responses=decode_responses, socket_timeout=SOCKET_TIMEOUT_S)
    parsed = parse_cluster_url(url)
    options = {k: v for k, v in parsed.options.items() if k != "decode_responses"}
    options.setdefault("socket_timeout", SOCKET_TIMEOUT_S)
    options.setdefault("socket_connect_timeout", SOCKET_TIMEOUT_S)
    return sync_cluster.RedisCluster(
        startup_nodes=[sync_cluster.ClusterNode(host, port) for host, port in parsed.nodes],  # type: ignore[no-untyped-call]
        decode_responses=decode_responses,
        ssl=parsed.tls,
        **options,
    )
