"""The error envelope and X-Request-ID on every response: routing errors, bad bodies, crashes."""

from __future__ import annotations

import logging

import pytest
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from hub.app import create_app
from hub.config import HubConfig
from tests.support import HubClient, assert_error


def test_every_response_carries_a_request_id(client: HubClient) -> None:
    first = client.get("/health")
    second = client.get("/health")
    assert first.headers["x-request-id"].startswith("req_")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_unknown_path_and_wrong_method_use_the_envelope(client: HubClient) -> None:
    assert_error(client.get("/no-such-thing"), 404, "not_found")
    assert_error(client.http.get("/nowhere"), 404, "not_found")
    assert_error(client.put("/auth/login", json={}), 405, "method_not_allowed")


def test_oversize_body_is_413(client: HubClient) -> None:
    limit = client.services.config.max_body_bytes
    big = b'{"email": "' + b"a" * limit + b'", "password": "x"}'
    response = client.post("/auth/login", content=big, headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")


def test_non_object_json_is_a_validation_error(client: HubClient) -> None:
    response = client.post("/auth/login", json=[1, 2])
    assert assert_error(response, 400, "validation_error")["details"] == {"body": "must be a JSON object"}


def test_a_crash_is_a_500_envelope_with_no_internals_and_a_logged_traceback(
    config: HubConfig, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(request: Request) -> None:
        raise RuntimeError("secret internal detail")

    app = create_app(config)
    app.router.routes.append(Route("/boom", boom))
    with TestClient(app, raise_server_exceptions=False) as http, caplog.at_level(logging.ERROR):
        response = http.get("/boom")
    error = assert_error(response, 500, "internal_error")
    assert "secret internal detail" not in response.text
    logged = [r for r in caplog.records if error["request_id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None
