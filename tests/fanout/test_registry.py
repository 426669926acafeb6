"""The Hub: matching subscribers, tenancy, encode once per encoding, sources to read."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest

from hub.fanout import registry
from hub.fanout.channels import Kind, Source, parse_pattern
from hub.fanout.registry import Encoding, Hub, Outgoing
from ingest import stream_keys

RESOLUTIONS = ("1s", "1m", "1h")


class Dashboard:
    """A Subscriber that keeps what it is sent."""

    def __init__(self, name: str, encoding: Encoding = "json") -> None:
        self.name = name
        self.encoding: Encoding = encoding
        self.sent: list[Outgoing] = []

    def send(self, payload: Outgoing, source: Source, offset: str) -> None:
        self.sent.append(payload)

    def messages(self) -> list[dict[str, Any]]:
        decode = msgpack.unpackb if self.encoding == "msgpack" else orjson.loads
        return [decode(payload.data) for payload in self.sent]

    def channels(self) -> list[str]:
        return [message["channel"] for message in self.messages()]


def subscribe(hub: Hub, dashboard: Dashboard, org_id: str, *patterns: str) -> None:
    for text in patterns:
        assert hub.subscribe(dashboard, org_id, parse_pattern(text))


def publish(hub: Hub, org_id: str, device: str | None, kind: Kind, channel: str, resolution: str | None = None) -> int:
    source = Source(org_id, kind, device, resolution)
    return hub.deliver(source, channel, "1-0", "ep", {"channel": channel})


def publish_everywhere(hub: Hub, org_id: str, device: str) -> None:
    """Every channel of one device and the org's alerts, from the device streams and the org streams."""
    for scope in (device, None):
        publish(hub, org_id, scope, "telemetry", f"devices/{device}/telemetry")
        publish(hub, org_id, scope, "events", f"devices/{device}/events")
        publish(hub, org_id, scope, "commands", f"devices/{device}/commands")
        for resolution in RESOLUTIONS:
            publish(hub, org_id, scope, "aggregates", f"devices/{device}/aggregates/{resolution}", resolution)
    publish(hub, org_id, None, "alerts", "alerts")


def test_message_shape_in_both_encodings() -> None:
    hub = Hub()
    text, binary = Dashboard("t"), Dashboard("b", "msgpack")
    for dashboard in (text, binary):
        subscribe(hub, dashboard, "org_a", "devices/b7/telemetry")
    data = {"device_id": "b7", "ts": 1, "metrics": {"temp": 21.5}}
    assert hub.deliver(Source("org_a", "telemetry", "b7"), "devices/b7/telemetry", "5-0", "e1", data) == 2
    expected = {"type": "message", "channel": "devices/b7/telemetry", "offset": "5-0", "epoch": "e1", "data": data}
    assert text.messages() == binary.messages() == [expected]
    assert text.sent[0].data == orjson.dumps(expected) and not text.sent[0].binary


def test_exact_and_wildcard_subscribers_get_the_stream_they_read() -> None:
    hub = Hub()
    exact, wild, mine = Dashboard("exact"), Dashboard("wild"), Dashboard("mine")
    subscribe(hub, exact, "org_a", "devices/b7/telemetry")
    subscribe(hub, wild, "org_a", "devices/+/telemetry")
    subscribe(hub, mine, "org_a", "devices/b7/#")
    assert publish(hub, "org_a", "b7", "telemetry", "devices/b7/telemetry") == 2  # the device's frames stream
    assert publish(hub, "org_a", None, "telemetry", "devices/b7/telemetry") == 1  # the org's telemetry stream
    assert publish(hub, "org_a", None, "telemetry", "devices/x/telemetry") == 1
    assert publish(hub, "org_a", "b7", "events", "devices/b7/events") == 1
    assert [len(d.sent) for d in (exact, wild, mine)] == [1, 2, 2]


def test_one_message_per_subscriber_whatever_matches() -> None:
    hub = Hub()
    dashboard = Dashboard("d")
    subscribe(hub, dashboard, "org_a", "#", "devices/+/telemetry", "devices/+/#", "+/+/telemetry")
    subscribe(hub, dashboard, "org_a", "devices/b7/telemetry", "devices/b7/#", "devices/b7/+")
    assert publish(hub, "org_a", None, "telemetry", "devices/b7/telemetry") == 1
    assert publish(hub, "org_a", "b7", "telemetry", "devices/b7/telemetry") == 1
    assert len(dashboard.sent) == 2


