"""``RestClient``: one async method per operation of the REST API (API.md §3), over httpx.

::

    async with RestClient("http://hub:8080") as rest:
        await rest.login("admin@example.com", "change-me-now")     # or RestClient(url, token="sk_live_…")
        device = await rest.create_device(name="Boiler 7", type="boiler", id="boiler-7")
        async for message in rest.iter_messages("boiler-7", type="telemetry"):
            ...

Replies are the JSON the contract documents (dicts; list methods return the whole page, ``data`` and
``meta``; ``iter_*`` walk every page). An error reply raises ``ApiError`` with its ``status``, ``code``,
``message``, ``request_id`` and ``details``. 429 and 503 are retried after ``Retry-After`` (at most
``retries`` times) when the request is safe to repeat: reads, deletes, and posts with an idempotency key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from clients.errors import ApiError
from clients.rest_transport import Json, RestTransport, Time
from clients.rest_transport import fields as _fields
from clients.rest_transport import query as _query
from clients.rest_transport import time_param as _time

__all__ = ["ApiError", "RestClient"]


class RestClient(RestTransport):
    """A method per operation of API.md §3 (see the module docstring); ``request`` for anything else."""

    # Authentication.

    async def login(self, email: str, password: str) -> Json:
        """Log in; the JWT is kept for the calls that follow. Returns ``{token, expires_in, user}``."""
        reply = await self.request("POST", "/auth/login", json={"email": email, "password": password})
        self.token = reply["token"]
        return reply

    async def me(self) -> Json:
        return await self.request("GET", "/auth/me")

    # API keys and users (admin).

    async def create_api_key(self, name: str, role: str) -> Json:
        return await self.request("POST", "/api-keys", json={"name": name, "role": role})

    async def list_api_keys(self, *, limit: int | None = None, offset: int | None = None) -> Json:
        return await self.request("GET", "/api-keys", params=_query(limit=limit, offset=offset))

    async def delete_api_key(self, key_id: str) -> None:
        await self.request("DELETE", f"/api-keys/{key_id}")

    async def create_user(self, email: str, password: str, role: str) -> Json:
        return await self.request("POST", "/users", json={"email": email, "password": password, "role": role})

    async def list_users(self, *, limit: int | None = None, offset: int | None = None) -> Json:
        return await self.request("GET", "/users", params=_query(limit=limit, offset=offset))

    async def delete_user(self, user_id: str) -> None:
        await self.request("DELETE", f"/users/{user_id}")

    # Devices, keys, provisioning.

    async def list_devices(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        q: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Json:
        params = _query(status=status, type=type, q=q, limit=limit, offset=offset)
        return await self.request("GET", "/devices", params=params)

    def iter_devices(
        self, *, status: str | None = None, type: str | None = None, q: str | None = None
    ) -> AsyncIterator[Json]:
        return self._offset_pages("/devices", _query(status=status, type=type, q=q))

    async def create_device(
        self, *, name: str, type: str, id: str | None = None, idempotency_key: str | None = None, **fields: Any
    ) -> Json:
        """``fields``: ``manufacturer``, ``model``, ``location``, ``metadata``, ``tags``."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body = _fields(id=id, name=name, type=type, **fields)
        return await self.request("POST", "/devices", json=body, headers=headers)

    async def get_device(self, device_id: str) -> Json:
        return await self.request("GET", f"/devices/{device_id}")

    async def update_device(self, device_id: str, **fields: Any) -> Json:
        return await self.request("PATCH", f"/devices/{device_id}", json=fields)

    async def delete_device(self, device_id: str) -> None:
        await self.request("DELETE", f"/devices/{device_id}")

    async def rotate_device_key(self, device_id: str) -> str:
        """A new device key (the old one stops working at once)."""
        reply = await self.request("POST", f"/devices/{device_id}/keys")
        key: str = reply["device_key"]
        return key

    async def create_registration_token(
        self, device_name: str, *, type: str | None = None, expires_in: int | None = None
    ) -> Json:
        body = _fields(device_name=device_name, type=type, expires_in=expires_in)
        return await self.request("POST", "/devices/registration/tokens", json=body)

    async def provision(self, token: str) -> Json:
        """Trade a registration token (no other credential) for ``{device_id, device_key, ws_url}``."""
        return await self.request("POST", "/devices/provision", json={"token": token})

    # Readings and history.

    async def post_readings(
        self,
        device_id: str,
        metrics: dict[str, float] | None = None,
        *,
        ts: int | None = None,
        points: list[dict[str, Any]] | None = None,
    ) -> Json:
        """``{accepted: N}``: one point (``metrics``, ``ts``) or several (``points``: ``[{ts, metrics}]``)."""
        body = {"points": points} if points is not None else _fields(ts=ts, metrics=metrics)
        return await self.request("POST", f"/devices/{device_id}/readings", json=body)

    async def list_readings(
        self,
        device_id: str,
        *,
        metric: Sequence[str] | None = None,
        from_: Time | None = None,
        to: Time | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        order: str | None = None,
    ) -> Json:
        params = _query(metric=metric, from_=_time(from_), to=_time(to), limit=limit, cursor=cursor, order=order)
        return await self.request("GET", f"/devices/{device_id}/readings", params=params)

    def iter_readings(
        self, device_id: str, *, metric: Sequence[str] | None = None, from_: Time | None = None, to: Time | None = None
    ) -> AsyncIterator[Json]:
        params = _query(metric=metric, from_=_time(from_), to=_time(to), limit=1000)
        return self._pages(f"/devices/{device_id}/readings", params)

    async def latest_readings(self, device_id: str, *, metric: Sequence[str] | None = None) -> Json:
        return await self.request("GET", f"/devices/{device_id}/readings/latest", params=_query(metric=metric))

    async def aggregate_readings(
        self,
        device_id: str,
        *,
        from_: Time,
        to: Time,
        interval: str,
        metric: Sequence[str] | None = None,
        fn: Sequence[str] | None = None,
        tz: str | None = None,
    ) -> Json:
        params = _query(from_=_time(from_), to=_time(to), interval=interval, metric=metric, fn=fn, tz=tz)
        return await self.request("GET", f"/devices/{device_id}/readings/aggregate", params=params)

    async def list_messages(
        self,
        device_id: str,
        *,
        type: str | None = None,
        from_: Time | None = None,
        to: Time | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        order: str | None = None,
    ) -> Json:
        params = _query(type=type, from_=_time(from_), to=_time(to), limit=limit, cursor=cursor, order=order)
        return await self.request("GET", f"/devices/{device_id}/messages", params=params)

    def iter_messages(
        self, device_id: str, *, type: str | None = None, from_: Time | None = None, to: Time | None = None
    ) -> AsyncIterator[Json]:
        params = _query(type=type, from_=_time(from_), to=_time(to), limit=100)
        return self._pages(f"/devices/{device_id}/messages", params)

    async def list_events(
        self,
        *,
        type: str | None = None,
        device_id: str | None = None,
        from_: Time | None = None,
        to: Time | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Json:
        params = _query(type=type, device_id=device_id, from_=_time(from_), to=_time(to), limit=limit, cursor=cursor)
        return await self.request("GET", "/events", params=params)

    def iter_events(
        self,
        *,
        type: str | None = None,
        device_id: str | None = None,
        from_: Time | None = None,
        to: Time | None = None,
    ) -> AsyncIterator[Json]:
        return self._pages("/events", _query(type=type, device_id=device_id, from_=_time(from_), to=_time(to)))

    # Commands.

    async def create_command(
        self,
        device_id: str,
        command: str,
        params: dict[str, Any] | None = None,
        *,
        timeout_s: int | None = None,
        ttl_s: int | None = None,
        idempotency_key: str | None = None,
    ) -> Json:
        """202 ``{command_id, status: queued}``; the same ``idempotency_key`` within 24 h replays the first reply."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body = _fields(command=command, params=params, timeout_s=timeout_s, ttl_s=ttl_s)
        return await self.request("POST", f"/devices/{device_id}/commands", json=body, headers=headers)

    async def get_command(self, command_id: str) -> Json:
        return await self.request("GET", f"/commands/{command_id}")

    async def cancel_command(self, command_id: str) -> Json:
        """Cancel a queued command (409 ``command_not_queued`` once sent or ended)."""
        return await self.request("DELETE", f"/commands/{command_id}")

    async def list_commands(
        self, device_id: str, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Json:
        params = _query(status=status, limit=limit, cursor=cursor)
        return await self.request("GET", f"/devices/{device_id}/commands", params=params)

    def iter_commands(self, device_id: str, *, status: str | None = None) -> AsyncIterator[Json]:
        return self._pages(f"/devices/{device_id}/commands", _query(status=status))

    # Webhooks, alert rules, alerts.

    async def create_webhook(self, url: str, events: Sequence[str], *, secret: str | None = None) -> Json:
        """201 ``{id, url, events, secret, created_at}``: the secret is shown only here."""
        return await self.request("POST", "/webhooks", json=_fields(url=url, events=list(events), secret=secret))

    async def list_webhooks(self, *, limit: int | None = None, offset: int | None = None) -> Json:
        return await self.request("GET", "/webhooks", params=_query(limit=limit, offset=offset))

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.request("DELETE", f"/webhooks/{webhook_id}")

    async def list_webhook_deliveries(
        self, webhook_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> Json:
        """Delivery attempts, newest first."""
        params = _query(limit=limit, cursor=cursor)
        return await self.request("GET", f"/webhooks/{webhook_id}/deliveries", params=params)

    async def create_alert_rule(
        self, *, name: str, metric: str, op: str, threshold: float, severity: str, **fields: Any
    ) -> Json:
        """``fields``: ``device_id`` or ``device_type``, ``for_s``."""
        body = _fields(name=name, metric=metric, op=op, threshold=threshold, severity=severity, **fields)
        return await self.request("POST", "/alert-rules", json=body)

    async def list_alert_rules(self, *, limit: int | None = None, offset: int | None = None) -> Json:
        return await self.request("GET", "/alert-rules", params=_query(limit=limit, offset=offset))

    async def get_alert_rule(self, rule_id: str) -> Json:
        return await self.request("GET", f"/alert-rules/{rule_id}")

    async def delete_alert_rule(self, rule_id: str) -> None:
        await self.request("DELETE", f"/alert-rules/{rule_id}")

    async def list_alerts(
        self, *, status: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> Json:
        """``status``: ``active``, ``acknowledged`` or ``resolved``."""
        return await self.request("GET", "/alerts", params=_query(status=status, limit=limit, offset=offset))

    def iter_alerts(self, *, status: str | None = None) -> AsyncIterator[Json]:
        return self._offset_pages("/alerts", _query(status=status))

    async def get_alert(self, alert_id: str) -> Json:
        return await self.request("GET", f"/alerts/{alert_id}")

    async def ack_alert(self, alert_id: str) -> Json:
        return await self.request("POST", f"/alerts/{alert_id}/ack")

    # Health (no credential needed).

    async def health(self) -> Json:
        """``{status, version, checks}``; an unhealthy hub answers 503, raised as ``ApiError`` like any error."""
        return await self.request("GET", "/health")

    async def health_redis(self) -> Json:
        return await self.request("GET", "/health/redis")
