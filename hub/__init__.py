"""telehub: a real-time IoT telemetry hub."""

from clients import log_redaction as _log_redaction

__version__ = "0.1.0"

# Wherever the hub runs, the protocol loggers' debug lines (handshake headers, frames) carry no credential.
_log_redaction.install()
