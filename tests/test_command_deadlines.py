"""The global deadline index of commands (``th:cmd-deadlines``), kept outside the scripts (so that on a Redis
Cluster no script writes two slots): a live command always has its entry at its true deadline, an ended one
loses it at the next sweep (never found due), and what a crash leaves behind is settled by the sweep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from hub import keys
from hub.commands.store import DEADLINES, CommandStore, NoDevice, deadline_member
from hub.fanout.channels import device_commands
from hub.redis_client import open_pool_client
from ingest import stream_keys

ORG, DEVICE = "org_deadlines", "valve-3"
NOW = 1_795_000_000_000
TTL_S, TIMEOUT_S = 60, 10
LATER = NOW + 10**9


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = open_pool_client(redis_url, decode_responses=True, max_connections=8)
    await client.hset(keys.device(ORG, DEVICE), mapping={"id": DEVICE})
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Any) -> CommandStore:
    return CommandStore(redis, events_retention_ms=86_400_000)


async def create(store: CommandStore, command_id: str, now: int = NOW) -> dict[str, str]:
    fields, _node = await store.create(
        ORG, DEVICE, command_id, command="open", params={"pct": 40}, timeout_s=TIMEOUT_S, ttl_s=TTL_S, now=now
    )
    return fields


async def deadline(redis: Any, command_id: str) -> float | None:
    score: float | None = await redis.zscore(DEADLINES, deadline_member(ORG, DEVICE, command_id))
    return score


async def test_a_command_has_its_ttl_then_its_timeout_then_no_deadline(store: CommandStore, redis: Any) -> None:
    await create(store, "cmd_a")
    assert await deadline(redis, "cmd_a") == NOW + TTL_S * 1000
    sent_at = NOW + 500
    sent = await store.transition(ORG, "cmd_a", DEVICE, "sent", sent_at, deadline_ms=sent_at + TIMEOUT_S * 1000)
    assert sent.made and sent.status == "sent"
    assert await deadline(redis, "cmd_a") == sent_at + TIMEOUT_S * 1000
    done = await store.transition(ORG, "cmd_a", DEVICE, "result", NOW + 900, DEVICE, "completed", '{"ok":1}', "")
    assert done.made and done.status == "completed"
    assert await store.due(LATER) == []
    assert await deadline(redis, "cmd_a") is None


async def test_cancel_and_expiry_remove_the_entry(store: CommandStore, redis: Any) -> None:
    await create(store, "cmd_c")
    await create(store, "cmd_e")
    assert (await store.transition(ORG, "cmd_c", DEVICE, "cancel", NOW + 1)).status == "canceled"
    assert await store.due(NOW + TTL_S * 1000) == [(ORG, DEVICE, "cmd_e")]
    expired = await store.transition(ORG, "cmd_e", DEVICE, "due", NOW + TTL_S * 1000)
    assert expired.made and expired.status == "expired"
    assert await store.due(LATER) == []
    assert await redis.zcard(DEADLINES) == 0


async def test_a_command_that_ended_is_not_found_due_after_its_deadline(store: CommandStore, redis: Any) -> None:
    """The entry of a command that ended goes with the sweep's next read, ahead of it: a result that came
    just before the timeout never turns into a timed_out."""
    await create(store, "cmd_t")
    await store.transition(ORG, "cmd_t", DEVICE, "sent", NOW + 1, deadline_ms=NOW + 1 + TIMEOUT_S * 1000)
    await store.transition(ORG, "cmd_t", DEVICE, "result", NOW + TIMEOUT_S * 1000, DEVICE, "completed", "1", "")
    assert await store.due(NOW + 2 * TIMEOUT_S * 1000) == []
    assert (await store.get(ORG, "cmd_t") or {})["status"] == "completed"
    assert await deadline(redis, "cmd_t") is None
    await create(store, "cmd_s")  # and an ended command whose process stops goes at its shutdown
    await store.transition(ORG, "cmd_s", DEVICE, "cancel", NOW + 2)
    await store.settle()
    assert await redis.zcard(DEADLINES) == 0


async def test_a_refused_result_keeps_the_live_commands_deadline(store: CommandStore, redis: Any) -> None:
    await create(store, "cmd_r")
    refused = await store.transition(ORG, "cmd_r", DEVICE, "result", NOW + 1, "other-device", "completed", "", "")
    assert not refused.made and refused.status == "other_device"
    assert await deadline(redis, "cmd_r") == NOW + TTL_S * 1000


async def test_a_result_before_the_sent_mark_still_shows_sent_then_completed(store: CommandStore, redis: Any) -> None:
    """The device may answer before the hub has marked the command sent (the mark follows the write): what
    dashboards and webhooks see is still queued, sent, completed, and the late mark changes nothing."""
    await create(store, "cmd_q")
    done = await store.transition(ORG, "cmd_q", DEVICE, "result", NOW + 5, DEVICE, "completed", '"ok"', "")
    assert done.made and done.status == "completed" and done.fields["sent_at"]
    late = await store.transition(ORG, "cmd_q", DEVICE, "sent", NOW + 6, deadline_ms=NOW + 6 + TIMEOUT_S * 1000)
    assert not late.made and late.status == "completed"
    shown = [orjson.loads(fields["p"])["status"] for _, fields in await redis.xrange(device_commands(ORG, DEVICE))]
    assert shown == ["queued", "sent", "completed"]
    events = [fields["e"] for _, fields in await redis.xrange(stream_keys.org_log(ORG))]
    assert events == ["command.queued", "command.sent", "command.completed"]
    assert await store.due(LATER) == []
    assert await redis.zcard(DEADLINES) == 0


async def test_no_entry_is_left_for_a_command_refused_at_creation(store: CommandStore, redis: Any) -> None:
    with pytest.raises(NoDevice):
        await store.create(
            ORG, "no-such-device", "cmd_x", command="open", params=None, timeout_s=TIMEOUT_S, ttl_s=TTL_S, now=NOW
        )
    assert await redis.zcard(DEADLINES) == 0


async def test_the_sweep_settles_what_a_crash_left(store: CommandStore, redis: Any) -> None:
    """An entry whose command ended (the process died before removing it) goes at the next sweep; an entry
    ahead of its command's deadline (written for a change that never ran) is put back at the true instant,
    and the command is not ended early."""
    crashed = CommandStore(redis, events_retention_ms=86_400_000)
    await create(crashed, "cmd_done")
    await crashed.transition(ORG, "cmd_done", DEVICE, "cancel", NOW + 1)  # its entry was to go at its next sweep
    await redis.zadd(DEADLINES, {deadline_member(ORG, DEVICE, "cmd_done"): NOW + 2})
    await create(store, "cmd_early")
    await redis.zadd(DEADLINES, {deadline_member(ORG, DEVICE, "cmd_early"): NOW + 3})

    sweep_at = NOW + 10
    for org_id, device_id, command_id in await store.due(sweep_at):
        await store.transition(org_id, command_id, device_id, "due", sweep_at)

    assert await store.due(sweep_at) == []  # the next sweep
    assert await deadline(redis, "cmd_done") is None
    assert await deadline(redis, "cmd_early") == NOW + TTL_S * 1000
    assert (await store.get(ORG, "cmd_early") or {})["status"] == "queued"
