"""Commands in Redis: each a hash, indexed per device, with every status change made by one Lua script.

Keys (all in the organization's hash slot but the deadlines):

- ``th:{org}:cmd:<id>`` hash: the command. ``params`` and ``result`` are JSON text; times are kept as ISO
  strings (``created_at``, ``sent_at``, ``completed_at``, ``expires_at``) and, where scripts compare them, in
  ms (``created_ms``, ``sent_ms``);
- ``th:{org}:cmds:<device>`` sorted set: every command of the device, scored by a per-organization sequence
  (creation order, exact within a millisecond);
- ``th:{org}:cmdq:<device>`` sorted set: the device's ``queued`` commands, same scores;
- ``th:cmd-deadlines`` sorted set: ``<org>|<device>|<id>`` scored by the instant the command expires (queued, ``ttl_s``)
  or times out (sent, ``timeout_s``); any process's sweeper ends what is due.

The deadlines are global (one sweep finds every organization's due commands), so on a Redis Cluster they are
in another slot than the command and no script can write both. They are kept outside the scripts, with the
rule that a live command (queued or sent) always has its entry: the entry is written in the same round trip
as the change that sets the deadline, *before* it (``create``, ``sent``: a pipeline, sent in order), and
removed only *after* a change ended the command: by the next ``due`` read (the sweeper's, every 250 ms), in
its round trip and ahead of it, so an ended command costs no round trip of its own and is never found due.
An entry left by a crash in between is harmless: the sweep's ``due`` change finds the command ended (or not
due yet, and puts the entry at the true instant) and settles it.

Every change writes the command as the API shows it to the device's and the organization's commands streams
(the ``devices/{id}/commands`` channel: ``d`` device, ``p`` JSON) and a ``command.<status>`` event to the
organization's event log, in the same script as the change: a state shown is a state stored.
"""

from __future__ import annotations

from typing import Any

import orjson

from hub import keys
from hub.clock import iso_ms
from hub.fanout.channels import device_commands, org_commands
from hub.redis_client import StrRedis
from ingest import stream_keys

__all__ = ["DEADLINES", "MAX_QUEUED", "CommandStore", "NoDevice", "QueueFull", "Transition"]

DEADLINES = f"{stream_keys.PREFIX}:cmd-deadlines"
# Queued commands per device: a device offline for long, or a runaway client, must not grow Redis without end.
MAX_QUEUED = 1000


class QueueFull(Exception):
    """The device has ``MAX_QUEUED`` commands queued."""


class NoDevice(Exception):
    """The organization has no such device."""


# The tail of every change. KEYS: hash, device stream, org stream, org event log. ARGV[3]: events min id.
_PUBLISH = """
local function str(v) if v then return cjson.encode(v) else return 'null' end end
local function raw(v) if v then return v else return 'null' end end
local function publish(status)
  local flat = redis.call('HGETALL', KEYS[1])
  local r = {}
  for i = 1, #flat, 2 do r[flat[i]] = flat[i + 1] end
  local json = '{"command_id":' .. str(r['command_id']) .. ',"device_id":' .. str(r['device_id'])
    .. ',"command":' .. str(r['command']) .. ',"params":' .. raw(r['params']) .. ',"status":' .. str(r['status'])
    .. ',"result":' .. raw(r['result']) .. ',"error":' .. str(r['error']) .. ',"created_at":' .. str(r['created_at'])
    .. ',"sent_at":' .. str(r['sent_at']) .. ',"completed_at":' .. str(r['completed_at'])
    .. ',"expires_at":' .. str(r['expires_at']) .. '}'
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'd', r['device_id'], 'p', json)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', 'd', r['device_id'], 'p', json)
  local event = '{"type":' .. str('command.' .. status) .. ',"device_id":' .. str(r['device_id'])
    .. ',"command_id":' .. str(r['command_id']) .. ',"command":' .. str(r['command'])
    .. ',"status":' .. str(status) .. '}'
  redis.call('XADD', KEYS[4], 'MINID', '~', ARGV[3], '*', 'e', 'command.' .. status, 'd', r['device_id'],
    'b', '0', 'f', event)
  return flat
end
"""