@pytest.mark.parametrize(
    "pattern",
    ["#", "+/#", "devices/#", "devices/+/#", "devices/+/telemetry", "+/+/+", "devices/b7/#", "devices/b7/telemetry",
     "devices/b7/+", "devices/+/aggregates/+", "devices/b7/aggregates/#", "alerts", "+", "alerts/#"],
)  # fmt: skip
def test_org_b_never_receives_org_a_messages(pattern: str) -> None:
    hub = Hub()
    spy, neighbour = Dashboard("org_b"), Dashboard("org_a")
    subscribe(hub, spy, "org_b", pattern)
    subscribe(hub, neighbour, "org_a", pattern)
    publish_everywhere(hub, "org_a", "b7")
    assert spy.sent == []
    assert neighbour.sent  # the same pattern in org_a does receive
    publish_everywhere(hub, "org_b", "b7")
    assert spy.sent and all(m["data"]["channel"] == m["channel"] for m in spy.messages())


def test_everything_pattern_gets_every_org_stream() -> None:
    hub = Hub()
    dashboard = Dashboard("d")
    subscribe(hub, dashboard, "org_a", "#")
    publish_everywhere(hub, "org_a", "b7")
    assert dashboard.channels() == [
        "devices/b7/telemetry",
        "devices/b7/events",
        "devices/b7/commands",
        *(f"devices/b7/aggregates/{r}" for r in RESOLUTIONS),
        "alerts",
    ]


def test_each_encoding_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"json": 0, "msgpack": 0}
    real_json, real_msgpack = registry.encode_json, registry.encode_msgpack

    def count_json(message: dict[str, Any]) -> bytes:
        calls["json"] += 1
        return real_json(message)

    def count_msgpack(message: dict[str, Any]) -> bytes:
        calls["msgpack"] += 1
        return real_msgpack(message)

    monkeypatch.setattr(registry, "encode_json", count_json)
    monkeypatch.setattr(registry, "encode_msgpack", count_msgpack)
    hub = Hub()
    texts = [Dashboard(f"t{i}") for i in range(50)]
    binaries = [Dashboard(f"b{i}", "msgpack") for i in range(50)]
    for i, dashboard in enumerate(texts + binaries):
        subscribe(hub, dashboard, "org_a", "devices/+/telemetry" if i % 2 else "#")
    assert publish(hub, "org_a", None, "telemetry", "devices/b7/telemetry") == 100
    assert calls == {"json": 1, "msgpack": 1}
    assert len({id(d.sent[0]) for d in texts}) == 1  # the very same encoding to every receiver
    assert len({id(d.sent[0]) for d in binaries}) == 1


def test_an_encoding_nobody_uses_is_not_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(message: dict[str, Any]) -> bytes:
        raise AssertionError("encoded for nobody")

    monkeypatch.setattr(registry, "encode_msgpack", refuse)
    hub = Hub()
    subscribe(hub, Dashboard("t"), "org_a", "alerts")
    assert publish(hub, "org_a", None, "alerts", "alerts") == 1
    assert publish(hub, "org_a", None, "telemetry", "devices/b7/telemetry") == 0


def test_sources_follow_first_and_last_subscription() -> None:
    stream_keys.use_partitions(1)  # one org telemetry stream
    added: list[Source] = []
    removed: list[Source] = []
    hub = Hub(resolutions=("1m",), on_source_added=added.append, on_source_removed=removed.append)
    one, two = Dashboard("1"), Dashboard("2")
    frames_b7 = Source("org_a", "telemetry", "b7")
    org_telemetry = Source("org_a", "telemetry", partition=0)
    subscribe(hub, one, "org_a", "devices/b7/telemetry")
    subscribe(hub, two, "org_a", "devices/b7/telemetry", "devices/+/telemetry")
    assert added == [frames_b7, org_telemetry] and hub.sources() == {frames_b7, org_telemetry}
    assert not hub.subscribe(two, "org_a", parse_pattern("devices/b7/telemetry"))  # already there
    assert hub.unsubscribe(one, "org_a", "devices/b7/telemetry")
    assert not hub.unsubscribe(one, "org_a", "devices/b7/telemetry")
    assert removed == []  # two still reads both
    assert hub.remove(two) == 2
    assert sorted(removed, key=repr) == sorted([frames_b7, org_telemetry], key=repr)
    assert hub.sources() == frozenset()
    assert publish(hub, "org_a", "b7", "telemetry", "devices/b7/telemetry") == 0


