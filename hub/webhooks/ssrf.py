"""The SSRF guard: a webhook URL must be http(s) and resolve only to public addresses.

Checked when a webhook is created and again before every attempt, after DNS resolution; the attempt then
connects to the address that was checked (the URL's host is replaced by it, with the name kept in the
``Host`` header and as the TLS server name), so a name that resolves elsewhere a moment later (DNS
rebinding) cannot get around the check. ``allow_private`` (``TELEHUB_WEBHOOK_ALLOW_PRIVATE=1``) turns the
refusal off, for receivers on the same host or network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["MAX_URL_CHARS", "Refused", "Target", "UrlGuard", "url_problem"]

MAX_URL_CHARS = 2048

# host, port -> the addresses the name resolves to (as text).
Resolver = Callable[[str, int], Awaitable[list[str]]]


class Refused(Exception):
    """The URL may not be called: its message says why."""


@dataclass(frozen=True)
class Target:
    """Where an attempt connects: ``url`` with the checked address as host, and what keeps the name."""

    url: httpx.URL
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a webhook URL before any resolution, or None."""
    if len(url) > MAX_URL_CHARS:
        return f"must be at most {MAX_URL_CHARS} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials; deliveries are signed instead"
    if parts.fragment:
        return "must not have a #fragment"
    if port == 0:
        return "must not use port 0"
    return None


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class UrlGuard:
    """Checks URLs and resolves them to a connectable :class:`Target`."""

    def __init__(self, *, allow_private: bool, resolve: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        self.resolve = resolve

    async def target(self, url: str) -> Target:
        """The address to connect to for ``url``; :class:`Refused` when it may not be called."""
        problem = url_problem(url)
        if problem is not None:
            raise Refused(f"the URL {problem}")
        parsed = httpx.URL(url)
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = await self._addresses(host, port)
        private = [a for a in addresses if not is_public(a)]
        if private and not self.allow_private:
            raise Refused(
                f"{host} resolves to a private, loopback or link-local address ({private[0]}); "
                "set TELEHUB_WEBHOOK_ALLOW_PRIVATE=1 to allow it"
            )
        address = addresses[0]
        if address == host:
            return Target(parsed)
        extensions: dict[str, Any] = {"sni_hostname": host} if parsed.scheme == "https" else {}
        host_header = host if parsed.port is None else f"{host}:{parsed.port}"
        return Target(parsed.copy_with(host=address), {"Host": host_header}, extensions)

    async def _addresses(self, host: str, port: int) -> list[str]:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return [host]
        try:
            addresses = await self.resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise Refused(f"{host} does not resolve ({exc})") from None
        if not addresses:
            raise Refused(f"{host} does not resolve")
        return addresses
