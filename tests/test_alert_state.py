"""The alert state scripts (hub.alerts) on a real Redis, fed by ingest.alert_eval as the ingest loop feeds them:
trigger after for_s across flush boundaries, resolve, one open alert per (rule, device), replays, deletes."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from hub import keys
from hub.alerts import scripts, store
from hub.alerts.rules import AlertRuleStore, RuleCache, evaluated
from hub.alerts.store import AlertStore, script_keys
from hub.clock import iso_ms
from hub.fanout.channels import org_alerts
from hub.redis_client import open_pool_client
from ingest import stream_keys
from ingest.alert_eval import AlertRule, SampleTable, evaluate
from ingest.frames import Samples

ORG = "org_state"
DAY_MS = 86_400_000


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = open_pool_client(redis_url, decode_responses=True, max_connections=16)
    yield client
    await client.aclose()


@pytest.fixture
def alerts(redis: Any) -> AlertStore:
    return AlertStore(redis, events_retention_ms=30 * DAY_MS)


@pytest.fixture
def rules(redis: Any, alerts: AlertStore) -> AlertRuleStore:
    return AlertRuleStore(redis, alerts)


async def make_rule(rules: AlertRuleStore, **fields: Any) -> AlertRule:
    body = {"name": "hot", "metric": "temp", "op": "gt", "threshold": 50.0, "device_id": None, "device_type": None}
    body |= {"for_s": 0, "severity": "major", **fields}
    return evaluated(await rules.create(ORG, **body))


async def feed(alerts: AlertStore, rule: AlertRule, samples: list[tuple[str, int, float]]) -> dict[str, str]:
    """One flush of (device, ts, value) samples of metric temp through evaluation and the apply script."""
    frames = [(device, Samples.point(ts, ("temp",), [value])) for device, ts, value in samples]
    found = evaluate(SampleTable.gather(frames, {"temp"}), [rule])
    if not found:
        return {}
    return (await alerts.apply({ORG: found}))[ORG]


async def all_alerts(alerts: AlertStore, status: str | None = None) -> list[dict[str, Any]]:
    found, total = await alerts.page(ORG, status, limit=100, offset=0)
    assert len(found) == total
    return [store.public_alert(f) for f in reversed(found)]  # oldest first


def reference(samples: list[tuple[int, float]], threshold: float, for_s: int) -> list[tuple[str, float, str | None]]:
    """The contract's semantics, one sample at a time: (triggered_at, value, resolved_at) of each alert."""
    made: list[tuple[str, float, str | None]] = []
    pending: int | None = None
    open_alert: tuple[str, float] | None = None
    for ts, value in sorted(samples):
        if value > threshold:
            pending = ts if pending is None else pending
            if open_alert is None and ts - pending >= for_s * 1000:
                open_alert = (iso_ms(ts), value)
        else:
            pending = None
            if open_alert is not None:
                made.append((*open_alert, iso_ms(ts)))
                open_alert = None
    if open_alert is not None:
        made.append((*open_alert, None))
    return made


@pytest.mark.parametrize("seed", range(12))
async def test_random_streams_in_random_flushes_match_the_one_sample_at_a_time_semantics(
    alerts: AlertStore, rules: AlertRuleStore, seed: int
) -> None:
    rng = random.Random(seed)
    for_s = rng.choice([0, 1, 3, 7])
    rule = await make_rule(rules, for_s=for_s)
    devices = ["d1", "d2", "d3"]
    streams: dict[str, list[tuple[int, float]]] = {}
    for device in devices:
        ts = 1_763_800_000_000 + rng.randrange(1000)
        hot = rng.random() < 0.5
        samples = []
        for _ in range(rng.randrange(20, 120)):
            ts += rng.choice([1, 200, 700, 1000, 2500])
            hot = hot if rng.random() < 0.8 else not hot
            samples.append((ts, rng.uniform(51, 99) if hot else rng.uniform(0, 50)))
        streams[device] = samples
    # Consecutive flushes of random size; within a flush the samples arrive in any order.
    cursors = dict.fromkeys(devices, 0)
    while any(cursors[d] < len(streams[d]) for d in devices):
        flush: list[tuple[str, int, float]] = []
        for device in devices:
            take = rng.choice([0, 1, 1, 2, 5, 30])
            flush += [(device, ts, v) for ts, v in streams[device][cursors[device] : cursors[device] + take]]
            cursors[device] += take
        rng.shuffle(flush)
        await feed(alerts, rule, flush)
    made = await all_alerts(alerts)
    for device in devices:
        got = [(a["triggered_at"], a["value"], a["resolved_at"]) for a in made if a["device_id"] == device]
        assert got == reference(streams[device], 50.0, for_s), device
    active = await all_alerts(alerts, "active")
    assert len({a["device_id"] for a in active}) == len(active)  # one open alert per (rule, device)


