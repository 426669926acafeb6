"""/users: admins manage the people of their organization."""

from __future__ import annotations

from tests.support import PASSWORD, HubClient, assert_error, bearer


def test_admin_creates_lists_and_deletes_users(client: HubClient) -> None:
    tenant = client.new_tenant()
    created = client.post(
        "/users", json={"email": "Op@Example.com", "password": PASSWORD, "role": "operator"}, headers=tenant.admin
    )
    assert created.status_code == 201
    user = created.json()
    assert user["id"].startswith("usr_")
    assert user["email"] == "op@example.com"
    assert user["role"] == "operator"
    assert user["org_id"] == tenant.org_id
    assert "password" not in str(user) and "hash" not in str(user)

    listed = client.get("/users", headers=tenant.admin).json()
    assert listed["meta"] == {"total": 2, "limit": 50, "offset": 0}
    assert [u["email"] for u in listed["data"]] == [tenant.admin_email, "op@example.com"]
    page = client.get("/users?limit=1&offset=1", headers=tenant.admin).json()
    assert page["meta"] == {"total": 2, "limit": 1, "offset": 1}
    assert [u["id"] for u in page["data"]] == [user["id"]]

    token = client.login("op@example.com")
    assert client.get("/auth/me", headers=bearer(token)).json()["role"] == "operator"
    assert client.delete(f"/users/{user['id']}", headers=tenant.admin).status_code == 204
    assert client.get("/users", headers=tenant.admin).json()["meta"]["total"] == 1
    failed = client.post("/auth/login", json={"email": "op@example.com", "password": PASSWORD})
    assert_error(failed, 401, "invalid_credentials")


def test_user_emails_are_unique_across_the_hub(client: HubClient) -> None:
    first = client.new_tenant("one")
    second = client.new_tenant("two")
    body = {"email": "same@example.com", "password": PASSWORD, "role": "viewer"}
    assert client.post("/users", json=body, headers=first.admin).status_code == 201
    assert_error(client.post("/users", json=body, headers=second.admin), 409, "email_taken")


def test_user_validation_reports_every_field(client: HubClient) -> None:
    tenant = client.new_tenant()
    bad = client.post(
        "/users", json={"email": "not-an-email", "password": "short", "role": "owner", "x": 1}, headers=tenant.admin
    )
    details = assert_error(bad, 400, "validation_error")["details"]
    assert details == {"role": "must be one of admin, operator, viewer", "x": "unknown field"}
    bad_email = client.post(
        "/users", json={"email": "not-an-email", "password": "long-enough", "role": "viewer"}, headers=tenant.admin
    )
    assert assert_error(bad_email, 400, "validation_error")["details"] == {"email": "must be an email address"}
    short = client.post(
        "/users", json={"email": "a@example.com", "password": "short", "role": "viewer"}, headers=tenant.admin
    )
    assert "password" in assert_error(short, 400, "validation_error")["details"]
    assert_error(client.get("/users?limit=0", headers=tenant.admin), 400, "validation_error")
    assert_error(client.get("/users?limit=101", headers=tenant.admin), 400, "validation_error")
    assert_error(client.get("/users?offset=x", headers=tenant.admin), 400, "validation_error")


def test_admin_cannot_delete_themselves_and_unknown_users_are_404(client: HubClient) -> None:
    tenant = client.new_tenant()
    me = client.get("/auth/me", headers=tenant.admin).json()
    assert_error(client.delete(f"/users/{me['id']}", headers=tenant.admin), 409, "cannot_delete_self")
    assert_error(client.delete("/users/usr_nope", headers=tenant.admin), 404, "not_found")
