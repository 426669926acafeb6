"""A pytest plugin (registered in tests/conftest.py): the logs of the whole test session carry no key, token or
password (issue 10).

What it reads:

* every log record of the test process, at DEBUG: a handler on the root logger (and on loggers that do not
  propagate), with the root level lowered to DEBUG for the session so that debug records exist at all. pytest's
  own handlers (``caplog``, the "Captured log" report sections, ``--log-file``) get a filter that hides the
  records they would not have seen at the level they had before, so tests see through ``caplog`` what they saw
  without this plugin. A test that raises a level (``caplog.set_level(logging.ERROR)``) also raises it for this
  capture while it runs: records that are never created cannot be read.
* the output of the ``telehub`` processes the tests start: ``telehub serve`` logs (tests/processes.py registers
  each log file), background CLI runs (tests/cli_support.py registers their stdout and stderr files), and every
  run to completion through ``subprocess.run`` / ``communicate`` whose command is ``telehub`` or
  ``python -m benchmarks`` (which start ``telehub serve`` themselves). Not read: the log files of the servers
  those benchmark commands start, which live in their own temporary directories, removed before they return.

What it looks for (:class:`Detector`): telehub's credentials by their shape, so that it catches secrets nobody
told it about (``sk_live_…`` API keys, ``dk_…`` device keys, ``rtk_…`` registration tokens, ``whsec_…`` webhook
secrets, JWTs, ``Bearer`` credentials, passwords in URLs, quoted ``"password"``/``"token"``/``"secret"`` fields
and ``password=…`` parameters), plus the literal secrets the tests use: module constants named ``…PASSWORD``,
``…SECRET`` or ``…TOKEN`` under tests/, secret-looking values of fixtures (``HubConfig.secret``, Redis URLs'
passwords), credential variables in the environment and ``--password``/``--token`` arguments of the processes
started, and the demo login ``telehub serve --demo`` prints.

Where printing a secret is the contract, the line is not scanned (``EXCLUSIONS`` below, each with its reason).

At the end of the session every finding is printed (the line with the secret masked, and the test or file it
came from) and the session fails (exit status 1), so ``scripts/test`` exits non-zero.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "Detector",
    "Finding",
    "Hit",
    "capturing",
    "lines_to_scan",
    "note_command",
    "recording",
    "watch_cli_files",
    "watch_serve_log",
]

# Not scanned, on purpose. Each entry: what, and why printing a secret there is right.
EXCLUSIONS = {
    "serve-demo-login": "`telehub serve --demo` prints the demo organization's admin email and password to stdout "
    "(hub/cli.py _print_demo), by design: it is how the person who started the demo logs in. The block is "
    "skipped, and its password becomes a known secret that must appear nowhere else.",
    "serve-command-echo": "the `$ telehub serve …` line tests/processes.py writes at the top of each serve log is "
    "the harness's record of the arguments the test chose, not output of the hub.",
    "admin-result": "`telehub admin` prints its result as JSON on stdout, and `create-api-key`'s result is the new "
    "key (shown once, API.md §7): its stdout is scanned only for log lines (hub/cli.py's and uvicorn's formats).",
}

# The secret values the detector knows by name are at least this long (shorter ones match ordinary words).
MIN_LITERAL = 6
MAX_SHOWN_FINDINGS = 50

# Shapes of telehub's credentials (hub/registry/api_keys.py, device_keys.py, provisioning.py,
# hub/webhooks/signing.py: a prefix and 43 URL-safe characters; hub/auth/jwt_tokens.py: JWTs). A group named
# ``s`` marks the secret inside a wider match; ``shown`` is how many leading characters a masked line keeps.
_NOT_AFTER = r"(?<![A-Za-z0-9_-])"
_REDACTED = r"(?!\[redacted\]|\*\*\*|<redacted>|REDACTED)"
_CREDENTIAL_NAMES = r"(?:password|passwd|secret|token|access_token|refresh_token|api_key|device_key)"
PATTERNS: list[tuple[str, re.Pattern[str], int]] = [
    ("API key", re.compile(_NOT_AFTER + r"sk_live_[A-Za-z0-9_-]{20,}"), len("sk_live_")),
    ("device key", re.compile(_NOT_AFTER + r"dk_[A-Za-z0-9_-]{20,}"), len("dk_")),
    ("registration token", re.compile(_NOT_AFTER + r"rtk_[A-Za-z0-9_-]{20,}"), len("rtk_")),
    ("webhook secret", re.compile(_NOT_AFTER + r"whsec_[A-Za-z0-9_-]{20,}"), len("whsec_")),
    ("JWT", re.compile(_NOT_AFTER + r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"), len("eyJ")),
    ("bearer credential", re.compile(r"(?i)\bbearer\s+" + _REDACTED + r"(?P<s>[A-Za-z0-9._~+/=-]{12,})"), 0),
    ("URL password", re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s/:@]*:" + _REDACTED + r"(?P<s>[^\s/@]+)@"), 0),
    (
        "credential field",
        re.compile(r"(?i)[\"']" + _CREDENTIAL_NAMES + r"[\"']\s*:\s*[\"']" + _REDACTED + r"(?P<s>[^\"']{6,})[\"']"),
        0,
    ),
    (
        "credential parameter",
        re.compile(r"(?i)\b" + _CREDENTIAL_NAMES + r"=" + _REDACTED + r"(?P<s>[^\s&\"',;]{6,})"),
        0,
    ),
]
# A line without any of these (nor a known literal) has no secret: most lines are ruled out by this one search,
# in the lower-cased line (a case-insensitive alternation is several times slower).
CANDIDATE = re.compile(r"sk_live_|dk_|rtk_|whsec_|eyj|bearer|://|passw|secret|token|api_key|device_key")
# Names of variables, fields and options whose values are secrets.
SECRET_NAME = re.compile(r"(?i)password|passwd|secret|token|api_?key|credential")
URL_PASSWORD = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s/:@]*:(?P<s>[^\s/@]+)@")
# The line formats of logs: hub/cli.py's logging.basicConfig, and uvicorn's default and access formats.
LOG_LINE = re.compile(
    r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: "
    r"|(?:TRACE|DEBUG|INFO|WARNING|ERROR|CRITICAL):\s)"
)
DEMO_BLOCK_START = re.compile(r"^  demo organization \S+$")
DEMO_BLOCK_END = re.compile(r"^  alert rule ")
DEMO_PASSWORD = re.compile(r"^    password (?P<s>\S+)$")
SERVE_COMMAND_ECHO = re.compile(r"^\$ \S*telehub serve ")


@dataclass(frozen=True)
class Hit:
    kind: str
    start: int
    end: int
    shown: int


class Detector:
    """Finds credentials in a line: by shape, and the known literal secrets it is given."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        self._literals: set[str] = set()
        self._literal_pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        self.add(*literals)

    def add(self, *literals: str) -> None:
        """Known secrets, found anywhere; those the shapes find already (JWTs, keys) are not kept."""
        fresh = {
            s
            for s in literals
            if len(s) >= MIN_LITERAL and s.strip() == s and s not in self._literals and not self._by_shape(s)
        }
        if fresh:
            with self._lock:
                self._literals |= fresh
                ordered = sorted(self._literals, key=len, reverse=True)
                self._literal_pattern = re.compile("|".join(re.escape(s) for s in ordered))

    @property
    def literals(self) -> frozenset[str]:
        return frozenset(self._literals)

    def find(self, line: str) -> list[Hit]:
        hits = self._by_shape(line)
        literal_pattern = self._literal_pattern
        if literal_pattern is not None:
            hits.extend(Hit("known secret", m.start(), m.end(), 0) for m in literal_pattern.finditer(line))
        return _merged(hits)

    @staticmethod
    def _by_shape(line: str) -> list[Hit]:
        hits = []
        if CANDIDATE.search(line.lower()):
            for kind, pattern, shown in PATTERNS:
                for match in pattern.finditer(line):
                    group = "s" if "s" in pattern.groupindex else 0
                    hits.append(Hit(kind, match.start(group), match.end(group), shown))
        return hits

    def mask(self, line: str, hits: Sequence[Hit] | None = None) -> str:
        """The line with every secret cut to its public prefix and labelled: ``sk_live_…<API key, 51 chars>``."""
        hits = self.find(line) if hits is None else hits
        masked, last = [], 0
        for hit in hits:
            secret = line[hit.start : hit.end]
            masked += [line[last : hit.start], f"{secret[: hit.shown]}…<{hit.kind}, {len(secret)} chars>"]
            last = hit.end
        masked.append(line[last:])
        return "".join(masked)