async def test_for_s_counts_sample_time_across_flushes(alerts: AlertStore, rules: AlertRuleStore, redis: Any) -> None:
    rule = await make_rule(rules, for_s=10)
    t0 = 1_763_800_000_000
    await feed(alerts, rule, [("a", t0, 60.0), ("a", t0 + 4000, 61.0)])
    await feed(alerts, rule, [("a", t0 + 8000, 62.0)])
    assert await all_alerts(alerts) == []
    # The flush that reaches 10 s: its first sample at or after t0 + 10 s is the trigger, found in the prefix.
    await feed(alerts, rule, [("a", t0 + 9000 + i * 500, 70.0 + i) for i in range(6)])
    (alert,) = await all_alerts(alerts)
    assert alert["triggered_at"] == iso_ms(t0 + 10_000) and alert["value"] == 72.0
    assert alert["status"] == "active" and alert["resolved_at"] is None
    # Still holding: nothing new. Then a false sample resolves it at its ts.
    await feed(alerts, rule, [("a", t0 + 20_000, 99.0)])
    await feed(alerts, rule, [("a", t0 + 21_000, 10.0), ("a", t0 + 22_000, 99.0)])
    (alert,) = await all_alerts(alerts)
    assert alert["status"] == "resolved" and alert["resolved_at"] == iso_ms(t0 + 21_000)
    assert await redis.hget(keys.alert_state(ORG, rule.id), "a") is not None  # pending again since 22 s
    await feed(alerts, rule, [("a", t0 + 23_000, 0.0)])
    assert await redis.hget(keys.alert_state(ORG, rule.id), "a") == f",,{t0 + 23_000}"  # idle: only seen
    await feed(alerts, rule, [("a", t0 + 24_000, 0.0)])
    assert await redis.hget(keys.alert_state(ORG, rule.id), "a") == f",,{t0 + 23_000}"  # and no more writes
    await feed(alerts, rule, [("never", t0, 0.0)])
    assert await redis.hget(keys.alert_state(ORG, rule.id), "never") is None


async def test_streams_and_events_carry_each_change(alerts: AlertStore, rules: AlertRuleStore, redis: Any) -> None:
    rule = await make_rule(rules, severity="critical")
    await feed(alerts, rule, [("boiler-7", 1_763_800_000_123, 0.1 + 50.2), ("boiler-7", 1_763_800_000_500, 3.0)])
    (alert,) = await all_alerts(alerts)
    assert alert["value"] == 0.1 + 50.2  # the shortest text that reads back as the same double
    channel = [orjson.loads(fields["p"]) for _, fields in await redis.xrange(org_alerts(ORG))]
    assert [m["type"] for m in channel] == ["alert.triggered", "alert.resolved"]
    assert channel[0] == {**alert, "type": "alert.triggered", "status": "active", "resolved_at": None}
    assert channel[1] == {**alert, "type": "alert.resolved"}
    events = await redis.xrange(stream_keys.org_log(ORG))
    assert [(f["e"], f["d"], f["b"]) for _, f in events] == [
        ("alert.triggered", "boiler-7", "0"),
        ("alert.resolved", "boiler-7", "0"),
    ]
    payload = orjson.loads(events[1][1]["f"])
    assert payload["alert_id"] == alert["id"] and payload["rule_id"] == rule.id and payload["severity"] == "critical"
    assert payload["triggered_at"] == "2025-11-22T08:26:40.123Z" and payload["resolved_at"] == alert["resolved_at"]


