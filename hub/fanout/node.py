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

On a Redis Cluster one command reads one hash slot, and every key of an organization is in its slot
(``{org_id}``), so (``hub.slot_reads``):

- while every followed stream is in one slot (one organization's dashboards), the read blocks as above, with
  a wake stream in that slot (``th:{<tag>}:fanout:wake:<node>``, made only when a wake is sent);
- over several slots it polls: each round is one non-blocking ``XREAD`` per slot in one pipeline (one round
  trip, every node at once), and a round that found nothing waits ``POLL_S`` for the next, or less when a
  stream is followed meanwhile (``follow`` sets an event instead of writing a wake entry). Blocking per slot
  would hold one connection per organization followed, for seconds, out of the pool ingest shares.
  ``POLL_S`` trades the latency an idle stream's next entry waits (at most ``POLL_S`` plus a round trip) for
  the idle cost: ``1 / POLL_S`` pipelined rounds a second while dashboards are open, each one ``XREAD`` per
  slot followed; none when nothing is followed, and busy streams are read back to back without waiting.
  Measured with 10 ms (2 cores, local 3-master cluster): an idle Node following 2 slots uses about 8 % of a
  core, 50 slots about 18 % (redis-py's cluster pipeline is most of it); one slot, blocking, about 0.1 %.
  So the wait doubles after each empty round up to ``POLL_MAX_S`` (50 ms, a fifth of that cost when idle)
  and drops back to ``POLL_S`` as soon as a round finds entries: the first entry after a quiet spell waits
  at most 50 ms, the ones after it no more than 10 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable

from hub import slot_reads
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
# On a cluster, over several slots: the wait after a round of reads that found nothing (see above), doubled
# after each further empty round up to POLL_MAX_S, so idle dashboards cost a fifth as many rounds.
POLL_S = 0.01
POLL_MAX_S = 0.05


class Node:
    def __init__(self, broker: StreamBroker, hub: Hub) -> None:
        self.broker = broker
        self.hub = hub
        # Followed streams: source -> (position, epoch).
        self._positions: dict[Source, str] = {}
        self._epochs: dict[Source, str] = {}
        self._by_key: dict[str, Source] = {}
        # Set by follow: ends the wait for a first stream, or (polling) for the next round.
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cluster = slot_reads.is_cluster(broker.redis)
        self._name = secrets.token_hex(8)
        # The read in flight blocks on this stream too: an entry added to it ends the read. On a cluster, the
        # stream of the slot read (_wake_key_in).
        self.wake_key = f"{stream_keys.PREFIX}:fanout:wake:{self._name}"
        self._reading: str | None = None  # the wake stream of the blocking read in flight
        # The last wake entry seen of each wake stream (one per slot blocked on, so at most one per slot): a
        # wake added before the next read reached Redis still ends that read.
        self._wake_positions: dict[str, str] = {}
        # The wake streams this Node wrote, which stop() deletes.
        self._woken: set[str] = set()
        self._waking: asyncio.Task[None] | None = None
        self._poll_wait = POLL_S

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fanout-reader")

    async def stop(self) -> None:
        await cancel_and_wait([self._task, self._waking])
        if self._woken:
            with contextlib.suppress(*slot_reads.REDIS_ERRORS):
                await self.broker.redis.delete(*self._woken)

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
            if self._reading is not None and self._waking is None:
                self._waking = asyncio.get_running_loop().create_task(self._wake_read(self._reading))

    async def _wake_read(self, wake_key: str) -> None:
        """End the read in flight, so the streams followed since it began join the next one."""
        try:
            self._woken.add(wake_key)
            await self.broker.wake(wake_key)
        except slot_reads.REDIS_ERRORS as exc:  # the read ends by itself within BLOCK_MS
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
            try:
                await self._read_round()
            except slot_reads.REDIS_ERRORS as exc:
                log.warning("fan-out reader: %s; retrying in %.1f s", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def _read_round(self) -> None:
        positions = {source.key: position for source, position in self._positions.items()}
        groups = slot_reads.by_slot(positions) if self._cluster else [positions]
        wake_key = self._wake_key_in(groups)
        if wake_key is None:
            await self._poll(groups)
            return
        positions[wake_key] = self._wake_positions.get(wake_key, "0-0")
        self._reading = wake_key  # set before the first await: a follow from now on wakes this read
        try:
            replies = await self.broker.read(positions, block_ms=BLOCK_MS, count=READ_COUNT)
        finally:
            self._reading = None
        for key, entries in replies:
            if key == wake_key:
                self._wake_positions[wake_key] = entries[-1][0]
                continue
            await self._deliver(key, entries)

    def _wake_key_in(self, groups: list[dict[str, str]]) -> str | None:
        """The wake stream a blocking read of ``groups`` includes: the Node's own on a single Redis; on a
        cluster one in the slot of the only group (None: several slots, polled)."""
        if not self._cluster:
            return self.wake_key
        if len(groups) != 1:
            return None
        tag = slot_reads.tag_of(next(iter(groups[0])))
        return None if tag is None else f"{stream_keys.PREFIX}:{{{tag}}}:fanout:wake:{self._name}"

    async def _poll(self, groups: list[dict[str, str]]) -> None:
        """One non-blocking read per slot; when none found anything, wait ``POLL_S`` or until a follow."""
        self._wake.clear()
        found, error = await self.broker.poll(groups, count=READ_COUNT)
        for key, entries in found:
            await self._deliver(key, entries)
        if error is not None:
            raise error
        if found:
            self._poll_wait = POLL_S
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._poll_wait)
        self._poll_wait = min(self._poll_wait * 2, POLL_MAX_S)

    async def _deliver(self, key: str, entries: list[Entry]) -> None:
        source = self._by_key.get(key)
        if source is not None and source in self._positions:
            await self._dispatch(source, entries)

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