def _merged(hits: list[Hit]) -> list[Hit]:
    """Hits by position, overlapping ones joined (the first one's kind kept)."""
    merged: list[Hit] = []
    for hit in sorted(hits, key=lambda h: (h.start, -h.end)):
        if merged and hit.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Hit(last.kind, last.start, max(last.end, hit.end), last.shown)
        else:
            merged.append(hit)
    return merged


def lines_to_scan(text: str, kind: str, argv: Sequence[str] = (), detector: Detector | None = None) -> Iterator[str]:
    """The lines of a process's output that must hold no secret, ``EXCLUSIONS`` left out.

    ``kind``: ``serve`` (a ``telehub serve`` log: stdout and stderr together), ``stdout`` or ``stderr`` of a
    command run with ``argv``. Passwords found in excluded blocks are added to ``detector``.
    """
    lines = text.splitlines()
    if kind == "serve":
        in_demo_block = False
        for line in lines:
            if SERVE_COMMAND_ECHO.match(line):
                continue  # EXCLUSIONS["serve-command-echo"]
            if DEMO_BLOCK_START.match(line):
                in_demo_block = True
            if in_demo_block:  # EXCLUSIONS["serve-demo-login"]
                password = DEMO_PASSWORD.match(line)
                if password and detector is not None:
                    detector.add(password["s"])
                in_demo_block = not DEMO_BLOCK_END.match(line)
                continue
            yield line
    elif kind == "stdout" and _subcommand(argv) == "admin":
        yield from (line for line in lines if LOG_LINE.match(line))  # EXCLUSIONS["admin-result"]
    else:
        yield from lines