async def test_lua_dates_match_pythons(redis: Any) -> None:
    probe = redis.register_script(
        scripts._COMMON + "local out = {} for _, ms in ipairs(cmsgpack.unpack(ARGV[5])) "
        "do out[#out + 1] = iso(ms) end return out"
    )
    import msgpack

    moments = [0, 999, 951_782_400_000, 951_868_799_999, 4_107_542_400_000, 1_763_800_000_123, 253_402_300_799_999]
    moments += [random.Random(1).randrange(0, 4_102_444_800_000) for _ in range(200)]
    got = await probe(keys=script_keys(ORG), args=["0", "", 1, "", msgpack.packb(moments)])
    assert got == [iso_ms(ms) for ms in moments]


async def test_older_samples_and_replays_change_nothing(alerts: AlertStore, rules: AlertRuleStore) -> None:
    rule = await make_rule(rules)
    t0 = 1_763_800_000_000
    flush = [("a", t0, 60.0), ("a", t0 + 1000, 61.0)]
    await feed(alerts, rule, flush)
    await feed(alerts, rule, flush)  # the same flush again (a retried apply whose reply was lost)
    # A backfill from before: its false sample must not resolve the open alert.
    await feed(alerts, rule, [("a", t0 - 60_000, 1.0), ("a", t0 - 59_000, 70.0)])
    (alert,) = await all_alerts(alerts)
    assert alert["status"] == "active" and alert["triggered_at"] == iso_ms(t0)
    # Resolved, idle: a late sample from before the resolve (another process's, applied after) opens nothing.
    await feed(alerts, rule, [("a", t0 + 5000, 1.0)])
    await feed(alerts, rule, [("a", t0 + 4000, 99.0)])
    assert [a["status"] for a in await all_alerts(alerts)] == ["resolved"]
    await feed(alerts, rule, [("a", t0 + 6000, 99.0)])
    assert [a["status"] for a in await all_alerts(alerts)] == ["resolved", "active"]


async def test_type_rules_are_checked_against_the_registry(
    alerts: AlertStore, rules: AlertRuleStore, redis: Any
) -> None:
    await redis.hset(keys.device(ORG, "b1"), mapping={"id": "b1", "type": "boiler"})
    await redis.hset(keys.device(ORG, "p1"), mapping={"id": "p1", "type": "pump"})
    rule = await make_rule(rules, device_type="boiler")
    learned = await feed(alerts, rule, [("b1", 1000, 99.0), ("p1", 1000, 99.0), ("ghost", 1000, 99.0)])
    assert learned == {"b1": "boiler", "p1": "pump", "ghost": ""}
    assert [a["device_id"] for a in await all_alerts(alerts)] == ["b1"]


async def test_acknowledge_then_resolve(alerts: AlertStore, rules: AlertRuleStore, redis: Any) -> None:
    rule = await make_rule(rules)
    await feed(alerts, rule, [("a", 1000, 99.0)])
    (alert,) = await all_alerts(alerts)
    result = await alerts.acknowledge(ORG, alert["id"])
    assert result.made and result.fields["status"] == "acknowledged" and result.fields["acknowledged_at"]
    again = await alerts.acknowledge(ORG, alert["id"])
    assert not again.made and again.status == "acknowledged"
    # Acknowledged is still the open alert: a condition that keeps holding makes no second one.
    await feed(alerts, rule, [("a", 2000, 99.0)])
    assert [a["status"] for a in await all_alerts(alerts)] == ["acknowledged"]
    await feed(alerts, rule, [("a", 3000, 1.0)])
    assert [a["status"] for a in await all_alerts(alerts)] == ["resolved"]
    assert (await alerts.acknowledge(ORG, alert["id"])).status == "resolved"
    assert (await alerts.acknowledge(ORG, "alr_nope")).status == "missing"
    kinds = [f["e"] for _, f in await redis.xrange(stream_keys.org_log(ORG))]
    assert kinds == ["alert.triggered", "alert.acknowledged", "alert.resolved"]


async def test_deleting_a_rule_resolves_its_open_alerts_and_stops_it(
    alerts: AlertStore, rules: AlertRuleStore, redis: Any
) -> None:
    rule = await make_rule(rules)
    other = await make_rule(rules, metric="temp", threshold=10.0)
    await feed(alerts, rule, [("a", 1000, 99.0), ("b", 1000, 99.0)])
    await feed(alerts, other, [("a", 1000, 99.0)])
    assert await rules.delete(ORG, rule.id) == 2
    assert await rules.delete(ORG, rule.id) is None
    statuses = {(a["rule_id"], a["device_id"]): a["status"] for a in await all_alerts(alerts)}
    assert statuses == {(rule.id, "a"): "resolved", (rule.id, "b"): "resolved", (other.id, "a"): "active"}
    assert not await redis.exists(keys.alert_state(ORG, rule.id))
    # Summaries made from an older copy of the rules are ignored.
    await feed(alerts, rule, [("a", 5000, 1.0), ("a", 6000, 99.0)])
    assert len(await all_alerts(alerts)) == 3


