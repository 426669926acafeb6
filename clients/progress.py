"""Live progress of ``telehub simulate``: the text of its progress line and summary, and where they are shown.

On a terminal the progress line is rewritten in place; otherwise (a pipe, a log file) each update is a line
of its own. Notices (warnings, a device's session ending) go to stderr without garbling the live line.
"""

from __future__ import annotations

import logging
from typing import TextIO

from clients.fleet import FleetSnapshot, LatencyStats

__all__ = ["NoticeHandler", "ProgressDisplay", "plural", "progress_line", "summary_lines"]

CLEAR_LINE = "\r\x1b[K"


class ProgressDisplay:
    def __init__(self, out: TextIO, err: TextIO, *, tty: bool | None = None) -> None:
        self.out = out
        self.err = err
        self.tty = out.isatty() if tty is None else tty
        # The live line on screen (terminal only).
        self._line = ""

    def show(self, line: str) -> None:
        if self.tty:
            self.out.write(CLEAR_LINE + line)
            self._line = line
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def notice(self, text: str) -> None:
        """A message on stderr; the live line is cleared first and drawn again after it."""
        if self._line:
            self.out.write(CLEAR_LINE)
            self.out.flush()
        self.err.write(text + "\n")
        self.err.flush()
        if self._line:
            self.out.write(self._line)
            self.out.flush()

    def finish(self) -> None:
        """Leave the live line on screen as it is; what is written next starts on a line of its own."""
        if self._line:
            self.out.write("\n")
            self.out.flush()
            self._line = ""


class NoticeHandler(logging.Handler):
    """Log records as notices of a ``ProgressDisplay``."""

    def __init__(self, display: ProgressDisplay) -> None:
        super().__init__()
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.display.notice(self.format(record))
        except Exception:
            self.handleError(record)


def plural(count: int, word: str) -> str:
    """``1 frame``, ``2 frames``."""
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


def _frames(count: int) -> str:
    return plural(count, "frame")


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 10 else f"{value:,.0f} ms"


def progress_line(now: FleetSnapshot, before: FleetSnapshot | None) -> str:
    """``  12.0s  10/10 online  100.0 frames/s  acked 1,190  lag 3 frames (ack p50 2.1 ms, max 9.3 ms) ...``:
    the rate and latencies over the time since ``before``."""
    span = now.elapsed_s - (before.elapsed_s if before else 0.0)
    rate = (now.acked - (before.acked if before else 0)) / span if span > 0 else 0.0
    line = (
        f"{now.elapsed_s:6.1f}s  {now.online}/{now.devices} online  {rate:,.1f} frames/s  acked {now.acked:,}"
        f"  lag {_frames(now.pending)}"
    )
    if now.recent.count:
        line += f" (ack p50 {_ms(now.recent.percentile(50))}, max {_ms(now.recent.maximum)})"
    line += f"  reconnects {now.reconnects:,}  errors {now.errors:,}"
    if now.commands:
        line += f"  commands {now.commands:,}"
    return line


def summary_lines(snapshot: FleetSnapshot, url: str) -> list[str]:
    """The final report: every frame sent is acked, rejected or not acked."""
    elapsed = max(snapshot.elapsed_s, 1e-9)
    latency: LatencyStats = snapshot.latency
    lines = [
        f"simulated {plural(snapshot.devices, 'device')} for {snapshot.elapsed_s:.1f} s against {url}",
        f"  frames       {snapshot.sent:,} sent, {snapshot.acked:,} acked ({snapshot.acked / elapsed:,.1f}/s), "
        f"{snapshot.rejected:,} rejected, {snapshot.not_acked:,} not acked",
        f"  ack latency  p50 {_ms(latency.percentile(50))}, p99 {_ms(latency.percentile(99))}, "
        f"max {_ms(latency.maximum if latency.count else None)}",
        f"  reconnects {snapshot.reconnects:,}, sessions ended {snapshot.ended:,}, "
        f"commands answered {snapshot.commands:,}",
    ]
    if snapshot.not_acked:
        lines.append(
            f"  {_frames(snapshot.not_acked)} not acked before the flush timeout, given up "
            "(the hub was unreachable or slow; a longer --flush-timeout waits more)"
        )
    return lines
