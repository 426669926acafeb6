"""The HTTP side of ``RestClient``: requests with the credential, the error envelope as ``ApiError``, retries of
429 / 503 after ``Retry-After`` when a request is safe to repeat, and walking paged lists."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Self

import httpx

from clients.errors import ApiError
from clients.urls import api_url

__all__ = ["Json", "RestTransport", "Time", "fields", "query", "time_param"]

Json = Any
Time = datetime | int | str
MAX_RETRY_AFTER_S = 10.0


def time_param(value: Time | None) -> str | None:
    """``from`` / ``to``: ISO 8601 from an aware datetime, integer ms, or a string passed as it is."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def query(**params: Any) -> dict[str, str]:
    """Query parameters without the unset ones; lists joined by commas (``metric=temp,rpm``)."""
    found: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            value = ",".join(value)
        found[name.rstrip("_")] = str(value)
    return found


def fields(**values: Any) -> dict[str, Any]:
    """A JSON body without the unset fields."""
    return {name: value for name, value in values.items() if value is not None}


class RestTransport:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = api_url(url)
        # A user's JWT (``login`` sets it), an API key (sk_live_…) or a device key (dk_…).
        self.token = token
        self.retries = retries
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # The transport.

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Json = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> Json:
        """One call; the decoded JSON reply (None for 204), or ``ApiError``."""
        sent = dict(headers or {})
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        repeatable = method in ("GET", "DELETE") or "Idempotency-Key" in sent
        for attempt in range(self.retries + 1):
            response = await self._http.request(method, path, json=json, params=params, headers=sent, content=content)
            if response.status_code in (429, 503) and repeatable and attempt < self.retries:
                await asyncio.sleep(_retry_after(response))
                continue
            break
        if response.status_code >= 400:
            raise _api_error(response)
        return None if response.status_code == 204 or not response.content else response.json()

    async def _pages(self, path: str, params: dict[str, str]) -> AsyncIterator[Json]:
        """Every item of a cursor-paged list (``meta.next_cursor``)."""
        while True:
            page = await self.request("GET", path, params=params)
            for item in page["data"]:
                yield item
            cursor = page["meta"].get("next_cursor")
            if not cursor:
                return
            params = {**params, "cursor": cursor}

    async def _offset_pages(self, path: str, params: dict[str, str]) -> AsyncIterator[Json]:
        """Every item of a registry list paged with ``limit`` / ``offset``."""
        offset = 0
        while True:
            page = await self.request("GET", path, params={**params, "offset": str(offset), "limit": "100"})
            for item in page["data"]:
                yield item
            offset += len(page["data"])
            if not page["data"] or offset >= page["meta"]["total"]:
                return


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(response.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0


def _api_error(response: httpx.Response) -> ApiError:
    """The contract's envelope ``{"error": {code, message, request_id, details?}}``, or what can be said."""
    request_id = response.headers.get("X-Request-ID")
    try:
        error = response.json()["error"]
        return ApiError(
            response.status_code,
            str(error["code"]),
            str(error.get("message", "")),
            error.get("request_id", request_id),
            error.get("details"),
        )
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, f"http_{response.status_code}", response.text[:200], request_id)