async def test_deleting_a_device_resolves_its_open_alerts_and_drops_its_state(
    alerts: AlertStore, rules: AlertRuleStore, redis: Any
) -> None:
    rule = await make_rule(rules)
    other = await make_rule(rules, threshold=10.0, for_s=60)
    await feed(alerts, rule, [("a", 1000, 99.0), ("b", 1000, 99.0)])
    await feed(alerts, other, [("a", 1000, 99.0)])  # pending only: state, no alert
    (a_alert,) = [a for a in await all_alerts(alerts) if a["device_id"] == "a"]
    assert (await alerts.acknowledge(ORG, a_alert["id"])).made
    alerts.clock = lambda: 1_763_800_000_123
    assert await alerts.device_deleted(ORG, "a") == 1
    statuses = {(a["rule_id"], a["device_id"]): a for a in await all_alerts(alerts)}
    assert statuses[rule.id, "a"]["status"] == "resolved" and statuses[rule.id, "b"]["status"] == "active"
    assert statuses[rule.id, "a"]["resolved_at"] == iso_ms(1_763_800_000_123)
    assert statuses[rule.id, "a"]["acknowledged_at"] is not None
    assert await redis.hkeys(keys.alert_state(ORG, rule.id)) == ["b"]
    assert not await redis.exists(keys.alert_state(ORG, other.id))
    assert await redis.zrange(keys.alert_index(ORG, "acknowledged"), 0, -1) == []
    events = [(f["e"], f["d"]) for _, f in await redis.xrange(stream_keys.org_log(ORG))]
    assert events == [
        ("alert.triggered", "a"),
        ("alert.triggered", "b"),
        ("alert.acknowledged", "a"),
        ("alert.resolved", "a"),
    ]
    channel = orjson.loads((await redis.xrange(org_alerts(ORG)))[-1][1]["p"])
    assert channel == {**statuses[rule.id, "a"], "type": "alert.resolved"}
    assert await alerts.device_deleted(ORG, "a") == 0  # again, or a device never seen: nothing changes
    assert await alerts.device_deleted(ORG, "never") == 0
    assert len(await redis.xrange(stream_keys.org_log(ORG))) == len(events)
    # A device with the same id starts from no state: even a sample older than the last one seen counts.
    await feed(alerts, rule, [("a", 500, 99.0)])
    fresh = [a for a in await all_alerts(alerts, "active") if a["device_id"] == "a"]
    assert [a["triggered_at"] for a in fresh] == [iso_ms(500)]


async def test_only_the_newest_resolved_alerts_are_kept(
    alerts: AlertStore, rules: AlertRuleStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "MAX_RESOLVED", 3)
    rule = await make_rule(rules)
    await feed(alerts, rule, [("a", 1000 * i, 99.0 if i % 2 else 1.0) for i in range(1, 12)])
    await feed(alerts, rule, [("a", 20_000, 99.0)])
    found = await all_alerts(alerts)
    assert [a["status"] for a in found] == ["resolved"] * 3 + ["active"]
    assert [a["triggered_at"] for a in found] == [iso_ms(ms) for ms in (5000, 7000, 9000, 11_000)]


async def test_the_rule_cache_rereads_only_when_the_version_moves(rules: AlertRuleStore, redis: Any) -> None:
    now = [0.0]
    cache = RuleCache(redis, max_age_s=1.0, clock=lambda: now[0])
    assert cache.current(ORG) is None
    await cache.refresh([ORG])
    assert cache.current(ORG) == ()
    rule = await make_rule(rules)
    assert cache.current(ORG) == ()  # fresh enough: the copy is used for up to a second
    now[0] = 1.5
    assert cache.current(ORG) is None
    await cache.refresh([ORG])
    assert cache.current(ORG) == (rule,)
    cache.forget(ORG)
    assert cache.current(ORG) is None
