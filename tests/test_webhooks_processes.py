"""Webhook deliveries survive restarts: real ``telehub serve`` processes on one Redis, SIGKILLed while a
delivery waits for its retry and while an attempt is in flight; the next process delivers it."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import TIMEOUT
from tests.processes import ServeProcess, serve, telehub_env
from tests.support import PASSWORD, bearer
from tests.webhook_receiver import WAIT, Reply, receiving, verify_signature

ADMIN_EMAIL = "root@hooks.example"
SECRET = "whsec_restart-test-secret"
# The first retry waits 3 s (2.4-3.6 with jitter): time to kill the process that scheduled it.
BACKOFF = "3s,1s,1s,1s"
CLAIM_IDLE_MS = 2000


def environment(redis_url: str) -> dict[str, str]:
    return telehub_env(
        TELEHUB_REDIS_URL=redis_url,
        TELEHUB_SECRET="webhook-processes-secret-" + "x" * 40,
        TELEHUB_BOOTSTRAP_EMAIL=ADMIN_EMAIL,
        TELEHUB_BOOTSTRAP_PASSWORD=PASSWORD,
        TELEHUB_WEBHOOK_ALLOW_PRIVATE="1",
        TELEHUB_WEBHOOK_BACKOFF=BACKOFF,
        TELEHUB_WEBHOOK_TIMEOUT_MS="60000",
        TELEHUB_WEBHOOK_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS),
    )


@contextlib.contextmanager
def hub(redis_url: str, data_dir: Path) -> Iterator[ServeProcess]:
    with serve(data_dir=data_dir, env=environment(redis_url)) as process:
        yield process


def kill(process: ServeProcess) -> None:
    process.send(signal.SIGKILL)
    process.wait()


def admin_call(process: ServeProcess, method: str, path: str, **kwargs: Any) -> Any:
    with process.client() as http:
        token = http.post("/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD}).json()["token"]
        response = http.request(method, path, headers=bearer(token), **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def wait_log(process: ServeProcess, webhook_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT
    while len(log := admin_call(process, "GET", f"/webhooks/{webhook_id}/deliveries")["data"]) < count:
        assert time.monotonic() < deadline, log
        time.sleep(0.1)
    return list(log)


def test_a_delivery_survives_a_kill_while_waiting_and_a_kill_in_flight(redis_url: str, tmp_path: Path) -> None:
    with receiving() as receiver:
        receiver.script("/hook", Reply(500), Reply(200, delay_s=60))
        # 1. The first attempt fails (500); its retry is scheduled; the process dies before it is due.
        with hub(redis_url, tmp_path / "a") as first:
            webhook = admin_call(
                first, "POST", "/webhooks", json={"url": receiver.url(), "events": ["data.received"], "secret": SECRET}
            )
            admin_call(first, "POST", "/devices", json={"id": "pump-1", "name": "pump", "type": "pump"})
            admin_call(first, "POST", "/devices/pump-1/readings", json={"metrics": {"t": 1.0}})
            receiver.wait_for(1)
            log = wait_log(first, webhook["id"], 1)
            assert (log[0]["attempt"], log[0]["status_code"], log[0]["outcome"]) == (1, 500, "retrying")
            kill(first)
        # 2. Another process sends the retry when due; the endpoint hangs; that process dies mid-attempt.
        with hub(redis_url, tmp_path / "b") as second:
            receiver.wait_for(2, within=WAIT + 4)
            kill(second)
        # 3. A third process takes the attempt left in flight over (after the claim idle time) and delivers.
        with hub(redis_url, tmp_path / "c") as third:
            started = time.monotonic()
            attempts = receiver.wait_for(3, within=WAIT + CLAIM_IDLE_MS / 1000)
            assert time.monotonic() - started < WAIT
            log = wait_log(third, webhook["id"], 2)
    assert len({a.headers["telehub-delivery"] for a in attempts}) == 1
    assert len({a.json["id"] for a in attempts}) == 1
    assert attempts[0].json["data"]["device_id"] == "pump-1" and attempts[0].json["data"]["count"] == 1
    assert all(verify_signature(a.headers["telehub-signature"], SECRET, a.body) for a in attempts)
    # The killed attempt was never settled: the one that succeeded counts as the second.
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in log] == [
        (2, 200, "delivered"),
        (1, 500, "retrying"),
    ]
    time.sleep(1.5 * TIMEOUT)
    assert len(receiver.requests()) == 3
