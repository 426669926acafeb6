"""tests/secret_scan.py, the session's check that no log line holds a key, token or password: its detector on
realistic lines, its reading of process output, and one run of real requests with secrets (in-process and
through ``telehub serve --log-level debug``) whose logs must show the requests and none of the secrets."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from starlette.testclient import WebSocketDenialResponse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from clients.log_redaction import redact
from hub.config import HubConfig
from tests import secret_scan
from tests.conftest import TIMEOUT
from tests.processes import admin_hub_env, serve
from tests.secret_scan import Detector, lines_to_scan, recording
from tests.support import PASSWORD, HubClient, bearer

API_KEY = "sk_live_" + secrets.token_urlsafe(32)
DEVICE_KEY = "dk_" + secrets.token_urlsafe(32)
REGISTRATION_TOKEN = "rtk_" + secrets.token_urlsafe(32)
WEBHOOK_SECRET = "whsec_" + secrets.token_urlsafe(32)
JWT = jwt.encode(
    {"sub": "usr_3kq9Zb1x", "org": "org_a8Qe2LmW", "role": "admin", "exp": int(time.time()) + 3600},
    "test-secret-" + "x" * 60,
    algorithm="HS256",
)
REDIS_PASSWORD = secrets.token_urlsafe(32)
DEVICE_PROTOCOL = Subprotocol("telehub.v1")


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (
            f'2026-11-22 21:21:35,123 INFO telehub.http: created key {{"key": "{API_KEY}", "role": "operator"}}',
            "API key",
        ),
        (f"DEBUG:    < authorization: Bearer {DEVICE_KEY}", "device key"),
        (f"2026-11-22 21:21:35,123 DEBUG ingest.lean_websocket: < Authorization: Bearer {JWT}", "JWT"),
        (f"INFO telehub.http: provisioning with {REGISTRATION_TOKEN}", "registration token"),
        (f"WARNING telehub.webhooks: signing with {WEBHOOK_SECRET} failed", "webhook secret"),
        (f'DEBUG websockets.client: > TEXT \'{{"op": "auth", "token": "{JWT}"}}\' [312 bytes]', "JWT"),
        (f"ERROR telehub: cannot reach redis://:{REDIS_PASSWORD}@127.0.0.1:40123/0", "URL password"),
        ('INFO telehub.http: body {"email": "a@example.com", "password": "Tr0ub4dor&3"}', "credential field"),
        ("DEBUG httpx: GET http://hub:8080/api/v1/ws?token=opaque-session-credential", "credential parameter"),
        ("DEBUG:    < Authorization: Bearer some-opaque-credential-1234", "bearer credential"),
    ],
)
def test_a_line_with_a_credential_is_found(line: str, kind: str) -> None:
    hits = Detector().find(line)
    assert [hit.kind for hit in hits] == [kind], hits


def test_a_known_password_is_found_anywhere() -> None:
    detector = Detector([PASSWORD])
    hits = detector.find(f"2026-11-22 21:21:35,123 WARNING telehub.auth: login failed for {PASSWORD}")
    assert [hit.kind for hit in hits] == ["known secret"]
    assert Detector().find(f"login failed for {PASSWORD}") == []  # the shape alone does not tell


@pytest.mark.parametrize(
    "line",
    [
        "2026-11-22 21:21:35,123 ERROR telehub.http: request req_5f2a9c0b1d3e4f5a6b7c8d9e failed",
        "DEBUG redis: HGETALL th:apikey:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "2026-11-22 21:21:35,123 WARNING telehub.fanout: skipping unreadable entry 1732310495123-0 of th:{org_x}:tel",
        'INFO:     127.0.0.1:53412 - "GET /api/v1/devices?cursor=eyJwIjoiMTcwMC0wIiwibyI6ImRlc2MifQ&limit=50 HTTP/1.1" '
        "200 OK",
        'INFO:     127.0.0.1:53412 - "POST /api/v1/auth/login HTTP/1.1" 401 Unauthorized',
        "2026-11-22 21:21:35,123 DEBUG ingest.lean_websocket: < Authorization: [redacted]",
        'DEBUG websockets.client: > TEXT \'{"op": "auth", "token": "[redacted]...Zk3"}\' [312 bytes]',
        'INFO telehub.http: {"id": "key_8Fq2", "prefix": "sk_live_AbC1", "name": "ci"} listed',
        "DEBUG ingest.lean_websocket: < BINARY 84 a3 73 65 71 01 a2 74 73 cf 00 00 01 93 [40 bytes]",
        "INFO telehub: telehub 0.1.0 on http://127.0.0.1:8080 with embedded Redis (data dir /tmp/x), 1 worker(s)",
        "telehub: TELEHUB_SECRET: must be at least 32 characters",
        "INFO telehub.bootstrap: created organization acme (org_a8Qe2LmW) with admin root@acme.example",
        "DEBUG asyncio: Using selector: EpollSelector",
        "an API key sk_live_… or a device key dk_… as Authorization: Bearer",
        "INFO telehub.webhooks: delivery dlv_Q2hK9x: 503 from http://127.0.0.1:40125/hook; retrying",
        "DEBUG:    = connection is OPEN; token bucket tokens=97 of 100",
    ],
)
def test_an_ordinary_line_is_not_found(line: str) -> None:
    assert Detector().find(line) == []


def test_a_masked_line_keeps_the_kind_and_public_prefix_only() -> None:
    detector = Detector([PASSWORD])
    line = f"DEBUG:    < Authorization: Bearer {API_KEY}; password {PASSWORD}"
    masked = detector.mask(line)
    assert API_KEY not in masked and PASSWORD not in masked
    assert f"sk_live_…<API key, {len(API_KEY)} chars>" in masked
    assert f"…<known secret, {len(PASSWORD)} chars>" in masked


def test_the_hubs_redaction_leaves_nothing_to_find() -> None:
    """clients.log_redaction on the lines the protocol loggers write at debug: the secret goes, the line stays."""
    lines = [
        f"< Authorization: Bearer {DEVICE_KEY}",
        f'> TEXT \'{{"op": "auth", "token": "{JWT}"}}\' [312 bytes]',
        f'> TEXT \'{{"op": "auth", "token": "{API_KEY}"}}\' [74 bytes]',
        f"connecting to redis://:{REDIS_PASSWORD}@127.0.0.1:40123/0",
        f'127.0.0.1:53412 - "GET /api/v1/ws?token={JWT} HTTP/1.1" 403',
    ]
    for line in lines:
        safe = redact(line)
        assert Detector().find(safe) == [], safe
        assert "[redacted]" in safe
    assert redact("< Upgrade: websocket") == "< Upgrade: websocket"


def test_a_serve_log_is_read_without_the_demo_login_and_the_command_echo() -> None:
    demo_password = secrets.token_urlsafe(12)
    log = "\n".join(
        [
            f"$ /work/.venv/bin/telehub serve --port 8080 --redis-url redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0",
            "2026-11-22 21:21:35,123 INFO telehub: telehub 0.1.0 on http://127.0.0.1:8080 with external Redis",
            "",
            "  demo organization org_a8Qe2LmW",
            "  dashboard  http://127.0.0.1:8080/",
            "  log in with",
            "    email    demo@telehub.local",
            f"    password {demo_password}",
            "  REST       POST http://127.0.0.1:8080/api/v1/auth/login with that email and password",
            "  alert rule overheat: temp > 80 for 10 s on every sensor",
            f"2026-11-22 21:21:36,000 WARNING telehub.http: login failed with {demo_password}",
        ]
    )
    detector = Detector()
    scanned = list(lines_to_scan(log, "serve", detector=detector))
    assert not any("password " in line or line.startswith("$ ") for line in scanned)
    found = [line for line in scanned if detector.find(line)]
    assert found == [scanned[-1]]  # the demo password, learnt from the block, anywhere else


def test_admin_stdout_is_its_result_but_its_log_lines_are_read() -> None:
    result = json.dumps({"id": "key_8Fq2", "key": API_KEY, "role": "admin"}, indent=2)
    logged = f"2026-11-22 21:21:35,123 WARNING telehub: key {API_KEY}"
    stdout = result + "\n" + logged
    admin = ["/work/.venv/bin/telehub", "admin", "create-api-key", "--org", "org_x", "--role", "admin", "--name", "n"]
    assert list(lines_to_scan(stdout, "stdout", admin)) == [logged]
    assert len(list(lines_to_scan(stdout, "stdout", ["/work/.venv/bin/telehub", "simulate"]))) == len(
        stdout.splitlines()
    )


def test_requests_with_secrets_leave_none_in_the_logs(client: HubClient, config: HubConfig, tmp_path: Path) -> None:
    """Logins (good and failed), an API key used, device keys offered (wrong and right) and a dashboard token
    sent as a message, in-process and through ``telehub serve --log-level debug``: the requests are in the logs,
    their secrets are not."""
    if not secret_scan.capturing():
        pytest.skip("the secret_scan plugin is disabled (-p no:tests.secret_scan): this process's logs are not read")
    wrong_password = "wrong-" + secrets.token_urlsafe(12)
    wrong_key = "dk_" + secrets.token_urlsafe(32)
    email = "scan@example.com"
    env = admin_hub_env("secret-scan", email, PASSWORD)
    known = [PASSWORD, wrong_password, wrong_key, config.secret, env["TELEHUB_SECRET"]]
    with recording() as logged:
        tenant = client.new_tenant("scan")
        failed = client.post("/auth/login", json={"email": tenant.admin_email, "password": wrong_password})
        assert failed.status_code == 401
        key = client.new_api_key(tenant, "operator")
        assert client.get("/devices", headers=bearer(key)).status_code == 200
        made = client.post("/devices", json={"id": "scan-1", "name": "Scan", "type": "sensor"}, headers=tenant.admin)
        assert made.status_code == 201, made.text
        made = client.post("/devices/scan-1/keys", headers=tenant.admin)
        assert made.status_code == 201, made.text
        known += [tenant.admin_token, key, made.json()["device_key"]]
        with (
            pytest.raises(WebSocketDenialResponse),
            client.http.websocket_connect("/api/v1/ws/device", headers=bearer(wrong_key)),
        ):
            pass

        with serve(data_dir=tmp_path / "data", env=env, args=["--log-level", "debug"]) as hub, hub.client() as http:
            token = http.post("/auth/login", json={"email": email, "password": PASSWORD}).json()["token"]
            assert http.post("/auth/login", json={"email": email, "password": wrong_password}).status_code == 401
            made = http.post("/api-keys", json={"name": "scan", "role": "operator"}, headers=bearer(token))
            served_key = made.json()["key"]
            assert http.get("/devices", headers=bearer(served_key)).status_code == 200
            made = http.post("/devices", json={"id": "scan-1", "name": "Scan", "type": "sensor"}, headers=bearer(token))
            assert made.status_code == 201, made.text
            device_key = http.post("/devices/scan-1/keys", headers=bearer(token)).json()["device_key"]
            known += [token, served_key, device_key]
            ws_url = "ws" + hub.url.removeprefix("http") + "/api/v1"
            with pytest.raises(InvalidStatus) as refused:
                connect(f"{ws_url}/ws/device", additional_headers=bearer(wrong_key), open_timeout=5 * TIMEOUT)
            assert refused.value.response.status_code == 401
            with connect(
                f"{ws_url}/ws/device",
                additional_headers=bearer(device_key),
                subprotocols=[DEVICE_PROTOCOL],
                open_timeout=5 * TIMEOUT,
            ) as device:
                device.recv(timeout=5 * TIMEOUT)  # the hello
            with connect(f"{ws_url}/ws", open_timeout=5 * TIMEOUT) as dashboard:
                dashboard.send(json.dumps({"op": "auth", "token": token}))
                assert json.loads(dashboard.recv(timeout=5 * TIMEOUT))["result"]["principal"]["kind"] == "user"
    detector = Detector(known)
    served = list(lines_to_scan(hub.output(), "serve", detector=detector))
    leaks = [detector.mask(line) for line in [*logged, *served] if detector.find(line)]
    assert leaks == []
    # The scan saw the requests: this process's client and the server's access log and debug handshake lines.
    assert any("POST http://testserver/api/v1/auth/login" in line for line in logged), logged
    assert any("> authorization: [redacted]" in line.lower() for line in logged), logged
    for request in ('"POST /api/v1/auth/login HTTP/1.1" 401', '"GET /api/v1/devices HTTP/1.1" 200'):
        assert any(request in line for line in served), hub.output()
    assert any("< GET /api/v1/ws/device HTTP/1.1" in line for line in served), hub.output()
    assert any("< authorization: [redacted]" in line.lower() for line in served), hub.output()
    assert any('< TEXT \'{"op": "auth", "token": "[redacted]"}\'' in line for line in served), hub.output()


SDK_ALONE = """
import asyncio, logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from clients import DeviceClient

