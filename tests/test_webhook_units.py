"""The pure parts of webhooks, without Redis or an event loop: signatures, URL checks, coalescing, event ids."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from hub.webhooks.events import TelemetryCoalescer, delivery_id, log_event
from hub.webhooks.signing import new_secret, signature_header, verify
from hub.webhooks.ssrf import Refused, UrlGuard, is_public, url_problem

BODY = b'{"id":"evt_1","type":"device.online"}'


def test_a_signature_verifies_only_with_its_secret_body_and_a_recent_time() -> None:
    secret = new_secret()
    header = signature_header(secret, 1_800_000_000, BODY)
    assert header.startswith("t=1800000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify(header, secret, BODY, now=1_800_000_100)
    assert not verify(header, secret, BODY + b" ", now=1_800_000_100)
    assert not verify(header, new_secret(), BODY, now=1_800_000_100)
    assert not verify(header, secret, BODY, now=1_800_000_000 + 301)
    assert not verify("v1=abc", secret, BODY, now=1_800_000_000)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://hooks.example.com/in?x=1", None),
        ("http://hooks.example.com:8080/", None),
        ("ftp://hooks.example.com/", "must be an http:// or https:// URL"),
        ("http:///path", "must name a host"),
        ("https://u:p@hooks.example.com/", "must not carry credentials; deliveries are signed instead"),
        ("https://hooks.example.com/#x", "must not have a #fragment"),
        ("https://hooks.example.com:99999/", "is not a valid URL"),
    ],
)
def test_url_problems(url: str, problem: str | None) -> None:
    assert url_problem(url) == problem


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:10.0.0.1", False),
        ("224.0.0.1", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(address) is public


def test_the_guard_connects_to_the_address_it_checked_and_keeps_the_name() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34"] if host == "hooks.example.com" else ["93.184.216.34", "10.0.0.1"]

    guard = UrlGuard(allow_private=False, resolve=resolve)
    target = asyncio.run(guard.target("https://hooks.example.com:8443/in?a=1"))
    assert str(target.url) == "https://93.184.216.34:8443/in?a=1"
    assert target.headers == {"Host": "hooks.example.com:8443"}
    assert target.extensions == {"sni_hostname": "hooks.example.com"}
    with pytest.raises(Refused, match=r"mixed\.example\.com resolves to a private.* \(10\.0\.0\.1\)"):
        asyncio.run(guard.target("https://mixed.example.com/"))
    allowed = UrlGuard(allow_private=True, resolve=resolve)
    assert str(asyncio.run(allowed.target("http://mixed.example.com/")).url) == "http://93.184.216.34/"


def test_telemetry_is_coalesced_per_device_and_second() -> None:
    coalescer = TelemetryCoalescer("org_1", "th:{org_1}:telemetry")
    for n in range(5):
        coalescer.add("pump-1", f"1800000000{n:03d}-0")
    coalescer.add("pump-2", "1800000000500-0")
    assert coalescer.closed(now_ms=1_800_000_001_500) == []  # within the grace after the second
    coalescer.add("pump-1", "1800000001002-0")  # a later second was read: the first one is over
    closed = coalescer.closed(now_ms=1_800_000_001_010)
    events = {b.device_id: orjson.loads(coalescer.event(b).body) for b in closed}
    assert {device: e["data"]["count"] for device, e in events.items()} == {"pump-1": 5, "pump-2": 1}
    assert events["pump-1"]["data"]["start"] == "2027-01-15T08:00:00.000Z"
    assert events["pump-1"]["data"]["end"] == "2027-01-15T08:00:01.000Z"
    assert list(coalescer.buckets) == [("pump-1", 1_800_000_001)]
    assert [len(b.entries) for b in coalescer.closed(now_ms=1_800_000_003_000)] == [1]


def test_ids_are_derived_from_the_entry_so_a_second_read_makes_the_same_delivery() -> None:
    fields = {b"e": b"device.online", b"d": b"pump-1", b"b": b"0", b"f": b'{"type":"device.online","ts":1}'}
    first = log_event("org_1", "th:{org_1}:events", "1-0", fields)
    again = log_event("org_1", "th:{org_1}:events", "1-0", fields)
    other = log_event("org_1", "th:{org_1}:events", "2-0", fields)
    assert first is not None and again is not None and other is not None
    assert first.id == again.id != other.id
    assert delivery_id(first.id, "whk_a") == delivery_id(again.id, "whk_a") != delivery_id(first.id, "whk_b")
    assert orjson.loads(first.body)["data"] == {"device_id": "pump-1", "ts": 1}
    queued = {b"e": b"command.queued", b"d": b"pump-1", b"b": b"0", b"f": b"{}"}
    assert log_event("org_1", "th:{org_1}:events", "3-0", queued) is None
