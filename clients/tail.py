"""``telehub tail CHANNEL``: a channel's messages as they arrive (API.md §5, §7), through ``HubClient``.

Pretty by default, one line per message (local time, channel, the data in brief)::

    10:30:00.123  devices/sim-0001/telemetry  temp=21.53 hum=44.1

``--json`` prints each message as one JSON object per line (``channel``, ``offset``, ``epoch``, ``data``,
``gap_before``), for scripts. ``--last N`` replays the newest N messages first; ``--count N`` exits after N.
After a dropped connection the SDK resubscribes with ``since``, so nothing is missed or repeated; when the hub
cannot replay what was missed, a notice on stderr says so (and the next message has ``gap_before``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import orjson

from clients.errors import SessionEnded, SubscriptionError
from clients.hub import HubClient
from clients.preflight import ToolError, check_access, require_token, unreachable
from clients.rest import RestClient
from clients.subscription import Message, Subscription

__all__ = ["TailOptions", "describe", "json_line", "pretty_line", "run_tail"]

CHANNELS_HELP = (
    "channels are devices/{id}/telemetry, devices/{id}/aggregates/{1s|1m|1h}, devices/{id}/events, "
    "devices/{id}/commands and alerts; + matches one level, # the rest (devices/+/telemetry, devices/boiler-7/#)"
)
# The most characters of data a pretty line shows (--json shows everything).
PRETTY_DATA_CHARS = 400
WATCH_S = 0.25


@dataclass(frozen=True, kw_only=True)
class TailOptions:
    url: str
    token: str | None
    channel: str
    last: int | None = None
    count: int | None = None
    json: bool = False
    connect_timeout_s: float = 10.0


def run_tail(options: TailOptions, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    logging.getLogger("telehub.clients").setLevel(logging.CRITICAL)  # tail says what happened in its own words
    try:
        return asyncio.run(_tail(options, out, err))
    except ToolError as exc:
        err.write(f"telehub tail: {exc.message}\n")
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (| head): not an error
        with contextlib.suppress(OSError, ValueError):  # nothing more reaches it, not even the flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0


async def _tail(options: TailOptions, out: TextIO, err: TextIO) -> int:
    token = require_token(options.token, role="viewer", doing="tail")
    async with RestClient(options.url, token=token, timeout=options.connect_timeout_s) as rest:
        await check_access(rest, options.url, role="viewer", doing="subscribe to channels")

    def notice(text: str) -> None:
        err.write(f"-- {text}\n")
        err.flush()

    hub = HubClient(options.url, token, open_timeout=options.connect_timeout_s)
    try:
        try:
            await asyncio.wait_for(hub.start(), options.connect_timeout_s)
        except TimeoutError:
            raise unreachable(options.url, "no WebSocket connection to /api/v1/ws") from None
        except SessionEnded as exc:
            raise ToolError(f"the hub refused the dashboard connection: {exc.reason}") from None
        subscription = await _subscribe(hub, options, notice)
        reader = asyncio.get_running_loop().create_task(_print_messages(subscription, options, out))
        notices = _ConnectionNotices(hub, notice)
        watcher = asyncio.get_running_loop().create_task(notices.watch())
        with _cancel_on_signals(reader):
            try:
                await reader
            except asyncio.CancelledError:
                if not reader.cancelled():
                    raise
            except SessionEnded as exc:
                raise ToolError(f"the hub ended the session: {exc}") from None
            finally:
                watcher.cancel()
                notices.check()
    finally:
        await hub.close()
    return 0


async def _subscribe(hub: HubClient, options: TailOptions, notice: Callable[[str], None]) -> Subscription:
    def gap(subscription: Subscription) -> None:
        notice(
            f"gap: messages on {subscription.channel} were missed while disconnected and the hub could not "
            "replay them (history trimmed, or the stream was reset); reload what you need over REST"
        )

    try:
        return await hub.subscribe(options.channel, last=options.last, on_gap=gap)
    except SubscriptionError as exc:
        raise ToolError(
            f"cannot subscribe to {options.channel!r}: {exc.message} ({exc.code}); {CHANNELS_HELP}"
        ) from None


async def _print_messages(subscription: Subscription, options: TailOptions, out: TextIO) -> None:
    shown = 0
    format_line = json_line if options.json else pretty_line
    while options.count is None or shown < options.count:
        try:
            message = await subscription.get()
        except StopAsyncIteration:
            return
        out.write(format_line(message) + "\n")
        out.flush()
        shown += 1


class _ConnectionNotices:
    """Says when the connection drops and when it is back (the SDK resubscribes with ``since``): checked every
    ``WATCH_S`` and once more at the end, and told by the SDK's count of connections, so a drop and reconnect
    between two checks, or just before the last message, is still said."""

    def __init__(self, hub: HubClient, notice: Callable[[str], None]) -> None:
        self.hub = hub
        self.notice = notice
        self.connections = hub.connections
        self.lost = False

    def check(self) -> None:
        if not self.lost and (not self.hub.connected or self.hub.connections > self.connections):
            self.lost = True
            self.notice(f"connection lost (close code {self.hub.last_close_code}); reconnecting")
        if self.lost and self.hub.connected and self.hub.connections > self.connections:
            self.lost = False
            self.connections = self.hub.connections
            self.notice("reconnected; resuming where it stopped")

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            self.check()


@contextlib.contextmanager
def _cancel_on_signals(task: asyncio.Task[None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


# Formatting: plain functions of a message.


def json_line(message: Message) -> str:
    return orjson.dumps(
        {
            "channel": message.channel,
            "offset": message.offset,
            "epoch": message.epoch,
            "data": message.data,
            "gap_before": message.gap_before,
        }
    ).decode()


def pretty_line(message: Message) -> str:
    return f"{_clock(message)}  {message.channel}  {describe(message.data, message.channel)}"


def describe(data: Any, channel: str = "") -> str:
    """The data in brief: a telemetry frame's metrics as ``name=value``, anything else as compact JSON without
    the fields the line already shows (the channel's device id, the time)."""
    if isinstance(data, dict):
        metrics = data.get("metrics")
        if isinstance(metrics, dict) and set(data) <= {"device_id", "ts", "metrics"}:
            text = " ".join(f"{name}={_brief(value)}" for name, value in metrics.items())
        else:
            shown = {k: v for k, v in data.items() if not (k == "device_id" and f"/{v}/" in channel) and k != "ts"}
            text = _brief(shown)
    else:
        text = _brief(data)
    return text if len(text) <= PRETTY_DATA_CHARS else text[: PRETTY_DATA_CHARS - 1] + "…"


def _brief(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return orjson.dumps(value, default=repr).decode()


def _clock(message: Message) -> str:
    """The message's time, local, to the ms: its data's ``ts``, else when the hub stored it (the offset)."""
    ts = message.data.get("ts") if isinstance(message.data, dict) else None
    if not isinstance(ts, int) or isinstance(ts, bool):
        head = message.offset.split("-", 1)[0]
        ts = int(head) if head.isdigit() else None
    moment = datetime.fromtimestamp(ts / 1000) if ts is not None else datetime.now()
    return moment.strftime("%H:%M:%S.%f")[:-3]