async def main() -> None:
    async with DeviceClient(sys.argv[1], sys.argv[2]) as device:
        await (await device.send({"n": 1}))
    assert not any(name == "hub" or name.startswith("hub.") for name in sys.modules), "the SDK loaded the hub"

asyncio.run(main())
"""


def test_the_sdk_alone_logs_no_key_at_debug(tmp_path: Path) -> None:
    """A device program that uses only the SDK (the hub not loaded) and logs everything at debug: the handshake
    is in its log with the Authorization header redacted, and its key nowhere."""
    env = admin_hub_env("sdk-scan", "sdk-scan@example.com", PASSWORD)
    with serve(data_dir=tmp_path / "data", env=env) as hub, hub.client() as http:
        token = http.post("/auth/login", json={"email": "sdk-scan@example.com", "password": PASSWORD}).json()["token"]
        made = http.post("/devices", json={"id": "sdk-1", "name": "SDK", "type": "sensor"}, headers=bearer(token))
        assert made.status_code == 201, made.text
        device_key = http.post("/devices/sdk-1/keys", headers=bearer(token)).json()["device_key"]
        program = subprocess.run(
            [sys.executable, "-c", SDK_ALONE, hub.url, device_key],
            capture_output=True,
            text=True,
            timeout=30 * TIMEOUT,
            check=False,
        )
    assert program.returncode == 0, program.stderr
    assert "> Authorization: [redacted]" in program.stderr, program.stderr
    assert device_key not in program.stderr and device_key[3:20] not in program.stderr
