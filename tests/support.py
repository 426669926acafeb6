"""Test helpers: tenants (an organization with an admin) and requests made as one of their credentials."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
from starlette.testclient import TestClient

from hub.auth.principal import Role
from hub.services import Services

API = "/api/v1"
PASSWORD = "correct-horse-battery"
_emails = itertools.count(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the contract's error envelope with this status and code."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    assert body["error"]["request_id"].startswith("req_")
    return body["error"]


@dataclass
class Tenant:
    """An organization with an admin user logged in."""

    org_id: str
    admin_email: str
    admin_token: str

    @property
    def admin(self) -> dict[str, str]:
        return bearer(self.admin_token)


class HubClient:
    """A TestClient plus shortcuts for making organizations, users and keys."""

    def __init__(self, test_client: TestClient) -> None:
        self.http = test_client

    @property
    def services(self) -> Services:
        services: Services = self.http.app.state.services  # type: ignore[attr-defined]
        return services

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an async store call on the app's event loop."""
        portal = self.http.portal
        assert portal is not None
        return portal.call(lambda: fn(*args, **kwargs))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(API + path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(API + path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.patch(API + path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.put(API + path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.delete(API + path, **kwargs)

    def new_tenant(self, name: str = "acme") -> Tenant:
        org = self.call(self.services.orgs.create, name=name)
        email = f"admin{next(_emails)}@{name}.example"
        self.call(self.services.users.create, org_id=org["id"], email=email, password=PASSWORD, role=Role.ADMIN)
        return Tenant(org_id=org["id"], admin_email=email, admin_token=self.login(email))

    def login(self, email: str, password: str = PASSWORD) -> str:
        response = self.post("/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    def new_user(self, tenant: Tenant, role: str) -> str:
        """A user of ``role`` in the tenant; returns its JWT."""
        email = f"{role}{next(_emails)}@example.com"
        response = self.post("/users", json={"email": email, "password": PASSWORD, "role": role}, headers=tenant.admin)
        assert response.status_code == 201, response.text
        return self.login(email)

    def new_api_key(self, tenant: Tenant, role: str) -> str:
        response = self.post("/api-keys", json={"name": f"{role} key", "role": role}, headers=tenant.admin)
        assert response.status_code == 201, response.text
        key: str = response.json()["key"]
        return key
