"""--demo: one demo organization, a fresh admin password at each start."""

from __future__ import annotations

from hub.demo import demo_login
from tests.support import HubClient, assert_error


def test_demo_org_is_made_once_and_each_start_gives_a_new_working_password(client: HubClient) -> None:
    first = client.call(demo_login, client.services)
    assert client.login(first["email"], first["password"])
    second = client.call(demo_login, client.services)
    assert second["org_id"] == first["org_id"]
    assert second["password"] != first["password"]
    assert client.login(second["email"], second["password"])
    stale = client.post("/auth/login", json={"email": first["email"], "password": first["password"]})
    assert_error(stale, 401, "invalid_credentials")
    assert client.call(client.services.orgs.count) == 1