def _subcommand(argv: Sequence[str]) -> str | None:
    words = [str(a) for a in argv]
    for index, word in enumerate(words):
        if Path(word).name == "telehub":
            return next((w for w in words[index + 1 :] if not w.startswith("-")), None)
    return None


def _runs_telehub(argv: Sequence[str]) -> bool:
    words = [str(a) for a in argv]
    if any(Path(word).name == "telehub" for word in words[:2]):
        return True
    return any(words[i] == "-m" and words[i + 1] in ("benchmarks", "hub.cli") for i in range(len(words) - 1))


@dataclass(frozen=True)
class Finding:
    where: str  # "log record telehub.http (test tests/test_x.py::test_y)" or "file … (test …)"
    line: str  # masked


@dataclass
class _Output:
    kind: str
    argv: tuple[str, ...]
    test: str
    path: Path | None = None
    text: str | None = None


class _Scanner:
    """The session's state: the detector, what was found, the outputs to read at the end."""

    def __init__(self) -> None:
        self.active = False
        self.detector = Detector()
        self.findings: list[Finding] = []
        self.outputs: list[_Output] = []
        self.test = "session start"
        self.records = 0
        self.lines = 0
        self.vanished: list[Path] = []
        self.outputs_read = 0
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def harvest_text(self, name: str, text: str) -> None:
        """Learn the secret in ``text``: a URL's password, or the whole value when ``name`` names a secret."""
        for match in URL_PASSWORD.finditer(text):
            self.detector.add(match["s"])
        if SECRET_NAME.search(name) and "://" not in text and len(text) >= 8 and not text.isdigit():
            self.detector.add(text)

    def harvest(self, name: str, value: object) -> None:
        if isinstance(value, str):
            self.harvest_text(name, value)
        elif isinstance(value, Mapping):
            for key, item in list(value.items()):
                if isinstance(key, str) and isinstance(item, str):
                    self.harvest_text(key, item)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for field in dataclasses.fields(value):
                item = getattr(value, field.name, None)
                if isinstance(item, str):
                    self.harvest_text(field.name, item)
        else:
            for attribute in ("url", "password", "secret", "token"):
                try:
                    item = getattr(value, attribute, None)
                except Exception:  # noqa: S112 - a property that cannot answer now (a server not running)
                    continue
                if isinstance(item, str):
                    self.harvest_text(attribute, item)

    def harvest_argv(self, argv: Sequence[str]) -> None:
        words = [str(a) for a in argv]
        for index, word in enumerate(words):
            flag, _, inline = word.partition("=")
            if flag.startswith("--") and SECRET_NAME.search(flag):
                value = inline or (words[index + 1] if index + 1 < len(words) else "")
                self.harvest_text(flag, value)
            else:
                self.harvest_text("", word)  # a URL with a password

    def scan(self, text: str, where: str, *, logger: str | None = None) -> None:
        """Record the lines of ``text`` that hold a secret; ``where`` they came from (for a log record: its
        ``logger``, and the test running now)."""
        for line in text.splitlines() or [text]:
            self.lines += 1
            hits = self.detector.find(line)
            if hits:
                if logger is not None:
                    where = f"log record {logger} (test {self.test})"
                finding = Finding(where, _shortened(self.detector.mask(line, hits)))
                with self._lock:
                    if (finding.where, finding.line) not in self._seen:
                        self._seen.add((finding.where, finding.line))
                        self.findings.append(finding)

    def scan_outputs(self) -> None:
        """Read every registered output: ``telehub serve`` logs first (they teach the demo passwords)."""
        outputs, self.outputs = self.outputs, []
        self.outputs_read += len(outputs)
        texts = []
        for output in sorted(outputs, key=lambda o: o.kind != "serve"):
            text = output.text
            if text is None and output.path is not None:
                try:
                    text = output.path.read_text(errors="replace")
                except FileNotFoundError:
                    self.vanished.append(output.path)
                    continue
            texts.append((output, list(lines_to_scan(text or "", output.kind, output.argv, self.detector))))
        for output, lines in texts:
            what = str(output.path) if output.path is not None else f"{output.kind} of `{' '.join(output.argv)}`"
            if output.path is not None and output.kind != "serve":
                what = f"{output.kind} {what}"
            self.scan("\n".join(lines), f"{what} (test {output.test})")