def test_a_multi_kind_pattern_needs_every_stream_it_spans() -> None:
    hub = Hub(resolutions=("1s", "1m"))
    subscribe(hub, Dashboard("d"), "org_a", "devices/b7/#")
    assert hub.sources() == {
        Source("org_a", "telemetry", "b7"),
        Source("org_a", "events", "b7"),
        Source("org_a", "commands", "b7"),
        Source("org_a", "aggregates", "b7", "1s"),
        Source("org_a", "aggregates", "b7", "1m"),
    }


def test_unsubscribe_leaves_other_subscriptions() -> None:
    hub = Hub()
    dashboard = Dashboard("d")
    subscribe(hub, dashboard, "org_a", "devices/+/telemetry", "devices/b7/events")
    assert hub.unsubscribe(dashboard, "org_a", parse_pattern("devices/+/telemetry"))
    assert [pattern.text for _, pattern in hub.subscriptions(dashboard)] == ["devices/b7/events"]
    assert publish(hub, "org_a", None, "telemetry", "devices/b7/telemetry") == 0
    assert publish(hub, "org_a", "b7", "events", "devices/b7/events") == 1
    assert not hub.unsubscribe(dashboard, "org_b", "devices/b7/events")  # another org's is another subscription


def test_a_subscriber_may_leave_while_being_sent_to() -> None:
    """A session whose buffer overflows closes and removes itself from inside send."""
    hub = Hub()

    class Leaving(Dashboard):
        def send(self, payload: Outgoing, source: Source, offset: str) -> None:
            super().send(payload, source, offset)
            hub.remove(self)

    leaving, staying = Leaving("l"), Dashboard("s")
    for dashboard in (leaving, staying):
        subscribe(hub, dashboard, "org_a", "devices/+/telemetry", "devices/b7/+")
    publish(hub, "org_a", None, "telemetry", "devices/b7/telemetry")
    publish(hub, "org_a", None, "telemetry", "devices/b7/telemetry")
    assert len(leaving.sent) == 1 and len(staying.sent) == 2


def test_a_failing_subscriber_does_not_cost_the_others(caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub()

    class Broken(Dashboard):
        def send(self, payload: Outgoing, source: Source, offset: str) -> None:
            raise RuntimeError("bug")

    broken, fine = Broken("x"), Dashboard("ok")
    subscribe(hub, broken, "org_a", "alerts")
    subscribe(hub, fine, "org_a", "alerts")
    assert publish(hub, "org_a", None, "alerts", "alerts") == 2
    assert len(fine.sent) == 1
    assert "sending to a subscriber failed" in caplog.text


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536, 70_000])
@pytest.mark.parametrize("binary", [True, False])
def test_the_framed_message_is_what_a_websocket_client_reads(size: int, binary: bool) -> None:
    """Lean connections write ``Outgoing.frame`` as it is: websockets' own client parser must read it back."""
    from websockets.client import ClientProtocol
    from websockets.frames import Frame, Opcode
    from websockets.protocol import State
    from websockets.uri import parse_uri

    data = bytes(range(256)) * (size // 256) + bytes(size % 256) if binary else b"x" * size
    outgoing = Outgoing(data, binary)
    assert outgoing.frame is outgoing.frame  # made once
    client = ClientProtocol(parse_uri("ws://localhost/"), max_size=None, state=State.OPEN)
    client.receive_data(outgoing.frame)
    [frame] = client.events_received()
    assert isinstance(frame, Frame)
    assert frame.opcode is (Opcode.BINARY if binary else Opcode.TEXT)
    assert frame.fin and frame.data == data
