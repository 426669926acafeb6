"""Alert rules evaluated over the samples of a flush: one numpy mask per rule, reduced to runs per device.

Pure: no I/O, no asyncio. ``SampleTable.gather`` lays an organization's stored samples out as columns (only the
metrics its rules name); ``evaluate`` sorts them by (device, ts) once, then per rule masks the rule's metric and
devices, compares against the threshold, and reduces each (rule, device) to a :class:`ConditionSummary`: the
runs of samples where the condition holds, in time order, with what the state update in Redis needs (the hub's
alert script decides trigger and resolve, since a device's state outlives a flush and a process).

A run is the samples from one where the condition holds up to the last before one where it does not. Per run:
its first sample, the first sample at which it had held ``for_s`` (``start + for_s`` or later), its last
sample, and the ts of the sample that ended it. A run that opens the flush may continue one pending from
earlier flushes; its trigger sample then depends on when that one began, which only Redis knows, so such a run
also carries its samples before ``start + for_s`` (``prefix``: little-endian float64 pairs ts, value) for the
script to search. Runs in the middle of a device's samples that trigger nothing change nothing (a false sample
came before and after them) and are left out, so a flapping signal costs a summary per alert it raises.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ingest.frames import Samples

__all__ = ["MAX_PREFIX_SAMPLES", "OPS", "AlertRule", "ConditionRun", "ConditionSummary", "SampleTable", "evaluate"]

Op = Literal["gt", "gte", "lt", "lte", "eq", "ne"]
OPS: dict[str, Callable[[npt.NDArray[np.float64], float], npt.NDArray[np.bool_]]] = {
    "gt": np.greater,
    "gte": np.greater_equal,
    "lt": np.less,
    "lte": np.less_equal,
    "eq": np.equal,
    "ne": np.not_equal,
}
# A run's samples sent for the trigger search are at most this many (16 bytes each); past them the script
# takes the run's own trigger sample or its last one.
MAX_PREFIX_SAMPLES = 4096


@dataclass(frozen=True, slots=True)
class AlertRule:
    """What evaluation needs of a rule: the condition ``metric op threshold`` on the rule's devices (one device,
    one device type, or all when both are None) holding for ``for_s`` seconds."""

    id: str
    metric: str
    op: Op
    threshold: float
    for_s: int = 0
    device_id: str | None = None
    device_type: str | None = None


@dataclass(frozen=True, slots=True)
class ConditionRun:
    """Consecutive samples (in ts order) of one device where a rule's condition holds."""

    start_ts: int
    start_value: float
    # The first sample at least for_s after start_ts; None when the run is shorter.
    trigger_ts: int | None
    trigger_value: float
    last_ts: int
    last_value: float
    # The sample after the run, where the condition does not hold; None when the run reaches the flush's end.
    ended_ts: int | None
    # Opening run with for_s > 0: (ts, value) float64 pairs of its samples before start_ts + for_s.
    prefix: bytes = b""


@dataclass(slots=True)
class ConditionSummary:
    """One (rule, device) over one flush, in time order."""

    rule_id: str
    device_id: str
    # The flush's first sample of this device does not meet the condition: its ts (it resolves, resets).
    leading_false_ts: int | None
    # The newest ts seen.
    newest_ts: int
    runs: list[ConditionRun] = field(default_factory=list)


class SampleTable:
    """An organization's samples as columns: ``device`` indexes ``devices``, ``metric`` indexes ``metrics``."""

    __slots__ = ("device", "devices", "metric", "metrics", "ts", "value")

    def __init__(
        self,
        devices: list[str],
        metrics: tuple[str, ...],
        device: npt.NDArray[np.int64],
        metric: npt.NDArray[np.int64],
        ts: npt.NDArray[np.int64],
        value: npt.NDArray[np.float64],
    ) -> None:
        self.devices, self.metrics = devices, metrics
        self.device, self.metric, self.ts, self.value = device, metric, ts, value

    @classmethod
    def gather(cls, frames: Iterable[tuple[str, Samples]], metrics: Collection[str]) -> SampleTable:
        """The samples of ``metrics`` in ``frames`` ((device id, samples) in the order stored). One-point frames
        stay Python lists until one array per column is built; larger frames are taken as arrays."""
        names = tuple(sorted(metrics))
        metric_ids = {name: i for i, name in enumerate(names)}
        device_ids: dict[str, int] = {}
        lists: tuple[list[int], list[int], list[int], list[float]] = ([], [], [], [])
        parts: list[tuple[Any, ...]] = []
        for device_id, samples in frames:
            ids = [metric_ids.get(name, -1) for name in samples.names]
            if max(ids, default=-1) < 0:
                continue
            number = device_ids.setdefault(device_id, len(device_ids))
            point = samples.lazy_point
            if point is not None:
                point_ts, values = point
                for metric_id, reading in zip(ids, values, strict=True):
                    if metric_id >= 0:
                        lists[0].append(number)
                        lists[1].append(metric_id)
                        lists[2].append(point_ts)
                        lists[3].append(reading)
                continue
            lookup = np.asarray(ids, np.int64)[samples.metric]
            keep = lookup >= 0
            kept = int(keep.sum())
            parts.append((np.full(kept, number, np.int64), lookup[keep], samples.ts[keep], samples.value[keep]))
        if lists[0]:
            parts.append(
                (
                    np.array(lists[0], np.int64),
                    np.array(lists[1], np.int64),
                    np.array(lists[2], np.int64),
                    np.array(lists[3], np.float64),
                )
            )
        if not parts:
            empty = np.empty(0, np.int64)
            return cls([], names, empty, empty, empty, np.empty(0, np.float64))
        device, metric, ts, value = (np.concatenate(column) for column in zip(*parts, strict=True))
        return cls(list(device_ids), names, device, metric, ts.astype(np.int64), value.astype(np.float64))

    def __len__(self) -> int:
        return len(self.ts)