def _shortened(line: str, limit: int = 400) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"


_scanner = _Scanner()


# What tests/processes.py and tests/cli_support.py call.


def watch_serve_log(path: Path, env: Mapping[str, str], argv: Sequence[str] = ()) -> None:
    """A ``telehub serve`` log file, read at the end of the session."""
    note_command(argv, env)
    _scanner.outputs.append(_Output("serve", tuple(map(str, argv)), _scanner.test, path=Path(path)))


def watch_cli_files(argv: Sequence[str], stdout: Path, stderr: Path, env: Mapping[str, str]) -> None:
    """The stdout and stderr files of a ``telehub`` command run in the background."""
    note_command(argv, env)
    words = tuple(map(str, argv))
    _scanner.outputs.append(_Output("stdout", words, _scanner.test, path=Path(stdout)))
    _scanner.outputs.append(_Output("stderr", words, _scanner.test, path=Path(stderr)))


def note_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """The secrets a process is given (credential variables, ``--password``/``--token`` arguments)."""
    _scanner.harvest_argv(argv)
    if env is not None:
        _scanner.harvest("env", env)


def capturing() -> bool:
    """Whether the plugin runs (``-p no:tests.secret_scan`` turns it off)."""
    return _scanner.active


@contextlib.contextmanager
def recording() -> Iterator[list[str]]:
    """Every log line of this process while the block runs (formatted as the scan sees it), in a list."""
    lines: list[str] = []
    _capture.sinks.append(lines)
    try:
        yield lines
    finally:
        _capture.sinks.remove(lines)


