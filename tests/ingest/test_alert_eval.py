"""Alert rule evaluation over one flush's samples (ingest.alert_eval): pure numpy, no Redis."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from ingest.alert_eval import MAX_PREFIX_SAMPLES, AlertRule, ConditionRun, ConditionSummary, SampleTable, evaluate
from ingest.frames import Samples


def point(ts: int, **metrics: float) -> Samples:
    return Samples.point(ts, tuple(metrics), list(metrics.values()))


def columns(ts: list[int], **metrics: list[float]) -> Samples:
    """A columns frame: metric-major samples, as the codec lays them out."""
    names = tuple(metrics)
    count = len(ts)
    return Samples(
        np.tile(np.array(ts, np.int64), len(names)),
        np.repeat(np.arange(len(names), dtype=np.int32), count),
        np.concatenate([np.array(values, np.float64) for values in metrics.values()]),
        names,
    )


def series(device: str, values: list[float], *, start: int = 1000, step: int = 1000) -> list[tuple[str, Samples]]:
    return [(device, point(start + i * step, temp=v)) for i, v in enumerate(values)]


def run_of(summary: ConditionSummary) -> list[tuple[int, int | None, int, int | None]]:
    """(start, trigger, last, ended) of each run."""
    return [(r.start_ts, r.trigger_ts, r.last_ts, r.ended_ts) for r in summary.runs]


def only(found: list[ConditionSummary]) -> ConditionSummary:
    assert len(found) == 1, found
    return found[0]


def summarize(frames: list[tuple[str, Samples]], *rules: AlertRule, **kwargs: object) -> list[ConditionSummary]:
    return evaluate(SampleTable.gather(frames, {r.metric for r in rules}), rules, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("op", "holds"),
    [
        ("gt", [False, False, True]),
        ("gte", [False, True, True]),
        ("lt", [True, False, False]),
        ("lte", [True, True, False]),
        ("eq", [False, True, False]),
        ("ne", [True, False, True]),
    ],
)
def test_every_operator_against_the_threshold(op: str, holds: list[bool]) -> None:
    # 10, 20, 30 against 20, each between two samples where the condition does not hold.
    rule = AlertRule("r", "temp", op, 20.0)  # type: ignore[arg-type]
    filler = {"gt": 0.0, "gte": 0.0, "eq": 0.0, "lt": 100.0, "lte": 100.0, "ne": 20.0}[op]
    for index, value in enumerate([10.0, 20.0, 30.0]):
        summary = only(summarize(series("a", [filler, value, filler]), rule))
        expected = [(2000, 2000, 2000, 3000)] if holds[index] else []
        assert run_of(summary) == expected, (op, value)
        assert summary.leading_false_ts == 1000 and summary.newest_ts == 3000


def test_runs_end_at_the_first_false_sample_and_triggers_need_for_s() -> None:
    rule = AlertRule("r", "temp", "gt", 50.0, for_s=2)
    values = [60.0, 61.0, 62.0, 10.0, 70.0, 71.0, 5.0, 80.0, 81.0]
    summary = only(summarize(series("a", values), rule))
    assert summary.leading_false_ts is None and summary.newest_ts == 9000
    # 1-3 holds for 2 s (triggers at 3000); 5-6 only 1 s (a middle run that triggers nothing: left out);
    # 8-9 runs to the end of the flush, kept for the next one.
    assert run_of(summary) == [(1000, 3000, 3000, 4000), (8000, None, 9000, None)]
    first = summary.runs[0]
    assert (first.start_value, first.trigger_value, first.last_value) == (60.0, 62.0, 62.0)
    assert summary.runs[1].last_value == 81.0


def test_for_s_zero_triggers_on_the_first_sample() -> None:
    summary = only(summarize(series("a", [1.0, 9.0, 9.5, 1.0, 9.0]), AlertRule("r", "temp", "gt", 5.0)))
    assert run_of(summary) == [(2000, 2000, 3000, 4000), (5000, 5000, 5000, None)]
    assert summary.leading_false_ts == 1000


def test_samples_are_taken_in_ts_order_whatever_the_arrival_order() -> None:
    frames = series("a", [9.0, 1.0, 9.0, 9.0])
    shuffled = [frames[2], frames[0], frames[3], frames[1]]
    assert run_of(only(summarize(shuffled, AlertRule("r", "temp", "gt", 5.0, for_s=1)))) == [
        (1000, None, 1000, 2000),
        (3000, 4000, 4000, None),
    ]


def test_an_opening_run_carries_its_samples_before_start_plus_for_s() -> None:
    summary = only(summarize(series("a", [7.0, 8.0, 9.0, 10.0, 1.0]), AlertRule("r", "temp", "gt", 5.0, for_s=2)))
    run = summary.runs[0]
    assert (run.start_ts, run.trigger_ts, run.ended_ts) == (1000, 3000, 5000)
    pairs = list(struct.iter_unpack("<dd", run.prefix))
    assert pairs == [(1000.0, 7.0), (2000.0, 8.0)]
    # A run that does not open the flush starts after a false sample: nothing pending can precede it.
    later = only(summarize(series("a", [1.0, 7.0, 8.0, 9.0]), AlertRule("r", "temp", "gt", 5.0, for_s=2)))
    assert later.runs[0].prefix == b""
    # for_s 0: the run's first sample is its trigger, whatever came before.
    assert only(summarize(series("a", [7.0, 8.0]), AlertRule("r", "temp", "gt", 5.0))).runs[0].prefix == b""


def test_the_prefix_is_bounded() -> None:
    n = MAX_PREFIX_SAMPLES + 100
    frame = columns(list(range(1, n + 1)), temp=[9.0] * n)
    run = only(summarize([("a", frame)], AlertRule("r", "temp", "gt", 5.0, for_s=3600))).runs[0]
    assert len(run.prefix) == 16 * MAX_PREFIX_SAMPLES and run.trigger_ts is None and run.last_ts == n


def test_devices_are_summarized_apart_and_rules_scope_them() -> None:
    frames = [*series("a", [9.0, 9.0]), *series("b", [1.0, 9.0]), *series("c", [9.0])]
    rules = [
        AlertRule("all", "temp", "gt", 5.0),
        AlertRule("one", "temp", "gt", 5.0, device_id="b"),
        AlertRule("none", "temp", "gt", 5.0, device_id="zzz"),
        AlertRule("boilers", "temp", "gt", 5.0, device_type="boiler"),
    ]
    types = {"a": "boiler", "b": "pump"}  # c: unknown, so evaluated (the script checks its type)
    found = summarize(frames, *rules, device_type=types.get)
    by_rule: dict[str, list[str]] = {}
    for summary in found:
        by_rule.setdefault(summary.rule_id, []).append(summary.device_id)
    assert by_rule == {"all": ["a", "b", "c"], "one": ["b"], "boilers": ["a", "c"]}
    b = next(s for s in found if s.rule_id == "one")
    assert b.leading_false_ts == 1000 and run_of(b) == [(2000, 2000, 2000, None)]


def test_only_the_rules_metrics_are_read_from_mixed_frames() -> None:
    frames = [
        ("a", point(1000, hum=99.0)),
        ("a", point(2000, temp=9.0, hum=1.0)),
        ("a", columns([3000, 4000], hum=[1.0, 1.0], temp=[9.0, 1.0])),
        ("b", point(1000, rpm=5.0)),
    ]
    table = SampleTable.gather(frames, {"temp"})
    assert table.devices == ["a"] and table.metrics == ("temp",)
    assert table.ts.tolist() == [3000, 4000, 2000] and table.value.tolist() == [9.0, 1.0, 9.0]
    summary = only(evaluate(table, [AlertRule("r", "temp", "gt", 5.0, for_s=1), AlertRule("x", "rpm", "gt", 1.0)]))
    assert run_of(summary) == [(2000, 3000, 3000, 4000)]
    assert summarize([("a", point(1, hum=1.0))], AlertRule("r", "temp", "gt", 5.0)) == []


def test_nothing_holds_gives_only_the_leading_false() -> None:
    summary = only(summarize(series("a", [1.0, 2.0, 3.0]), AlertRule("r", "temp", "gt", 5.0)))
    assert summary == ConditionSummary("r", "a", 1000, 3000, [])


def test_runs_are_plain_values() -> None:
    run = only(summarize(series("a", [9.0]), AlertRule("r", "temp", "gt", 5.0))).runs[0]
    assert run == ConditionRun(1000, 9.0, 1000, 9.0, 1000, 9.0, None, b"")
    assert all(type(v) in (int, float) for v in (run.start_ts, run.start_value, run.last_ts, run.last_value))