# KEYS: hash, device stream, org stream, events, queue, device index, org sequence, device record, and the
# device's state hash when it is in the same slot (one partition: ingest/stream_keys.py).
# ARGV: deadline member (unused), now ms, events min id, now ISO, command id, device, command, params JSON,
# timeout_s, ttl_s, expires_at ISO, the most queued commands a device may have. Returns {the fields, the process
# holding the device's connection or '' (always '' without the state hash)}, or 'no_device' or 'queue_full'.
_CREATE = (
    _PUBLISH
    + """
if redis.call('HEXISTS', KEYS[8], 'id') == 0 then return 'no_device' end
local node = KEYS[9] and redis.call('HGET', KEYS[9], 'node') or ''
if redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[12]) then return 'queue_full' end
local score = redis.call('INCR', KEYS[7])
redis.call('HSET', KEYS[1], 'command_id', ARGV[5], 'device_id', ARGV[6], 'command', ARGV[7], 'params', ARGV[8],
  'status', 'queued', 'timeout_s', ARGV[9], 'ttl_s', ARGV[10], 'created_ms', ARGV[2], 'created_at', ARGV[4],
  'expires_at', ARGV[11], 'seq', score)
redis.call('ZADD', KEYS[6], score, ARGV[5])
redis.call('ZADD', KEYS[5], score, ARGV[5])
return {publish('queued'), node}
"""
)

# KEYS: hash, device stream, org stream, events, queue. ARGV: deadline member (unused), now ms, events min id,
# now ISO, change (sent | result | cancel | due), then for `result`: device, status, result JSON, error.
# Returns {1, fields after} when made, {0, what stopped it (the current status, '' if none, other_device)}; a
# `due` change for a live command not due yet returns {0, status, the instant it is due (ms)}.
_TRANSITION = (
    _PUBLISH
    + """
local now = tonumber(ARGV[2])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, ''} end
local change = ARGV[5]
local id = redis.call('HGET', KEYS[1], 'command_id')
local done
if change == 'sent' then
  if status ~= 'queued' then return {0, status} end
  redis.call('HSET', KEYS[1], 'status', 'sent', 'sent_ms', ARGV[2], 'sent_at', ARGV[4])
  redis.call('ZREM', KEYS[5], id)
  return {1, publish('sent')}
elseif change == 'result' then
  if redis.call('HGET', KEYS[1], 'device_id') ~= ARGV[6] then return {0, 'other_device'} end
  if status ~= 'queued' and status ~= 'sent' then return {0, status} end
  if status == 'queued' then
    redis.call('HSET', KEYS[1], 'status', 'sent', 'sent_ms', ARGV[2], 'sent_at', ARGV[4])
    publish('sent')
  end
  redis.call('HSET', KEYS[1], 'status', ARGV[7], 'completed_at', ARGV[4])
  if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[8]) end
  if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[9]) end
  done = ARGV[7]
elseif change == 'cancel' then
  if status ~= 'queued' then return {0, status} end
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'completed_at', ARGV[4])
  done = 'canceled'
elseif change == 'due' then
  if status == 'queued' then
    local ends = tonumber(redis.call('HGET', KEYS[1], 'created_ms'))
      + tonumber(redis.call('HGET', KEYS[1], 'ttl_s')) * 1000
    if now < ends then return {0, status, ends} end
    redis.call('HSET', KEYS[1], 'status', 'expired', 'completed_at', ARGV[4], 'error', 'not sent within ttl_s')
    done = 'expired'
  elseif status == 'sent' then
    local ends = tonumber(redis.call('HGET', KEYS[1], 'sent_ms'))
      + tonumber(redis.call('HGET', KEYS[1], 'timeout_s')) * 1000
    if now < ends then return {0, status, ends} end
    redis.call('HSET', KEYS[1], 'status', 'timed_out', 'completed_at', ARGV[4], 'error', 'no result within timeout_s')
    done = 'timed_out'
  else
    return {0, status}
  end
else
  return redis.error_reply('unknown change ' .. change)
end
redis.call('ZREM', KEYS[5], id)
return {1, publish(done)}
"""
)


