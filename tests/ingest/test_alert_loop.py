"""The ingest side's alert loop (ingest.alert_loop) with in-memory rules and sinks: only stored frames count,
applies are retried through Redis blips, a bug drops its summaries and the loop goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ingest.alert_eval import AlertRule, ConditionSummary
from ingest.alert_loop import AlertLoop
from ingest.batch import IngestBatch
from ingest.frames import Samples
from ingest.ports import DeviceIdentity

RULE = AlertRule("rul_1", "temp", "gt", 50.0)


class Rules:
    def __init__(self, rules: dict[str, tuple[AlertRule, ...]]) -> None:
        self.rules = rules
        self.refreshed: list[set[str]] = []

    def current(self, org_id: str) -> Sequence[AlertRule] | None:
        return self.rules.get(org_id) if self.refreshed else None

    async def refresh(self, org_ids: Collection[str]) -> None:
        self.refreshed.append(set(org_ids))


class Sink:
    """Fails as told, then records what it was given."""

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.failures = failures or []
        self.applied: list[dict[str, list[ConditionSummary]]] = []
        self.done = asyncio.Event()

    async def apply(self, summaries: Mapping[str, Sequence[ConditionSummary]]) -> dict[str, dict[str, str]]:
        if self.failures:
            raise self.failures.pop(0)
        self.applied.append({org: list(found) for org, found in summaries.items()})
        self.done.set()
        return {org: {"d1": "boiler"} for org in summaries}


def frame(batch: IngestBatch, device: str, seq: int, ts: int, temp: float, org: str = "org_a") -> None:
    samples = Samples.point(ts, ("temp",), [temp])
    batch.add(DeviceIdentity(org, device), seq, b"telemetry", b"1", b"x", None, samples)


async def run(loop: AlertLoop, sink: Sink) -> None:
    loop.start()
    await asyncio.wait_for(sink.done.wait(), 5)
    await loop.stop()


async def test_only_the_frames_the_store_kept_are_evaluated() -> None:
    sink = Sink()
    loop = AlertLoop(Rules({"org_a": (RULE,)}), sink)
    batch = IngestBatch()
    frame(batch, "d1", 4, 1000, 99.0)  # seq 4 was stored before: a resend, not evaluated again
    frame(batch, "d1", 6, 2000, 10.0)
    frame(batch, "d1", 0, 3000, 98.0)  # HTTP readings: always stored
    frame(batch, "d2", 1, 1000, 99.0)  # not in the reply: not stored by this write
    loop.submit(batch, {"org_a": {"d1": 5}})
    await run(loop, sink)
    ((summary,),) = (found for applied in sink.applied for found in applied.values())
    assert (summary.device_id, summary.leading_false_ts, summary.newest_ts) == ("d1", 2000, 3000)
    assert [(r.start_ts, r.trigger_ts) for r in summary.runs] == [(3000, 3000)]


async def test_organizations_without_rules_are_left_out_once_known() -> None:
    sink = Sink()
    rules = Rules({"org_a": (RULE,), "org_b": ()})
    loop = AlertLoop(rules, sink)
    first = IngestBatch()
    frame(first, "d1", 1, 1000, 99.0, org="org_b")
    loop.submit(first, {"org_b": {"d1": 0}})
    assert loop._queued == 1  # not known yet: queued, to be read
    rules.refreshed.append(set())
    second = IngestBatch()
    frame(second, "d1", 2, 2000, 99.0, org="org_b")
    frame(second, "d1", 1, 2000, 99.0, org="org_a")
    loop.submit(second, {"org_b": {"d1": 1}, "org_a": {"d1": 0}})
    assert loop._queued == 2
    await run(loop, sink)
    assert [set(applied) for applied in sink.applied] == [{"org_a"}]


async def test_a_redis_blip_delays_alerts_and_loses_none() -> None:
    sink = Sink([RedisConnectionError("down"), OSError("reset"), RedisConnectionError("down")])
    loop = AlertLoop(Rules({"org_a": (RULE,)}), sink, retry_initial_s=0.01)
    batch = IngestBatch()
    frame(batch, "d1", 1, 1000, 99.0)
    loop.submit(batch, {"org_a": {"d1": 0}})
    await run(loop, sink)
    assert len(sink.applied) == 1 and sink.failures == []


async def test_a_script_error_drops_its_summaries_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink([ResponseError("ERR Error running script")])
    loop = AlertLoop(Rules({"org_a": (RULE,)}), sink)
    loop.start()
    first = IngestBatch()
    frame(first, "d1", 1, 1000, 99.0)
    loop.submit(first, {"org_a": {"d1": 0}})
    await asyncio.sleep(0.05)
    second = IngestBatch()
    frame(second, "d1", 2, 2000, 10.0)
    loop.submit(second, {"org_a": {"d1": 1}})
    await asyncio.wait_for(sink.done.wait(), 5)
    await loop.stop()
    assert [s.newest_ts for applied in sink.applied for s in applied["org_a"]] == [2000]
    assert "evaluating alert rules" in caplog.text


async def test_stop_gives_up_when_redis_stays_down(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink([RedisConnectionError("down")] * 1000)
    loop = AlertLoop(Rules({"org_a": (RULE,)}), sink, retry_initial_s=0.01, retry_max_s=0.01)
    loop.start()
    batch = IngestBatch()
    frame(batch, "d1", 1, 1000, 99.0)
    loop.submit(batch, {"org_a": {"d1": 0}})
    await loop.stop(timeout_s=0.2)
    assert sink.applied == []
    assert "alerts of 1 stored samples not evaluated" in caplog.text
