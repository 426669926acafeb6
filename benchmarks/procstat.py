"""CPU time of processes and of the machine, read from ``/proc``.

A process's CPU time is ``utime + stime`` from ``/proc/<pid>/stat`` (all its threads, not its children), in
clock ticks turned into seconds. The machine's busy share comes from the first line of ``/proc/stat``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MachineTimes", "children_of", "cpu_seconds", "exe_name", "is_alive", "machine_times", "start_ticks"]

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields after the command name: [state, ppid, ...]; None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of ``pid`` so far; None when it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # Fields 14 and 15 of stat (utime, stime) are 11 and 12 here, counting from the state (field 3).
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (ticks since boot): with the pid, it names one process even after pid reuse."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def is_alive(pid: int, ticks: int) -> bool:
    """Process ``pid`` that started at ``ticks`` still runs (a zombie, exited but not reaped, does not)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X") and int(fields[19]) == ticks


def children_of(root: int) -> list[int]:
    """The running descendants of ``root`` (children, grandchildren, ...), ``root`` excluded."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def exe_name(pid: int) -> str:
    """The file name of the program ``pid`` runs ('' when unknown)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name
    except OSError:
        return ""


@dataclass(frozen=True)
class MachineTimes:
    """Cumulative CPU seconds of all cores (from ``/proc/stat``): busy, of which softirq, and total."""

    busy_s: float
    softirq_s: float
    total_s: float

    def busy_share_since(self, earlier: MachineTimes) -> float:
        """Share of all cores' time spent busy between ``earlier`` and this sample (0..1)."""
        total = self.total_s - earlier.total_s
        return 0.0 if total <= 0 else (self.busy_s - earlier.busy_s) / total

    def softirq_cores_since(self, earlier: MachineTimes, elapsed_s: float) -> float:
        """Cores spent in softirq (the kernel's network processing, charged to no process) since ``earlier``."""
        return 0.0 if elapsed_s <= 0 else (self.softirq_s - earlier.softirq_s) / elapsed_s


def machine_times() -> MachineTimes:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user/nice]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return MachineTimes(
        busy_s=(total - idle) / TICKS_PER_S, softirq_s=values[6] / TICKS_PER_S, total_s=total / TICKS_PER_S
    )
