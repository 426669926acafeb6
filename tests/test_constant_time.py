"""Secrets are compared in constant time, and a login costs the same whether or not its email exists.

Timing itself is too noisy to assert on a shared machine; what is asserted is the mechanism: every check of a
presented secret against a stored one goes through ``hmac.compare_digest`` (recorded here), and a login with an
unknown email runs the same scrypt check as one with a wrong password (no user enumeration by timing). API,
device and registration keys are looked up by their SHA-256 digest in one Redis read: no comparison at all.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest

from hub.auth import secrets as stored_secrets
from hub.webhooks import signing
from tests.support import PASSWORD, HubClient, assert_error, bearer


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, Any]]]:
    """Every ``hmac.compare_digest`` call while the test runs (the real one still answers)."""
    calls: list[tuple[Any, Any]] = []
    real: Callable[[Any, Any], bool] = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    yield calls


@pytest.fixture
def scrypts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The scrypt cost (N) of every password hash computed while the test runs."""
    costs: list[int] = []
    real = stored_secrets._scrypt

    def counting(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        costs.append(n)
        return real(password, salt, n, r, p)

    monkeypatch.setattr(stored_secrets, "_scrypt", counting)
    return costs


def test_a_wrong_password_and_an_unknown_email_cost_one_scrypt_check_each(
    client: HubClient, compared: list[tuple[Any, Any]], scrypts: list[int]
) -> None:
    tenant = client.new_tenant("timing")
    stored_secrets.dummy_password_hash()  # made once per process, on the first unknown email
    compared.clear()
    scrypts.clear()
    wrong = client.post("/auth/login", json={"email": tenant.admin_email, "password": PASSWORD + "x"})
    assert_error(wrong, 401, "invalid_credentials")
    assert scrypts == [stored_secrets.SCRYPT_N] and len(compared) == 1
    unknown = client.post("/auth/login", json={"email": "nobody@timing.example", "password": PASSWORD})
    assert_error(unknown, 401, "invalid_credentials")
    assert scrypts == [stored_secrets.SCRYPT_N] * 2 and len(compared) == 2
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]
    right = client.post("/auth/login", json={"email": tenant.admin_email, "password": PASSWORD})
    assert right.status_code == 200 and len(compared) == 3


def test_a_jwt_signature_is_checked_with_compare_digest(client: HubClient, compared: list[tuple[Any, Any]]) -> None:
    tenant = client.new_tenant("timing")
    claims = jwt.decode(tenant.admin_token, options={"verify_signature": False})
    forged = jwt.encode({**claims, "exp": int(time.time()) + 600}, "not-the-secret-" + "x" * 40, algorithm="HS256")
    compared.clear()
    assert_error(client.get("/devices", headers=bearer(forged)), 401, "unauthenticated")
    assert compared, "the forged signature was not compared with compare_digest"
    compared.clear()
    assert client.get("/devices", headers=tenant.admin).status_code == 200
    assert compared


def test_a_webhook_signature_is_verified_with_compare_digest(compared: list[tuple[Any, Any]]) -> None:
    body, secret, now = b'{"id": "evt_1"}', signing.new_secret(), int(time.time())
    header = signing.signature_header(secret, now, body)
    assert signing.verify(header, secret, body, now=now)
    assert not signing.verify(header.replace("v1=", "v1=0"), secret, body, now=now)
    assert len(compared) >= 2
