"""Where the SDK's clients connect: a server's base URL (``http://host:8080``) or a full endpoint URL."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["API_PATH", "api_url", "websocket_url"]

API_PATH = "/api/v1"


def api_url(url: str) -> str:
    """The REST base (``…/api/v1``) of a server URL given with or without it."""
    base = url.rstrip("/")
    return base if base.endswith(API_PATH) else base + API_PATH


def websocket_url(url: str, endpoint: str) -> str:
    """The WebSocket URL of ``endpoint`` (``/ws/device``, ``/ws``): a ``ws://``/``wss://`` URL is taken as it
    is (a provisioning reply's ``ws_url``); an ``http(s)://`` server URL gets its scheme swapped and the API
    path appended."""
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        return url
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/")
    if not path.endswith(API_PATH + endpoint):
        path = (path if path.endswith(API_PATH) else path + API_PATH) + endpoint
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))