def evaluate(
    table: SampleTable, rules: Sequence[AlertRule], *, device_type: Callable[[str], str | None] | None = None
) -> list[ConditionSummary]:
    """One summary per (rule, device) with samples of the rule's metric. ``device_type`` tells a device's type
    when known (None: unknown); a type rule is evaluated for devices of its type and those of unknown type (the
    alert script checks the type itself, so a stale answer here only costs a summary)."""
    if not len(table):
        return []
    order = np.lexsort((table.ts, table.device))  # by device, then ts; stable, so ties keep arrival order
    device, metric, ts, value = table.device[order], table.metric[order], table.ts[order], table.value[order]
    metric_ids = {name: i for i, name in enumerate(table.metrics)}
    device_ids = {name: i for i, name in enumerate(table.devices)}
    of_type: dict[str, npt.NDArray[np.bool_]] = {}
    summaries: list[ConditionSummary] = []
    for rule in rules:
        metric_id = metric_ids.get(rule.metric)
        if metric_id is None:
            continue
        mask = metric == metric_id
        if rule.device_id is not None:
            if rule.device_id not in device_ids:
                continue
            mask &= device == device_ids[rule.device_id]
        elif rule.device_type is not None:
            allowed = of_type.get(rule.device_type)
            if allowed is None:
                kinds = [None if device_type is None else device_type(d) for d in table.devices]
                allowed = of_type[rule.device_type] = np.array(
                    [kind is None or kind == rule.device_type for kind in kinds], dtype=bool
                )
            mask &= allowed[device]
        if mask.any():
            summaries += _summaries(rule, table.devices, device[mask], ts[mask], value[mask])
    return summaries


def _summaries(
    rule: AlertRule,
    devices: list[str],
    device: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    value: npt.NDArray[np.float64],
) -> list[ConditionSummary]:
    """The rule's summaries from its samples, sorted by (device, ts)."""
    holds = OPS[rule.op](value, rule.threshold)
    first = np.ones(len(ts), dtype=bool)  # a device's first sample
    first[1:] = device[1:] != device[:-1]
    last = np.ones(len(ts), dtype=bool)
    last[:-1] = first[1:]
    held_before = np.zeros(len(ts), dtype=bool)
    held_before[1:] = holds[:-1]
    held_after = np.zeros(len(ts), dtype=bool)
    held_after[:-1] = holds[1:]
    opens = holds & (first | ~held_before)
    starts = np.flatnonzero(opens)
    ends = np.flatnonzero(holds & (last | ~held_after))
    for_ms = rule.for_s * 1000
    # Per run, its first sample at least for_ms after its start.
    true_at = np.flatnonzero(holds)
    run_of = (np.cumsum(opens) - 1)[true_at]
    reached = ts[true_at] - ts[starts[run_of]] >= for_ms
    hit_runs, first_hit = np.unique(run_of[reached], return_index=True)
    trigger = np.full(len(starts), -1, np.int64)
    trigger[hit_runs] = true_at[reached][first_hit]
    # Keep a device's first and last run and every run that triggers.
    run_device = device[starts]
    first_run = np.ones(len(starts), dtype=bool)
    first_run[1:] = run_device[1:] != run_device[:-1]
    last_run = np.ones(len(starts), dtype=bool)
    last_run[:-1] = first_run[1:]
    kept = np.flatnonzero(first_run | last_run | (trigger >= 0))

    by_device: dict[int, ConditionSummary] = {}
    ts_list, value_list = ts.tolist(), value.tolist()
    for position, end in zip(np.flatnonzero(first).tolist(), np.flatnonzero(last).tolist(), strict=True):
        by_device[int(device[position])] = ConditionSummary(
            rule.id,
            devices[int(device[position])],
            None if holds[position] else ts_list[position],
            ts_list[end],
        )
    for k in kept.tolist():
        a, e, t = int(starts[k]), int(ends[k]), int(trigger[k])
        prefix = b""
        if for_ms > 0 and first[a]:
            b = a + int(np.searchsorted(ts[a : e + 1], ts_list[a] + for_ms, side="left"))
            b = min(b, a + MAX_PREFIX_SAMPLES)
            prefix = np.column_stack((ts[a:b].astype(np.float64), value[a:b])).astype("<f8").tobytes()
        by_device[int(device[a])].runs.append(
            ConditionRun(
                start_ts=ts_list[a],
                start_value=value_list[a],
                trigger_ts=ts_list[t] if t >= 0 else None,
                trigger_value=value_list[t] if t >= 0 else 0.0,
                last_ts=ts_list[e],
                last_value=value_list[e],
                ended_ts=None if last[e] else ts_list[e + 1],
                prefix=prefix,
            )
        )
    return list(by_device.values())
