"""Wires the ingest side into the hub: the device gateway, its flusher, presence, and the control channel.

The hub hands ingest what it needs as plain callables (device-key lookup, presence, announcing to other
processes) and listens on the ``th:control`` pub/sub channel for session replacements and revocations made
on any process.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

import orjson
from redis.exceptions import RedisError

from hub import keys
from hub.alerts.service import Alerts
from hub.commands.service import Commands, node_channel
from hub.commands.store import CommandStore
from hub.config import HubConfig
from hub.presence import Presence
from hub.redis_client import StrRedis, open_pool_client
from hub.registry.device_keys import DeviceKeys
from ingest.aggregates import AggregationPolicy
from ingest.flusher import Flusher, FlushPolicy
from ingest.gateway import DeviceGateway, GatewaySettings
from ingest.limits import FrameLimits
from ingest.ports import DeviceIdentity
from ingest.stream_writer import StreamWriter
from ingest.tasks import cancel_and_wait

__all__ = ["DeviceIngest", "DeviceSocket"]

log = logging.getLogger("telehub.ingest")
CONTROL_RETRY_S = 1.0
# How long one wait for a control message lasts: below the Redis client's socket timeout.
CONTROL_POLL_S = 1.0


class DeviceIngest:
    """The device side of one hub process; ``start`` in the lifespan, ``drain`` before the server closes."""

    def __init__(self, config: HubConfig, redis: StrRedis, device_keys: DeviceKeys) -> None:
        self.redis = redis
        # Frames are bytes: a client that leaves replies undecoded, with its own pool.
        # A write that outlasts the timeout is retried; the store script makes the retry harmless.
        self.frames_redis: Any = open_pool_client(config.redis_url, decode_responses=False, max_connections=32)
        retention = config.retention
        self.writer = StreamWriter(self.frames_redis, retention=retention)
        self.aggregation = aggregation_policy(config)
        self.limits = FrameLimits(max_frame_bytes=config.max_frame_bytes)
        # Alert rules, evaluated over what the flusher stores (off the ack path).
        self.alerts = Alerts(redis, events_retention_ms=retention.events_ms)
        self.flusher = Flusher(
            self.writer,
            policy=FlushPolicy(interval_s=config.flush_interval_ms / 1000),
            aggregation=self.aggregation,
            alerts=self.alerts.loop,
        )
        # This process, as the registry of device connections names it (commands are routed to it).
        self.node_id = secrets.token_hex(8)
        self.presence = Presence(redis, retention=retention, node_id=self.node_id)
        self.device_keys = device_keys
        self.commands = Commands(
            redis,
            CommandStore(redis, events_retention_ms=retention.events_ms),
            node_id=self.node_id,
            sessions=lambda device: self.gateway.sessions.get(device),
        )
        self.gateway = DeviceGateway(
            authenticate=self.authenticate,
            presence=self.presence,
            flusher=self.flusher,
            writer=self.writer,
            announce=self.announce,
            settings=GatewaySettings(limits=self.limits),
            commands=self.commands,
        )
        self._control: asyncio.Task[None] | None = None
        # Others on this process that act on control messages (the dashboard fan-out).
        self.control_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._drained = False

    async def authenticate(self, token: str) -> DeviceIdentity | None:
        principal = await self.device_keys.resolve(token)
        if principal is None or principal.device_id is None:
            return None
        return DeviceIdentity(principal.org_id, principal.device_id)

    async def announce(self, message: dict[str, Any]) -> None:
        await self.redis.publish(keys.CONTROL_CHANNEL, orjson.dumps(message))

    async def start(self) -> None:
        self.alerts.loop.start()
        self.flusher.start()
        ready = asyncio.Event()
        self._control = asyncio.get_running_loop().create_task(self._listen(ready), name="control-listener")
        # Subscribed before the first device is accepted, so no replacement is missed.
        await asyncio.wait_for(ready.wait(), timeout=10)
        await self.commands.start()

    async def drain(self) -> None:
        """Store and ack what is pending, close device connections with 1012 (once; safe to call twice)."""
        if self._drained:
            return
        self._drained = True
        await self.gateway.drain()

    async def stop(self) -> None:
        await self.drain()
        await self.alerts.loop.stop()
        await self.commands.stop()
        await cancel_and_wait([self._control])
        await self.frames_redis.aclose()

    async def _listen(self, ready: asyncio.Event) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(keys.CONTROL_CHANNEL, node_channel(self.node_id))
                    ready.set()
                    while True:
                        # Bounded waits: an idle channel is not a lost one. (listen() reads with the pooled
                        # connection's socket timeout, so every quiet 5 s it failed and resubscribed, and a
                        # revocation published meanwhile was missed.) Idle connections still get health pings.
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=CONTROL_POLL_S)
                        if message is not None and message.get("type") == "message":
                            self._dispatch(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                ready.set()
                log.warning("control channel lost (%s); resubscribing in %.0f s", exc, CONTROL_RETRY_S)
                await asyncio.sleep(CONTROL_RETRY_S)

    def _dispatch(self, channel: str | bytes, data: str | bytes) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        if channel != keys.CONTROL_CHANNEL:  # this process's own channel
            self.commands.on_notice(message)
            return
        self.gateway.on_control(message)
        for listener in self.control_listeners:
            listener(message)


def aggregation_policy(config: HubConfig) -> AggregationPolicy | None:
    """The ingest loop's windows from the config; None when ``TELEHUB_AGGREGATE_RESOLUTIONS`` is empty."""
    if not config.aggregate_resolutions_ms:
        return None
    return AggregationPolicy(
        resolutions_ms=config.aggregate_resolutions_ms,
        retention_ms=config.aggregate_retention_ms,
        allowed_lateness_ms=config.aggregate_lateness_ms,
        late_horizon_ms=config.aggregate_late_horizon_ms,
        idle_timeout_ms=config.aggregate_idle_timeout_ms,
    )


class DeviceSocket:
    """The ASGI endpoint of ``/api/v1/ws/device``: hands the connection to this process's gateway."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        ingest: DeviceIngest = scope["app"].state.device_ingest
        await ingest.gateway(scope, receive, send)
