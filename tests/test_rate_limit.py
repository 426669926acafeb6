"""Rate limits per credential and per IP, with the X-RateLimit-* headers (cross-process: test_multiprocess)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from hub.app import create_app
from hub.config import HubConfig
from tests.support import HubClient, assert_error, bearer


@pytest.fixture
def limited(config: HubConfig) -> Iterator[HubClient]:
    """The app with a burst of 5 and 60 requests a minute (one token a second)."""
    strict = config.replace(rate_limit_burst=5, rate_limit_per_minute=60)
    with TestClient(create_app(strict), raise_server_exceptions=False) as http:
        yield HubClient(http)


def test_headers_count_down_then_429_with_retry_after(limited: HubClient) -> None:
    remaining = []
    for _ in range(5):
        response = limited.get("/health")
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "60"
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
        assert int(response.headers["x-ratelimit-reset"]) >= int(time.time())
    assert remaining == [4, 3, 2, 1, 0]
    blocked = limited.get("/health")
    assert_error(blocked, 429, "rate_limited")
    assert blocked.headers["retry-after"] == "1"
    assert blocked.headers["x-ratelimit-remaining"] == "0"


def test_each_credential_has_its_own_bucket(limited: HubClient) -> None:
    tenant = limited.new_tenant()  # login spends one of the IP's tokens
    for _ in range(4):
        assert limited.get("/health").status_code == 200
    assert_error(limited.get("/health"), 429, "rate_limited")
    # The admin's JWT is counted apart from the anonymous IP.
    for _ in range(5):
        assert limited.get("/auth/me", headers=tenant.admin).status_code == 200
    assert_error(limited.get("/auth/me", headers=tenant.admin), 429, "rate_limited")


def test_bad_tokens_are_counted_against_the_ip(limited: HubClient) -> None:
    for _ in range(5):
        assert_error(limited.get("/auth/me", headers=bearer("sk_live_guess")), 401, "unauthenticated")
    assert_error(limited.get("/auth/me", headers=bearer("sk_live_guess")), 429, "rate_limited")


def test_the_bucket_refills_over_time(limited: HubClient) -> None:
    for _ in range(5):
        limited.get("/health")
    assert limited.get("/health").status_code == 429
    time.sleep(1.1)
    assert limited.get("/health").status_code == 200
