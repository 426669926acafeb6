"""/health, /health/redis and /metrics."""

from __future__ import annotations

from starlette.testclient import TestClient

from hub.app import create_app
from hub.config import HubConfig
from tests.support import HubClient, bearer
from tests.test_device_gateway import connect, device_key, receive


def test_health_reports_redis(client: HubClient) -> None:
    for path in ("/health", "/health/redis"):
        response = client.get(path)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "healthy"
        assert body["checks"]["redis"]["status"] == "healthy"
        assert body["checks"]["redis"]["latency_ms"] >= 0
        assert body["version"]


def test_health_reports_the_ingest_loop_and_this_processs_connections(client: HubClient) -> None:
    tenant = client.new_tenant()
    quiet = client.get("/health").json()["checks"]
    assert quiet["ingest"] == {"status": "healthy", "frames_waiting": 0, "reading": True, "retrying": False}
    assert quiet["hub"] == {"status": "healthy", "devices": 0, "dashboards": 0, "accepting": True}
    key = device_key(client, tenant)
    with connect(client, key) as device:
        receive(device)  # hello: the session is open
        with client.http.websocket_connect("/api/v1/ws", headers=bearer(tenant.admin_token)) as dashboard:
            dashboard.send_json({"type": "ping", "id": 1})
            dashboard.receive_json()
            busy = client.get("/health").json()["checks"]["hub"]
    assert (busy["devices"], busy["dashboards"]) == (1, 1)


def test_health_is_503_when_redis_is_unreachable(config: HubConfig) -> None:
    # A Redis that refuses connections: the hub still answers, saying it is unhealthy.
    broken = config.replace(redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(broken), raise_server_exceptions=False) as http:
        health = http.get("/api/v1/health")
        me = http.get("/api/v1/auth/me", headers={"Authorization": "Bearer sk_live_whatever"})
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"
    assert health.json()["checks"]["redis"]["status"] == "unhealthy"
    # Anything else that needs the store answers 503 in the envelope, not a crash.
    assert me.status_code == 503
    assert me.json()["error"]["code"] == "unavailable"


def test_metrics_are_prometheus_text(client: HubClient) -> None:
    client.get("/health")
    response = client.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'telehub_http_requests_total{method="GET",route="/health",status="200"}' in response.text
