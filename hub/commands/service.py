"""Commands from REST to the device and back, on whichever process holds the device's connection.

- Creating stores the command ``queued`` (``CommandStore``) and routes it: the device's record names the
  process that holds its connection (``node``, set when it connects); when that process is alive (its
  heartbeat in ``th:nodes`` is recent) it is told over its own pub/sub channel, and only it is. A device
  with no live process keeps its commands queued.
- The holding process writes each queued command to the device, oldest first, and marks it ``sent`` once the
  frame is written: on a routed notice, and whenever the device connects (``connected``). A crash between
  the write and the mark leaves the command queued, so it is written again on the next connection (the
  device may see a command twice, never a ``sent`` it was not sent).
- The device's ``command_result`` completes or fails the command (``result``), refused for another
  device's command or one that has ended.
- A sweeper on every process ends what is due: ``expired`` (queued past ``ttl_s``), ``timed_out`` (sent, no
  result within ``timeout_s``). The store's script decides, so several sweepers never end a command twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

import orjson
from redis.exceptions import RedisError

from hub import keys
from hub.clock import now_ms
from hub.commands.store import CommandStore
from hub.redis_client import StrRedis
from ingest import stream_keys
from ingest.frames import CommandResultFrame
from ingest.ports import DeviceIdentity
from ingest.session import DeviceSession
from ingest.tasks import cancel_and_wait

__all__ = ["NODE_TTL_MS", "Commands"]

log = logging.getLogger("telehub.commands")

NODES = f"{keys.PREFIX}:nodes"
HEARTBEAT_S = 5.0
# A process whose heartbeat is older than this is taken for dead: its devices' commands stay queued.
NODE_TTL_MS = 15_000
SWEEP_S = 0.25
# Queued commands read from Redis at a time while writing a device's queue.
DELIVERY_BATCH = 100
RETRY_S = 1.0
# Results are JSON in the command record: the same bound as a device event's data.
MAX_RESULT_BYTES = 64 * 1024

Sessions = Callable[[DeviceIdentity], DeviceSession | None]


def node_channel(node_id: str) -> str:
    """Pub/sub: notices for one process (commands for the devices it holds)."""
    return f"{keys.PREFIX}:node:{node_id}"


def new_command_id() -> str:
    return "cmd_" + secrets.token_urlsafe(16)


class Commands:
    """One process's side of commands: the REST operations, delivery to its devices, and its sweeper."""

    def __init__(self, redis: StrRedis, store: CommandStore, *, node_id: str, sessions: Sessions) -> None:
        self.redis = redis
        self.store = store
        self.node_id = node_id
        self.sessions = sessions
        self._locks: dict[DeviceIdentity, asyncio.Lock] = {}
        self._waiting: dict[DeviceIdentity, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()

    # Lifecycle.

    async def start(self) -> None:
        try:
            await self._beat()
        except (RedisError, OSError) as exc:  # Redis down at start: the hub still serves (503s), beats later
            log.warning("commands: no heartbeat yet (%s)", exc)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(HEARTBEAT_S, self._beat), name="commands-heartbeat"),
            loop.create_task(self._every(SWEEP_S, self.sweep), name="commands-sweeper"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait([*self._tasks, *self._pending])
        with contextlib.suppress(RedisError, OSError):
            await self.store.settle()
            await self.redis.zrem(NODES, self.node_id)

    async def _every(self, period_s: float, work: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await work()
            except (RedisError, OSError) as exc:
                log.warning("commands: %s; retrying", exc)
                await asyncio.sleep(RETRY_S)
            except Exception:
                log.exception("commands: %s failed", getattr(work, "__name__", work))

    async def _beat(self) -> None:
        await self.redis.zadd(NODES, {self.node_id: now_ms()})

    # REST.

    async def create(
        self, org_id: str, device_id: str, *, command: str, params: Any, timeout_s: int, ttl_s: int
    ) -> dict[str, str]:
        command_id = new_command_id()
        fields, node = await self.store.create(
            org_id,
            device_id,
            command_id,
            command=command,
            params=params,
            timeout_s=timeout_s,
            ttl_s=ttl_s,
            now=now_ms(),
        )
        await self.route(DeviceIdentity(org_id, device_id), node)
        return fields

    async def cancel(self, org_id: str, command_id: str, device_id: str) -> tuple[bool, dict[str, str] | None]:
        """(canceled, the command after) — not canceled when it was no longer queued."""
        change = await self.store.transition(org_id, command_id, device_id, "cancel", now_ms())
        return change.made, change.fields if change.made else await self.store.get(org_id, command_id)

    # Routing and delivery.

    async def route(self, device: DeviceIdentity, node: str | None = None) -> None:
        """Tell the process that holds ``device``'s connection (``node``, read when not given) that it has
        commands to write, if any does."""
        if node is None:
            node = await self.redis.hget(stream_keys.device_state(device.org_id, device.device_id), "node")
        if not node:
            return
        if node == self.node_id:
            self._start(self.deliver(device))
            return
        beat = await self.redis.zscore(NODES, node)
        if beat is None or beat < now_ms() - NODE_TTL_MS:
            return  # gone: the device reconnects elsewhere and gets its queue then
        notice = {"type": "commands_due", "org_id": device.org_id, "device_id": device.device_id}
        await self.redis.publish(node_channel(node), orjson.dumps(notice))

    def on_notice(self, message: dict[str, Any]) -> None:
        """A notice on this process's channel (``commands_due``)."""
        if message.get("type") != "commands_due":
            return
        org_id, device_id = message.get("org_id"), message.get("device_id")
        if isinstance(org_id, str) and isinstance(device_id, str):
            self._start(self.deliver(DeviceIdentity(org_id, device_id)))

    async def connected(self, device: DeviceIdentity) -> None:
        """The device's session opened here (ingest's ``CommandSink``): write its queue."""
        await self.deliver(device)

    async def deliver(self, device: DeviceIdentity) -> None:
        """Write the device's queued commands, oldest first, each marked sent once written. One delivery per
        device at a time, so a command is never written twice by this process; a command queued during a
        delivery has started a delivery of its own, which waits for this one and then reads the queue."""
        lock = self._locks.setdefault(device, asyncio.Lock())
        self._waiting[device] = self._waiting.get(device, 0) + 1
        try:
            async with lock:
                while (session := self.sessions(device)) is not None:
                    queued = await self.store.queued(device.org_id, device.device_id, DELIVERY_BATCH)
                    for fields in queued:
                        if not await self._send(device, session, fields):
                            return
                    if len(queued) < DELIVERY_BATCH:
                        return
        finally:
            self._waiting[device] -= 1
            if not self._waiting[device]:
                del self._waiting[device], self._locks[device]

    async def _send(self, device: DeviceIdentity, session: DeviceSession, fields: dict[str, str]) -> bool:
        """Write one queued command; False when the connection ended before it was written."""
        command_id, now = fields["command_id"], now_ms()
        if fields.get("status") != "queued":
            return True
        if now >= int(fields["created_ms"]) + int(fields["ttl_s"]) * 1000:
            await self.store.transition(device.org_id, command_id, device.device_id, "due", now)
            return True
        frame = {
            "type": "command",
            "command_id": command_id,
            "command": fields["command"],
            "params": orjson.loads(fields["params"]),
            "expires_at": fields["expires_at"],
        }
        if not await session.deliver(frame):
            return False
        sent = now_ms()
        deadline = sent + int(fields["timeout_s"]) * 1000
        await self.store.transition(device.org_id, command_id, device.device_id, "sent", sent, deadline_ms=deadline)
        return True

    async def result(self, device: DeviceIdentity, frame: CommandResultFrame) -> tuple[str, str] | None:
        """The device's answer (ingest's ``CommandSink``): None when taken, else (code, message)."""
        result = b"" if frame.result is None else orjson.dumps(frame.result)
        if len(result) > MAX_RESULT_BYTES:
            return "invalid_frame", f"result: at most {MAX_RESULT_BYTES} bytes as JSON"
        change = await self.store.transition(
            device.org_id,
            frame.command_id,
            device.device_id,
            "result",
            now_ms(),
            device.device_id,
            frame.status,
            result.decode(),
            frame.error or "",
        )
        if change.made:
            return None
        if change.status in ("", "other_device"):
            return "unknown_command", f"no command {frame.command_id} for this device"
        return "command_ended", f"command {frame.command_id} is {change.status}: its result is no longer taken"

    # Deadlines.

    async def sweep(self) -> None:
        """End the commands whose deadline has passed (expired, timed out)."""
        now = now_ms()
        for org_id, device_id, command_id in await self.store.due(now):
            await self.store.transition(org_id, command_id, device_id, "due", now)

    def _start(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, (RedisError, OSError)):
                log.warning("commands: delivery failed (%s); the commands stay queued", exc)
            else:
                log.error("commands: delivery failed", exc_info=exc)
