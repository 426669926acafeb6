"""The Node (ARCHITECTURE.md, roles): reads the streams that have local subscribers and hands their
messages to the Hub.

One reader task per process follows every stream some local subscription reads (``Hub.sources``), with one
blocking ``XREAD`` over all of them, and turns each entry into channel messages (``messages``) once,
whatever the number of subscribers. A stream is followed from the position its first subscriber asked for
(``follow``) and dropped when its last one leaves. The read blocks for up to ``BLOCK_MS`` (idle dashboards
cost one read per that time, however many streams they follow); a stream followed during a read wakes it with
an entry on the Node's own wake stream, which every read includes (from the last wake entry seen, so a wake
that reaches Redis before the read still ends it), so it joins the next read at once.
Ingest never waits for any of this: it only writes the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from hub.fanout import messages
from hub.fanout.broker import Entry, StreamBroker, offset_key
from hub.fanout.channels import Source
from hub.fanout.registry import Hub
from ingest import stream_keys
from ingest.codec import FrameError
from ingest.tasks import cancel_and_wait

__all__ = ["Node"]

log = logging.getLogger("telehub.fanout")
# Under the Redis client's socket timeout (5 s), which a blocked read must not reach.
BLOCK_MS = 2_000
READ_COUNT = 1000
# Deliveries between two turns of the event loop while dispatching one read: the latency a big read adds to
# its first messages stays within a few ms of work.
YIELD_EVERY = 5_000
RETRY_S = 0.5


class Node:
    def __init__(self, broker: StreamBroker, hub: Hub) -> None:
        self.broker = broker
        self.hub = hub
        # Followed streams: source -> (position, epoch).
        self._positions: dict[Source, str] = {}
        self._epochs: dict[Source, str] = {}
        self._by_key: dict[str, Source] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The read in flight blocks on this stream too: an entry added to it ends the read.
        self.wake_key = f"{stream_keys.PREFIX}:fanout:wake:{secrets.token_hex(8)}"
        self._reading = False
        # The last wake entry seen: a wake added before the next read reached Redis still ends that read.
        self._wake_position = "0-0"
        self._waking: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fanout-reader")

    async def stop(self) -> None:
        await cancel_and_wait([self._task, self._waking])
        with contextlib.suppress(RedisError, OSError):
            await self.broker.redis.delete(self.wake_key)

    async def epoch(self, source: Source) -> str:
        epoch = self._epochs.get(source)
        if epoch is None:
            epoch = self._epochs[source] = await self.broker.epoch(source)
        return epoch

    def following(self, source: Source) -> bool:
        return source in self._positions

    def follow(self, source: Source, position: str) -> None:
        """Read ``source`` from after ``position`` on, unless it is followed already."""
        if source not in self._positions:
            self._positions[source] = position
            self._by_key[source.key] = source
            self._wake.set()
            if self._reading and self._waking is None:
                self._waking = asyncio.get_running_loop().create_task(self._wake_read())

    async def _wake_read(self) -> None:
        """End the read in flight, so the streams followed since it began join the next one."""
        try:
            await self.broker.wake(self.wake_key)
        except (RedisError, OSError) as exc:  # the read ends by itself within BLOCK_MS
            log.warning("fan-out reader: waking the read failed: %s", exc)
        finally:
            self._waking = None

    def unfollow(self, source: Source) -> None:
        if self._positions.pop(source, None) is not None:
            self._by_key.pop(source.key, None)

    async def _run(self) -> None:
        while True:
            if not self._positions:
                self._wake.clear()
                await self._wake.wait()
                continue
            positions = {source.key: position for source, position in self._positions.items()}
            positions[self.wake_key] = self._wake_position
            try:
                self._reading = True
                try:
                    replies = await self.broker.read(positions, block_ms=BLOCK_MS, count=READ_COUNT)
                finally:
                    self._reading = False
                for key, entries in replies:
                    if key == self.wake_key:
                        self._wake_position = entries[-1][0]
                        continue
                    source = self._by_key.get(key)
                    if source is not None and source in self._positions:
                        await self._dispatch(source, entries)
            except (RedisError, OSError) as exc:
                log.warning("fan-out reader: %s; retrying in %.1f s", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def _dispatch(self, source: Source, entries: list[Entry]) -> None:
        epoch = await self.epoch(source)
        delivered = 0
        for entry_id, fields in entries:
            current = self._positions.get(source)
            if current is None:
                return
            if offset_key(entry_id) <= offset_key(current):
                continue
            self._positions[source] = entry_id
            for channel, data in await channel_messages(source, entry_id, fields, self.broker.entry):
                delivered += self.hub.deliver(source, channel, entry_id, epoch, data)
            if delivered >= YIELD_EVERY:
                # Let the connections write what they were given before the rest of a large read.
                delivered = 0
                await asyncio.sleep(0)


async def channel_messages(
    source: Source,
    entry_id: str,
    fields: dict[bytes, bytes],
    fetch: Callable[[str, str], Awaitable[dict[bytes, bytes] | None]],
) -> list[messages.ChannelData]:
    """The channel messages of one stream entry of ``source`` (none for entries no channel carries)."""
    try:
        if source.kind == "telemetry":
            if source.device_id is not None:
                return messages.telemetry_messages(source.device_id, entry_id, fields)
            found = messages.org_telemetry_messages(entry_id, fields)
            if isinstance(found, messages.FrameRef):
                frame = await fetch(stream_keys.device_frames(source.org_id, found.device_id), found.frame_id)
                return messages.referenced_telemetry_messages(found, frame)
            return found
        if source.kind == "events":
            event = messages.event_message(entry_id, fields)
            return [event] if event is not None else []
        if source.kind == "aggregates":
            return [messages.aggregate_message(source.resolution or "", fields)]
        if source.kind == "commands":
            return [messages.command_message(fields)]
        return [messages.alert_message(fields)]
    except (FrameError, KeyError, ValueError) as exc:
        log.warning("fan-out: skipping unreadable entry %s of %s (%s)", entry_id, source.key, exc)
        return []
