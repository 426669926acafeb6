"""A live ``telehub serve`` with a bootstrap admin for the protocol page's tests, and a device client for it."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from tests.processes import ServeProcess, serve
from tests.protocol.page import ADMIN_EMAIL, ADMIN_PASSWORD, WAIT, hub_env

_devices = itertools.count(1)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with serve(data_dir=tmp_path_factory.mktemp("protocol-doc") / "data", env=hub_env()) as process:
        yield process


@dataclass
class Live:
    process: ServeProcess
    http: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return self.process.url.replace("http://", "ws://") + "/api/v1/ws/device"

    async def device(self, device_id: str | None = None) -> tuple[str, str]:
        """A new device (its id and key)."""
        device_id = device_id or f"proto-{next(_devices)}"
        reply = await self.http.post("/devices", json={"id": device_id, "name": device_id, "type": "boiler"})
        assert reply.status_code == 201, reply.text
        reply = await self.http.post(f"/devices/{device_id}/keys")
        return device_id, reply.json()["device_key"]

    def connect(self, key: str, query: str = "") -> Any:
        return websockets.connect(
            self.ws_url + query,
            additional_headers={"Authorization": f"Bearer {key}"},
            subprotocols=[Subprotocol("telehub.v1")],
            max_size=None,
            open_timeout=WAIT,
        )

    async def stored(self, device_id: str) -> list[dict[str, Any]]:
        reply = await self.http.get(f"/devices/{device_id}/messages", params={"limit": 100, "order": "asc"})
        assert reply.status_code == 200, reply.text
        messages: list[dict[str, Any]] = reply.json()["data"]
        return messages


@pytest.fixture
async def live(hub: ServeProcess) -> AsyncIterator[Live]:
    async with httpx.AsyncClient(base_url=hub.url + "/api/v1", timeout=WAIT) as http:
        login = await http.post("/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        http.headers["Authorization"] = "Bearer " + login.json()["token"]
        yield Live(hub, http)
