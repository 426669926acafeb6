"""Tampered, unsigned, expired and foreign JWTs are all 401."""

from __future__ import annotations

import base64
import time

import jwt
import orjson

from tests.support import HubClient, Tenant, assert_error, bearer


def _claims(client: HubClient, tenant: Tenant) -> dict[str, object]:
    me = client.get("/auth/me", headers=tenant.admin).json()
    now = int(time.time())
    return {
        "sub": me["id"],
        "org": tenant.org_id,
        "role": "admin",
        "jti": "j1",
        "iat": now,
        "exp": now + 600,
        "iss": "telehub",
    }


def _secret(client: HubClient) -> str:
    return client.services.config.secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_a_well_formed_token_signed_with_the_secret_is_accepted(client: HubClient) -> None:
    tenant = client.new_tenant()
    token = jwt.encode(_claims(client, tenant), _secret(client), algorithm="HS256")
    assert client.get("/auth/me", headers=bearer(token)).status_code == 200


def test_alg_none_is_refused(client: HubClient) -> None:
    tenant = client.new_tenant()
    header = _b64(orjson.dumps({"alg": "none", "typ": "JWT"}))
    payload = _b64(orjson.dumps(_claims(client, tenant)))
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        assert_error(client.get("/auth/me", headers=bearer(token)), 401, "unauthenticated")


def test_wrong_key_and_other_algorithms_are_refused(client: HubClient) -> None:
    tenant = client.new_tenant()
    claims = _claims(client, tenant)
    wrong_key = jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256")
    hs512 = jwt.encode(claims, _secret(client), algorithm="HS512")
    for token in (wrong_key, hs512):
        assert_error(client.get("/auth/me", headers=bearer(token)), 401, "unauthenticated")


def test_expired_token_is_refused(client: HubClient) -> None:
    tenant = client.new_tenant()
    claims = {**_claims(client, tenant), "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}
    token = jwt.encode(claims, _secret(client), algorithm="HS256")
    assert_error(client.get("/auth/me", headers=bearer(token)), 401, "unauthenticated")


def test_token_missing_a_required_claim_is_refused(client: HubClient) -> None:
    tenant = client.new_tenant()
    for claim in ("exp", "jti", "org", "sub"):
        claims = _claims(client, tenant)
        del claims[claim]
        token = jwt.encode(claims, _secret(client), algorithm="HS256")
        assert_error(client.get("/auth/me", headers=bearer(token)), 401, "unauthenticated")


def test_a_user_moved_to_another_org_in_the_claims_is_refused(client: HubClient) -> None:
    mine = client.new_tenant("mine")
    theirs = client.new_tenant("theirs")
    claims = {**_claims(client, mine), "org": theirs.org_id}
    token = jwt.encode(claims, _secret(client), algorithm="HS256")
    assert_error(client.get("/auth/me", headers=bearer(token)), 401, "unauthenticated")
    assert_error(client.get("/users", headers=bearer(token)), 401, "unauthenticated")


def test_edited_payload_breaks_the_signature(client: HubClient) -> None:
    tenant = client.new_tenant()
    viewer = client.new_user(tenant, "viewer")
    header, payload, signature = viewer.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    forged = f"{header}.{_b64(orjson.dumps(claims))}.{signature}"
    assert_error(client.get("/users", headers=bearer(forged)), 401, "unauthenticated")


def test_role_comes_from_the_store_not_the_token(client: HubClient) -> None:
    tenant = client.new_tenant()
    viewer_token = client.new_user(tenant, "viewer")
    me = client.get("/auth/me", headers=bearer(viewer_token)).json()
    claims = {**_claims(client, tenant), "sub": me["id"], "role": "admin"}
    token = jwt.encode(claims, _secret(client), algorithm="HS256")
    assert client.get("/auth/me", headers=bearer(token)).json()["role"] == "viewer"
    assert_error(client.get("/users", headers=bearer(token)), 403, "forbidden")
