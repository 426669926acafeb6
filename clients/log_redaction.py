"""Credentials kept out of log lines.

At ``--log-level debug`` the websockets protocol logs every handshake header (``Authorization: Bearer dk_…``)
and a preview of every frame (a dashboard's ``{"op": "auth", "token": …}``): the hub's lean WebSocket path
through the logger ``ingest.lean_websocket``, uvicorn's sans-I/O WebSocket through ``uvicorn.error``, and the
SDK clients through ``websockets.client`` (the SDK's own connections log through ``telehub.clients.websocket``,
which carries the filter whether or not the hub is loaded). uvicorn's access log carries query strings.
:class:`RedactSecrets` on those loggers replaces the secret part of such lines before any handler sees them; the
rest of the line stays, so the debug log still shows what happened. It lives with the SDK, which imports no
server package, and ``hub.app.create_app`` installs it on the server's loggers.
"""

from __future__ import annotations

import logging
import re

__all__ = ["REDACTED", "RedactSecrets", "install", "redact", "redacted_logger"]

REDACTED = "[redacted]"

# The loggers whose records can carry a credential: the protocol-level loggers named above.
LOGGERS = ("ingest.lean_websocket", "uvicorn.error", "uvicorn.access", "websockets.client", "websockets.server")

_RULES: list[tuple[re.Pattern[str], str]] = [
    # A header holding a credential, whole value: "Authorization: Bearer …", "Cookie: …".
    (
        re.compile(r"(?i)\b((?:proxy-)?authorization|cookie|set-cookie|x-api-key)(\s*[:=]\s*)[^\r\n]+"),
        rf"\1\2{REDACTED}",
    ),
    # A bearer credential on its own (a header's value logged apart from its name).
    (re.compile(r"(?i)\b(bearer\s+)(?!\[redacted\])\S+"), rf"\1{REDACTED}"),
    # telehub's credentials by their prefixes: API keys, device keys, registration tokens, webhook secrets.
    (re.compile(r"(?<![A-Za-z0-9])(sk_live_|dk_|rtk_|whsec_)[A-Za-z0-9_-]{8,}"), rf"\1{REDACTED}"),
    # JWTs, also cut short (a frame preview elides the middle of a long payload).
    (re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){0,2}"), REDACTED),
    # The password of a URL such as redis://:secret@host:6379.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@"), rf"\1{REDACTED}@"),
    # A field or parameter named like a credential: "token": "…", password=… (the whole value, also what is
    # left of a credential cut short by an earlier rule or by a frame preview).
    (
        re.compile(
            r"(?i)((?<![A-Za-z0-9])[\"']?(?:password|passwd|secret|token|api_key|device_key)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"',;&}]+"
        ),
        rf"\1{REDACTED}",
    ),
]


# Text in which none of the rules can match is returned at once (most lines: the access log of every request).
# Searched in the lower-cased text: a case-insensitive alternation is several times slower.
_CANDIDATE = re.compile(
    r"authorization|cookie|api-key|bearer|sk_live_|dk_|rtk_|whsec_|eyj|://|passw|secret|token|api_key|device_key"
)


def redact(text: str) -> str:
    """``text`` with every credential the rules recognize replaced by ``[redacted]``."""
    if not _CANDIDATE.search(text.lower()):
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record whose message (or traceback) holds a credential; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access":
            # Argument by argument: uvicorn's access formatter unpacks them (the path carries the query string).
            if isinstance(record.args, tuple):
                record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        else:
            # The message formatted once, here: the handlers after this filter do not format its arguments again.
            record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = RedactSecrets()


def redacted_logger(name: str) -> logging.Logger:
    """The logger ``name`` with the filter on it, for a library to log protocol lines through."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def install() -> None:
    """Put the filter on every logger in ``LOGGERS`` (once; loggers live for the process, dictConfig keeps it)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