# KEYS: the device's queue. ARGV: the most to return, the key prefix of the organization's commands (same
# slot). Returns the fields of the oldest queued commands (those whose hash is gone are dropped from the queue).
_QUEUED = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)) do
  local flat = redis.call('HGETALL', ARGV[2] .. id)
  if #flat == 0 then redis.call('ZREM', KEYS[1], id) else out[#out + 1] = flat end
end
return out
"""


def deadline_member(org_id: str, device_id: str, command_id: str) -> str:
    return f"{org_id}|{device_id}|{command_id}"


def _fields(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


LIVE = frozenset({"queued", "sent"})


class Transition:
    """What a change did: ``made``, with the command's fields after it; or the status that stopped it ('' when
    there is no such command), and for a live command not due yet the instant it is due (``due_ms``)."""

    __slots__ = ("due_ms", "fields", "made", "status")

    def __init__(self, reply: list[Any]) -> None:
        self.made = bool(reply[0])
        self.fields: dict[str, str] = _fields(reply[1]) if self.made else {}
        self.status: str = self.fields["status"] if self.made else str(reply[1])
        self.due_ms: int | None = int(reply[2]) if len(reply) > 2 else None

    @property
    def ended(self) -> bool:
        """The command has no deadline any more: it has ended, or is gone."""
        return self.status not in LIVE and self.status != "other_device"


class CommandStore:
    def __init__(self, redis: StrRedis, *, events_retention_ms: int) -> None:
        self.redis = redis
        self.events_retention_ms = events_retention_ms
        self._create = redis.register_script(_CREATE)
        self._transition = redis.register_script(_TRANSITION)
        self._queued = redis.register_script(_QUEUED)
        # Deadline entries of commands that ended here, removed by the next ``due`` (or ``settle``).
        self._ended: set[str] = set()

    def _keys(self, org_id: str, command_id: str, device_id: str) -> list[str]:
        return [
            keys.command(org_id, command_id),
            device_commands(org_id, device_id),
            org_commands(org_id),
            stream_keys.org_log(org_id),
            keys.command_queue(org_id, device_id),
        ]

    def _head(self, org_id: str, device_id: str, command_id: str, now: int) -> list[Any]:
        return [deadline_member(org_id, device_id, command_id), now, now - self.events_retention_ms, iso_ms(now)]

    async def create(
        self,
        org_id: str,
        device_id: str,
        command_id: str,
        *,
        command: str,
        params: Any,
        timeout_s: int,
        ttl_s: int,
        now: int,
    ) -> tuple[dict[str, str], str]:
        """The command's fields, and the process that holds the device's connection ('' if none)."""
        member = deadline_member(org_id, device_id, command_id)
        # With one partition the device's state shares the command's slot and the script reads its node; else
        # it is read after the script (not in its pipeline: on a cluster, nodes run their parts in any order,
        # and a node read before the command is queued could miss a connection that read the queue before too).
        state = stream_keys.device_state(org_id, device_id)
        same_slot = stream_keys.partitions() == 1
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(DEADLINES, {member: now + ttl_s * 1000})
            await self._create(
                keys=[
                    *self._keys(org_id, command_id, device_id),
                    keys.device_command_index(org_id, device_id),
                    keys.command_sequence(org_id),
                    keys.device(org_id, device_id),
                    *([state] if same_slot else []),
                ],
                args=[
                    *self._head(org_id, device_id, command_id, now),
                    command_id,
                    device_id,
                    command,
                    orjson.dumps(params).decode(),
                    timeout_s,
                    ttl_s,
                    iso_ms(now + ttl_s * 1000),
                    MAX_QUEUED,
                ],
                client=pipe,
            )
            _, reply = await pipe.execute()
        if not isinstance(reply, list):
            await self.redis.zrem(DEADLINES, member)
            if reply == "no_device":
                raise NoDevice(f"no device {device_id}")
            raise QueueFull(f"device {device_id} has {MAX_QUEUED} commands queued already")
        node = str(reply[1]) if same_slot else await self.redis.hget(state, "node") or ""
        return _fields(reply[0]), node

    async def transition(
        self,
        org_id: str,
        command_id: str,
        device_id: str,
        change: str,
        now: int,
        *extra: str,
        deadline_ms: int | None = None,
    ) -> Transition:
        """Make ``change``, and keep the command's deadline entry true: written before a change that sets a
        new deadline (``deadline_ms``: ``sent``), removed after one that ended the command, re-scored when a
        ``due`` change finds it not due yet."""
        member = deadline_member(org_id, device_id, command_id)
        script_keys = self._keys(org_id, command_id, device_id)
        args = [*self._head(org_id, device_id, command_id, now), change, *extra]
        if deadline_ms is None:
            reply = await self._transition(keys=script_keys, args=args)
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(DEADLINES, {member: deadline_ms})
                await self._transition(keys=script_keys, args=args, client=pipe)
                _, reply = await pipe.execute()
        transition = Transition(reply)
        if transition.ended:
            self._ended.add(member)
        elif transition.due_ms is not None:
            await self.redis.zadd(DEADLINES, {member: transition.due_ms})
        return transition

    async def settle(self) -> None:
        """Remove the deadline entries of the commands that ended here (at shutdown; else ``due`` does)."""
        ended, self._ended = self._ended, set()
        if ended:
            await self.redis.zrem(DEADLINES, *ended)

    async def get(self, org_id: str, command_id: str) -> dict[str, str] | None:
        found: dict[str, str] = await self.redis.hgetall(keys.command(org_id, command_id))
        return found or None

    async def queued(self, org_id: str, device_id: str, limit: int = 100) -> list[dict[str, str]]:
        """The fields of the device's oldest ``limit`` queued commands, oldest first, in one round trip."""
        found: list[list[str]] = await self._queued(
            keys=[keys.command_queue(org_id, device_id)], args=[limit, keys.command(org_id, "")]
        )
        return [_fields(flat) for flat in found]

    async def page(
        self, org_id: str, device_id: str, *, before: int | None, limit: int
    ) -> list[tuple[int, dict[str, str]]]:
        """Up to ``limit`` of the device's commands with their sequence, newest first, created before ``before``."""
        high = f"({before}" if before is not None else "+inf"
        ids: list[tuple[str, float]] = await self.redis.zrevrangebyscore(
            keys.device_command_index(org_id, device_id), high, "-inf", start=0, num=limit, withscores=True
        )
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for command_id, _ in ids:
                pipe.hgetall(keys.command(org_id, command_id))
            records = await pipe.execute()
        return [(int(score), record) for (_, score), record in zip(ids, records, strict=True) if record]

    async def due(self, now: int, limit: int = 100) -> list[tuple[str, str, str]]:
        """(org, device, command id) of up to ``limit`` commands whose deadline has passed; the entries of
        commands that ended here are removed first, in the same round trip."""
        ended, self._ended = self._ended, set()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                if ended:
                    pipe.zrem(DEADLINES, *ended)
                pipe.zrangebyscore(DEADLINES, "-inf", now, start=0, num=limit)
                replies = await pipe.execute()
        except BaseException:
            self._ended |= ended  # removed next time (a second ZREM of a member is harmless)
            raise
        members: list[str] = replies[-1]
        return [(parts[0], parts[1], parts[2]) for parts in (m.split("|", 2) for m in members) if len(parts) == 3]