# The capture of this process's log records.


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.sinks: list[list[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        _scanner.records += 1
        for sink in self.sinks:
            sink.append(text)
        _scanner.scan(text, "", logger=record.name)

    def format(self, record: logging.LogRecord) -> str:
        # Leaner than logging.Formatter (this runs for every record of the session): no time, no caller.
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        return f"{text}\n{record.exc_text}" if record.exc_text else text


_capture = _Capture()


class _RootLevel:
    """The root logger at DEBUG for the capture, and the level pytest's handlers are to behave as if it had.

    ``visible`` is the root level a test set itself (through ``caplog`` or ``setLevel``), else the level the
    root had before this plugin. Every ``root.setLevel`` call is seen through a wrapper on the root logger.
    """

    def __init__(self) -> None:
        self.root = logging.getLogger()
        self.baseline = self.root.level
        self.explicit: int | None = None

    def start(self) -> None:
        def set_level(level: int | str) -> None:
            logging.Logger.setLevel(self.root, level)
            if self.root.level == logging.DEBUG and self.explicit not in (None, logging.DEBUG):
                self.explicit = None  # caplog (or a test) putting back the level it found: this plugin's
            else:
                self.explicit = self.root.level

        self.root.setLevel = set_level  # type: ignore[method-assign]
        logging.Logger.setLevel(self.root, logging.DEBUG)

    def after_test(self) -> None:
        """After a test's teardown: fixtures have restored the level they found, unless the test left one."""
        level = self.root.level
        if level > logging.DEBUG:
            self.baseline = level
        self.explicit = None
        logging.Logger.setLevel(self.root, logging.DEBUG)

    def stop(self) -> None:
        with contextlib.suppress(AttributeError):
            del self.root.setLevel  # type: ignore[method-assign]
        logging.Logger.setLevel(self.root, self.baseline)

    @property
    def visible(self) -> int:
        return self.baseline if self.explicit is None else self.explicit


_root_level = _RootLevel()


class _AsBefore(logging.Filter):
    """On pytest's handlers: a record passes when it would have been created had the root stayed as it was."""

    def filter(self, record: logging.LogRecord) -> bool:
        visible = _root_level.visible
        if record.levelno >= visible:
            return True
        logger = logging.Logger.manager.loggerDict.get(record.name)
        while isinstance(logger, logging.Logger) and logger is not _root_level.root:
            if logger.level:
                return True  # a level of its own (or of a parent) let the record through, as before
            logger = logger.parent
        return False


_as_before = _AsBefore()


def _pytest_handlers(config: pytest.Config) -> list[logging.Handler]:
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    names = ("caplog_handler", "report_handler", "log_file_handler", "log_cli_handler")
    return [getattr(plugin, name) for name in names if isinstance(getattr(plugin, name, None), logging.Handler)]


def _attach_to_silent_loggers() -> None:
    """The capture also on loggers that do not propagate to the root (uvicorn's, once configured)."""
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and not logger.propagate and _capture not in logger.handlers:
            logger.addHandler(_capture)


# Outputs of processes run to completion (subprocess.run, Popen.communicate) whose command is telehub's.

_original_communicate = subprocess.Popen.communicate


def _communicate(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    stdout, stderr = _original_communicate(self, *args, **kwargs)
    argv = [self.args] if isinstance(self.args, (str, bytes, os.PathLike)) else list(self.args)
    words = tuple(os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in argv)
    if _scanner.active and _runs_telehub(words):
        _scanner.harvest_argv(words)
        for kind, data in (("stdout", stdout), ("stderr", stderr)):
            if data:
                text = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
                _scanner.outputs.append(_Output(kind, words, _scanner.test, text=text))
    return stdout, stderr


# The hooks.


def pytest_configure(config: pytest.Config) -> None:
    _scanner.active = True
    _root_level.start()
    logging.getLogger().addHandler(_capture)
    subprocess.Popen.communicate = _communicate  # type: ignore[method-assign,assignment]


def pytest_sessionstart(session: pytest.Session) -> None:
    # Here, not in pytest_configure: pytest's logging plugin registers itself late in pytest_configure.
    for handler in _pytest_handlers(session.config):
        handler.addFilter(_as_before)


def pytest_unconfigure(config: pytest.Config) -> None:
    subprocess.Popen.communicate = _original_communicate  # type: ignore[method-assign]
    for handler in _pytest_handlers(config):
        handler.removeFilter(_as_before)
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger) and _capture in logger.handlers:
            logger.removeHandler(_capture)
    _root_level.stop()
    _scanner.active = False


def pytest_collection_finish(session: pytest.Session) -> None:
    """The secrets the test modules name: constants such as ``PASSWORD`` or ``ADMIN_PASSWORD``."""
    for name, module in list(sys.modules.items()):
        if name == "tests" or name.startswith("tests."):
            for attribute, value in list(vars(module).items()):
                if attribute.isupper() and re.search(r"(PASSWORD|SECRET|TOKEN)$", attribute):
                    _scanner.harvest(attribute, value)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Iterator[Any]:
    value = yield
    _scanner.harvest(fixturedef.argname, value)
    return value


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    _scanner.test = item.nodeid
    _attach_to_silent_loggers()
    try:
        return (yield)
    finally:
        _attach_to_silent_loggers()
        _root_level.after_test()
        _scanner.test = f"session, after {item.nodeid}"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the session's fixtures are torn down (trylast): read the outputs, fail the session on a finding."""
    _scanner.scan_outputs()
    if _scanner.findings and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    findings = _scanner.findings
    counts = (
        f"{_scanner.records:,} log records and {_scanner.outputs_read:,} process outputs, "
        f"{_scanner.lines:,} lines scanned"
    )
    if not findings:
        terminalreporter.write_line(f"secret scan: {counts}; no key, token or password")
        return
    terminalreporter.section("secrets in captured logs", sep="=", red=True, bold=True)
    for finding in findings[:MAX_SHOWN_FINDINGS]:
        terminalreporter.write_line(f"{finding.where}:\n    {finding.line}")
    if len(findings) > MAX_SHOWN_FINDINGS:
        terminalreporter.write_line(f"... and {len(findings) - MAX_SHOWN_FINDINGS} more")
    terminalreporter.write_line(
        f"secret scan: {len(findings)} line(s) with a secret ({counts}); the session fails", red=True, bold=True
    )
    if _scanner.vanished:
        terminalreporter.write_line(f"secret scan: {len(_scanner.vanished)} output file(s) gone before the scan")
