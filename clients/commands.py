"""A device's command handlers (API.md §3 command lifecycle, §4 ``command`` / ``command_result``).

Each ``command`` frame runs its handler in a task of its own, so a slow handler never stops acks or other
commands. The handler's return value becomes ``completed`` with that ``result``; an exception becomes
``failed`` with its message as ``error``; a command with no handler fails with an error naming the ones the
device has. The hub may write a command twice (a crash between writing it and marking it ``sent``): a
command id seen lately runs once, and its result is sent again.

Result frames have no seq, so the hub's acks cannot say which result was taken. A result sent shortly
before a connection dropped is sent again on the next one (``RESEND_S``); the hub takes a result once and
answers a repeat with ``command_ended``, which is expected and not reported.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clients.frames import check_document, command_result_frame

__all__ = ["Command", "CommandHandler", "CommandRouter"]

log = logging.getLogger("telehub.clients")

# A handler takes the command's params and returns its result (or an awaitable of it).
CommandHandler = Callable[[dict[str, Any]], Any]
# How long before a disconnect a sent result counts as possibly lost, and is sent again.
RESEND_S = 30.0
# Command ids remembered (with their results), to run a command written twice only once.
REMEMBERED = 1000
_REPEAT_CODES = frozenset({"command_ended", "unknown_command"})


@dataclass(frozen=True, slots=True)
class Command:
    command_id: str
    name: str
    params: dict[str, Any]
    expires_at: str | None = None


@dataclass(slots=True)
class _Outcome:
    # None while the handler runs.
    frame: bytes | None = None
    sent_at: float | None = None
    resent: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class CommandRouter:
    def __init__(self, wake: Callable[[], None]) -> None:
        self.handlers: dict[str, CommandHandler] = {}
        # Called when a result is ready to be sent.
        self._wake = wake
        self._outcomes: OrderedDict[str, _Outcome] = OrderedDict()
        self._unsent: deque[str] = deque()

    def register(self, name: str, handler: CommandHandler) -> None:
        self.handlers[name] = handler

    def received(self, message: dict[str, Any]) -> None:
        """A ``command`` frame from the hub."""
        command_id = message.get("command_id")
        name = message.get("command")
        if not isinstance(command_id, str) or not isinstance(name, str):
            log.warning("ignoring a malformed command frame: %r", message)
            return
        known = self._outcomes.get(command_id)
        if known is not None:
            if known.frame is not None:  # written twice: the same answer again, the handler not run again
                self._queue(command_id)
            return
        params = message.get("params")
        command = Command(command_id, name, params if isinstance(params, dict) else {}, message.get("expires_at"))
        outcome = self._outcomes[command_id] = _Outcome()
        outcome.task = asyncio.get_running_loop().create_task(self._run(command), name=f"command-{command_id}")
        while len(self._outcomes) > REMEMBERED:
            oldest, dropped = next(iter(self._outcomes.items()))
            if dropped.frame is None:  # still running: keep it
                break
            del self._outcomes[oldest]

    async def _run(self, command: Command) -> None:
        handler = self.handlers.get(command.name)
        if handler is None:
            known = ", ".join(sorted(self.handlers)) or "none"
            frame = command_result_frame(
                command.command_id, error=f"unknown command {command.name!r} (this device handles: {known})"
            )
        else:
            frame = await _answer(command, handler)
        outcome = self._outcomes.get(command.command_id)
        if outcome is not None:
            outcome.frame, outcome.task = frame, None
            self._queue(command.command_id)

    def _queue(self, command_id: str) -> None:
        if command_id not in self._unsent:
            self._unsent.append(command_id)
        self._wake()

    def next_unsent(self) -> bytes | None:
        """A result to write now (marked sent), or None."""
        while self._unsent:
            outcome = self._outcomes.get(self._unsent.popleft())
            if outcome is not None and outcome.frame is not None:
                outcome.sent_at = time.monotonic()
                return outcome.frame
        return None

    def reconnected(self) -> None:
        """A new connection: results sent shortly before the last one dropped go out again."""
        horizon = time.monotonic() - RESEND_S
        for command_id, outcome in self._outcomes.items():
            if outcome.sent_at is not None and outcome.sent_at >= horizon:
                outcome.sent_at, outcome.resent = None, True
                if command_id not in self._unsent:
                    self._unsent.append(command_id)

    def is_repeat_refusal(self, code: str, message: str) -> bool:
        """Whether an ``error`` frame without seq refuses a result this client sent again (expected)."""
        if code not in _REPEAT_CODES:
            return False
        return any(outcome.resent and command_id in message for command_id, outcome in self._outcomes.items())

    async def close(self) -> None:
        tasks = [outcome.task for outcome in self._outcomes.values() if outcome.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _answer(command: Command, handler: CommandHandler) -> bytes:
    """Run ``handler``: its value, or its exception's message, as the result frame."""
    try:
        value = handler(command.params)
        if inspect.isawaitable(value):
            value = await value
        check_document(value, "result")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.info("command %s (%s) failed: %r", command.command_id, command.name, exc)
        return command_result_frame(command.command_id, error=str(exc) or type(exc).__name__)
    return command_result_frame(command.command_id, result=value)
