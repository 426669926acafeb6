"""Two ``telehub serve`` processes on one Redis behave as one hub: rate limits, revocation and JWTs are shared."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx

from tests.processes import ServeProcess, started, telehub_env
from tests.support import PASSWORD, assert_error, bearer

ADMIN_EMAIL = "root@acme.example"
# The contract: a revoked API key stops working on every process within this many seconds (not scaled).
REVOCATION_S = 1.0
# Low limits, shared by both processes. The refill (one token per 10 s) is slow enough that the burst is
# all a quick loop can get, however slow the machine.
RATE_PER_MINUTE = 6
BURST = 10


@contextlib.contextmanager
def two_hubs(redis_url: str, tmp_path: Path) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Processes A and B on the session Redis with one secret and the bootstrap admin; a client for each."""
    env = telehub_env(
        TELEHUB_SECRET="shared-secret-" + "x" * 40,
        TELEHUB_RATE_LIMIT_PER_MINUTE=str(RATE_PER_MINUTE),
        TELEHUB_RATE_LIMIT_BURST=str(BURST),
        TELEHUB_BOOTSTRAP_EMAIL=ADMIN_EMAIL,
        TELEHUB_BOOTSTRAP_PASSWORD=PASSWORD,
    )
    with contextlib.ExitStack() as stack:
        hubs: list[ServeProcess] = [
            stack.enter_context(started(data_dir=tmp_path / name, env=env, args=["--redis-url", redis_url]))
            for name in ("a", "b")
        ]
        for hub in hubs:
            hub.wait_healthy()
        a, b = (stack.enter_context(hub.client()) for hub in hubs)
        yield a, b


def login(http: httpx.Client, email: str) -> dict[str, str]:
    response = http.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    return {**body["user"], "token": body["token"]}


def new_api_key(http: httpx.Client, admin_token: str) -> dict[str, str]:
    response = http.post("/api-keys", json={"name": "backend", "role": "viewer"}, headers=bearer(admin_token))
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


def test_rate_limit_is_shared_by_the_processes(redis_url: str, tmp_path: Path) -> None:
    with two_hubs(redis_url, tmp_path) as (a, b):
        key = new_api_key(a, login(a, ADMIN_EMAIL)["token"])["key"]
        remaining = []
        for http in itertools.islice(itertools.cycle([a, b]), 3 * BURST):
            response = http.get("/auth/me", headers=bearer(key))
            if response.status_code != 200:
                break
            assert response.headers["x-ratelimit-limit"] == str(RATE_PER_MINUTE)
            remaining.append(int(response.headers["x-ratelimit-remaining"]))
        # One bucket: the count goes down across both processes, and the burst is all there is.
        assert remaining == list(range(BURST - 1, -1, -1))
        assert_error(response, 429, "rate_limited")
        assert 1 <= int(response.headers["retry-after"]) <= 60 / RATE_PER_MINUTE
        assert response.headers["x-ratelimit-limit"] == str(RATE_PER_MINUTE)
        assert response.headers["x-ratelimit-remaining"] == "0"
        assert int(response.headers["x-ratelimit-reset"]) > time.time()
        # The other process refuses too.
        other = b if http is a else a
        assert_error(other.get("/auth/me", headers=bearer(key)), 429, "rate_limited")


def test_a_key_revoked_on_one_process_stops_working_on_the_other_within_a_second(
    redis_url: str, tmp_path: Path
) -> None:
    with two_hubs(redis_url, tmp_path) as (a, b):
        admin = login(a, ADMIN_EMAIL)
        key = new_api_key(a, admin["token"])
        assert b.get("/auth/me", headers=bearer(key["key"])).status_code == 200

        assert a.delete(f"/api-keys/{key['id']}", headers=bearer(admin["token"])).status_code == 204
        revoked = time.monotonic()
        while True:
            response = b.get("/auth/me", headers=bearer(key["key"]))
            elapsed = time.monotonic() - revoked
            if response.status_code == 401 or elapsed > 2 * REVOCATION_S:
                break
            time.sleep(0.02)
        assert_error(response, 401, "unauthenticated")
        assert elapsed < REVOCATION_S


def test_jwts_are_accepted_by_both_processes_until_the_user_is_deleted(redis_url: str, tmp_path: Path) -> None:
    with two_hubs(redis_url, tmp_path) as (a, b):
        admin = login(a, ADMIN_EMAIL)
        created = a.post(
            "/users",
            json={"email": "ops@acme.example", "password": PASSWORD, "role": "operator"},
            headers=bearer(admin["token"]),
        )
        assert created.status_code == 201, created.text
        user = login(a, "ops@acme.example")

        expected = {"kind": "user", "id": user["id"], "org_id": admin["org_id"], "role": "operator"}
        for http in (a, b):
            response = http.get("/auth/me", headers=bearer(user["token"]))
            assert response.status_code == 200, response.text
            assert response.json() == expected

        assert b.delete(f"/users/{user['id']}", headers=bearer(admin["token"])).status_code == 204
        for http in (a, b):
            assert_error(http.get("/auth/me", headers=bearer(user["token"])), 401, "unauthenticated")
        # The admin's own token, issued by A, still works on B.
        assert b.get("/auth/me", headers=bearer(admin["token"])).status_code == 200
