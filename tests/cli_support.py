"""For the tests of ``telehub simulate`` and ``telehub tail``: the commands run as real processes (to completion,
or in the background until a signal), their output parsed, and a credential for them made over REST."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from clients import RestClient
from tests import secret_scan
from tests.clients.conftest import admin_rest
from tests.processes import STOP_TIMEOUT, TELEHUB, ServeProcess

__all__ = ["Background", "Summary", "background", "new_api_key", "summary_of"]

SUMMARY = re.compile(
    r"frames\s+(?P<sent>[\d,]+) sent, (?P<acked>[\d,]+) acked \([^)]*\), (?P<rejected>[\d,]+) rejected, "
    r"(?P<not_acked>[\d,]+) not acked"
)
COMMANDS = re.compile(r"commands answered (?P<commands>[\d,]+)")


@dataclass(frozen=True)
class Summary:
    sent: int
    acked: int
    rejected: int
    not_acked: int
    commands: int


def summary_of(output: str) -> Summary:
    """The numbers of ``telehub simulate``'s final summary (the test fails if there is none)."""
    frames, commands = SUMMARY.search(output), COMMANDS.search(output)
    assert frames and commands, f"no summary in:\n{output}"
    numbers = {k: int(v.replace(",", "")) for k, v in {**frames.groupdict(), **commands.groupdict()}.items()}
    return Summary(**numbers)


async def new_api_key(hub: ServeProcess, role: str) -> str:
    """A new API key of the bootstrap admin's organization."""
    rest: RestClient
    async with admin_rest(hub) as rest:
        key: str = (await rest.create_api_key(f"cli-{role}", role))["key"]
        return key


class Background:
    """A ``telehub`` command running in the background, its stdout and stderr going to files."""

    def __init__(self, process: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.process = process
        self.out_path = out
        self.err_path = err

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig`` and wait (bounded) for the exit code."""
        self.process.send_signal(sig)
        return self.wait()

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"telehub did not exit within {timeout:.1f} s:\n{self.stdout}\n{self.stderr}"
            ) from None


@contextlib.contextmanager
def background(*args: str, env: Mapping[str, str], directory: Path) -> Iterator[Background]:
    """``telehub ARGS`` started; killed on exit if the test left it running."""
    out, err = directory / "stdout.txt", directory / "stderr.txt"
    secret_scan.watch_cli_files([str(TELEHUB), *args], out, err, env)  # read at the end of the session
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [str(TELEHUB), *args], env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
    try:
        yield Background(process, out, err)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
