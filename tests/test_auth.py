"""Login, /auth/me and the three kinds of credential."""

from __future__ import annotations

from tests.support import PASSWORD, HubClient, assert_error, bearer


def test_login_returns_a_jwt_that_identifies_the_user(client: HubClient) -> None:
    tenant = client.new_tenant()
    response = client.post("/auth/login", json={"email": tenant.admin_email.upper(), "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == 86400
    assert body["user"]["email"] == tenant.admin_email
    assert body["user"]["role"] == "admin"
    assert body["user"]["org_id"] == tenant.org_id
    me = client.get("/auth/me", headers=bearer(body["token"])).json()
    assert me == {"kind": "user", "id": body["user"]["id"], "org_id": tenant.org_id, "role": "admin"}


def test_wrong_password_and_unknown_email_answer_the_same_401(client: HubClient) -> None:
    tenant = client.new_tenant()
    wrong = client.post("/auth/login", json={"email": tenant.admin_email, "password": "not-the-password"})
    unknown = client.post("/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})
    assert (
        assert_error(wrong, 401, "invalid_credentials")["message"]
        == (assert_error(unknown, 401, "invalid_credentials")["message"])
    )


def test_login_validates_its_body(client: HubClient) -> None:
    error = assert_error(client.post("/auth/login", json={"email": 5}), 400, "validation_error")
    assert error["details"] == {"email": "must be a string", "password": "is required"}
    assert_error(
        client.post("/auth/login", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "invalid_json",
    )
    assert_error(
        client.post("/auth/login", content=b"email=a", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )


def test_failed_logins_are_throttled_per_email(client: HubClient) -> None:
    tenant = client.new_tenant()
    limit = client.services.config.login_max_failures
    for _ in range(limit):
        response = client.post("/auth/login", json={"email": tenant.admin_email, "password": "wrong-password"})
        assert response.status_code == 401
    blocked = client.post("/auth/login", json={"email": tenant.admin_email, "password": PASSWORD})
    assert_error(blocked, 429, "rate_limited")
    assert int(blocked.headers["retry-after"]) > 0


def test_api_key_authenticates_as_itself(client: HubClient) -> None:
    tenant = client.new_tenant()
    created = client.post("/api-keys", json={"name": "backend", "role": "operator"}, headers=tenant.admin)
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith("sk_live_")
    assert body["id"].startswith("key_")
    me = client.get("/auth/me", headers=bearer(body["key"])).json()
    assert me == {"kind": "api_key", "id": body["id"], "org_id": tenant.org_id, "role": "operator"}
    listed = client.get("/api-keys", headers=tenant.admin).json()
    assert listed["meta"] == {"total": 1, "limit": 50, "offset": 0}
    assert "key" not in listed["data"][0]
    assert body["key"] not in str(client.call(client.services.redis.keys, "*"))


def test_revoked_api_key_stops_working_at_once(client: HubClient) -> None:
    tenant = client.new_tenant()
    key = client.new_api_key(tenant, "viewer")
    key_id = client.get("/auth/me", headers=bearer(key)).json()["id"]
    assert client.delete(f"/api-keys/{key_id}", headers=tenant.admin).status_code == 204
    assert_error(client.get("/auth/me", headers=bearer(key)), 401, "unauthenticated")
    assert_error(client.delete(f"/api-keys/{key_id}", headers=tenant.admin), 404, "not_found")


def test_deleted_users_token_stops_working(client: HubClient) -> None:
    tenant = client.new_tenant()
    token = client.new_user(tenant, "viewer")
    user_id = client.get("/auth/me", headers=bearer(token)).json()["id"]
    assert client.delete(f"/users/{user_id}", headers=tenant.admin).status_code == 204
    assert_error(client.get("/auth/me", headers=bearer(token)), 401, "unauthenticated")


def test_missing_or_malformed_authorization_is_401(client: HubClient) -> None:
    assert_error(client.get("/auth/me"), 401, "unauthenticated")
    assert_error(client.get("/auth/me", headers={"Authorization": "Basic abc"}), 401, "unauthenticated")
    assert_error(client.get("/auth/me", headers={"Authorization": "Bearer "}), 401, "unauthenticated")
    assert_error(client.get("/auth/me", headers=bearer("sk_live_" + "a" * 43)), 401, "unauthenticated")
    assert_error(client.get("/auth/me", headers=bearer("dk_" + "a" * 43)), 401, "unauthenticated")
