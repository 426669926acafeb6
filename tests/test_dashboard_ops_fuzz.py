"""Fuzzing the dashboard WebSocket's ops (hypothesis), in-process against a real Redis.

Whatever a client sends (random JSON and MessagePack structures, ops with fields of every wrong type, channels
made of wildcard and odd segments, resume positions that were never given, undecodable bytes), each message
gets exactly one answer in the contract's format: a reply, a pong, or an error with a known code and a
message, carrying the message's id. The connection stays open and answers the next ping. A stateful run of
subscribes and unsubscribes agrees with a model of the connection's subscriptions at every step."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from hub.config import HubConfig
from tests.support import HubClient, bearer

DASHBOARD = "/api/v1/ws"
MSGPACK = "telehub.v1.msgpack"
ERROR_CODES = {
    "invalid_message",
    "invalid_request",
    "invalid_channel",
    "unknown_op",
    "not_subscribed",
    "already_subscribed",
    "already_authenticated",
    "too_many_subscriptions",
    "too_large",
}
SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
segments = st.sampled_from(
    ["devices", "+", "#", "telemetry", "aggregates", "1s", "1m", "7m", "events", "commands", "alerts", "d-1", "", "é"]
)
channels = st.lists(segments, max_size=5).map("/".join) | st.text(max_size=30)
positions = st.fixed_dictionaries({"offset": st.text(max_size=30), "epoch": st.text(max_size=30)})
ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["subscribe", "unsubscribe", "ping", "auth", "publish"]) | values},
    optional={
        "id": scalars,
        "channel": channels | values,
        "since": positions | values,
        "last": st.integers(min_value=-5, max_value=2**40) | values,
        "token": st.text(max_size=20),
    },
)
messages = ops | values


def send(ws: Any, binary: bool, message: Any) -> None:
    if binary:
        ws.send_bytes(msgpack.packb(message))
    else:
        ws.send_text(orjson.dumps(message).decode())


def receive(ws: Any, binary: bool) -> Any:
    return msgpack.unpackb(ws.receive_bytes()) if binary else orjson.loads(ws.receive_text())


def answers_until_pong(ws: Any, binary: bool, sentinel: str) -> list[dict[str, Any]]:
    """Send a ping with ``sentinel`` as its id; every frame received until its pong (the pong left out)."""
    send(ws, binary, {"op": "ping", "id": sentinel})
    received = []
    while (answer := receive(ws, binary)) != {"type": "pong", "id": sentinel}:
        received.append(answer)
    return received


def check_answer(answer: dict[str, Any], sent: Any) -> None:
    op_id = sent.get("id") if isinstance(sent, dict) else None
    assert answer.get("type") in {"reply", "error", "pong"}, answer
    if isinstance(op_id, (str, bool, type(None))) or (isinstance(op_id, int) and abs(op_id) < 2**53):
        assert answer["id"] == op_id, (answer, sent)
    if answer["type"] == "error":
        error = answer["error"]
        assert error["code"] in ERROR_CODES and isinstance(error["message"], str) and error["message"], answer
    if answer["type"] == "reply":
        assert isinstance(sent, dict) and sent.get("op") in {"subscribe", "unsubscribe"}, (answer, sent)


@pytest.fixture
def config(config: HubConfig) -> HubConfig:
    return config.replace(dashboard_max_subscriptions=Subscriptions.LIMIT)


@pytest.fixture
def token(client: HubClient) -> Iterator[str]:
    yield client.new_tenant("fuzz").admin_token


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
def test_any_message_gets_one_answer_in_the_contract_and_the_connection_lives(
    client: HubClient, token: str, binary: bool
) -> None:
    sentinels = itertools.count()
    protocols = [MSGPACK] if binary else None
    with client.http.websocket_connect(DASHBOARD, headers=bearer(token), subprotocols=protocols) as ws:

        @SETTINGS
        @given(message=messages)
        def one(message: Any) -> None:
            send(ws, binary, message)
            received = answers_until_pong(ws, binary, f"sentinel-{next(sentinels)}")
            assert len(received) == 1, (message, received)
            check_answer(received[0], message)
            if received[0]["type"] == "reply" and message.get("op") == "subscribe":  # leave none behind
                send(ws, binary, {"op": "unsubscribe", "channel": received[0]["result"]["channel"]})
                assert receive(ws, binary)["type"] == "reply"

        one()


@SETTINGS
@given(raw=st.binary(max_size=64) | st.text(max_size=64))
def test_undecodable_frames_are_invalid_message_errors(client: HubClient, token: str, raw: bytes | str) -> None:
    with client.http.websocket_connect(DASHBOARD, headers=bearer(token)) as ws:
        ws.send_bytes(raw) if isinstance(raw, bytes) else ws.send_text(raw)
        received = answers_until_pong(ws, False, "after")
    assert len(received) == 1
    decoded: Any = None
    try:
        decoded = msgpack.unpackb(raw) if isinstance(raw, bytes) else orjson.loads(raw)
    except Exception:
        assert received[0]["type"] == "error" and received[0]["error"]["code"] == "invalid_message", received
    else:
        check_answer(received[0], decoded)


VALID = ["devices/d-1/telemetry", "devices/+/telemetry", "devices/d-1/#", "devices/+/aggregates/1m", "alerts", "#"]


class Subscriptions(RuleBasedStateMachine):
    """A connection's subscriptions against a model: a set of channels, at most ``LIMIT`` of them."""

    ws: Any = None
    LIMIT = 4

    def __init__(self) -> None:
        super().__init__()
        self.model: set[str] = set()
        self.ids = itertools.count(1)

    def ask(self, op: dict[str, Any]) -> dict[str, Any]:
        op_id = next(self.ids)
        self.ws.send_text(orjson.dumps({**op, "id": op_id}).decode())
        answer: dict[str, Any] = orjson.loads(self.ws.receive_text())
        assert answer["id"] == op_id
        return answer

    @rule(channel=st.sampled_from(VALID))
    def subscribe(self, channel: str) -> None:
        answer = self.ask({"op": "subscribe", "channel": channel})
        if channel in self.model:
            assert answer["error"]["code"] == "already_subscribed"
        elif len(self.model) >= self.LIMIT:
            assert answer["error"]["code"] == "too_many_subscriptions"
        else:
            assert answer["type"] == "reply" and answer["result"]["channel"] == channel, answer
            self.model.add(channel)

    @rule(channel=st.sampled_from(VALID))
    def unsubscribe(self, channel: str) -> None:
        answer = self.ask({"op": "unsubscribe", "channel": channel})
        if channel in self.model:
            assert answer == {"type": "reply", "id": answer["id"], "result": {"channel": channel}}
            self.model.discard(channel)
        else:
            assert answer["error"]["code"] == "not_subscribed"

    @invariant()
    def answers_pings(self) -> None:
        if self.ws is not None:
            assert self.ask({"op": "ping"})["type"] == "pong"

    def teardown(self) -> None:
        for channel in sorted(self.model):
            assert self.ask({"op": "unsubscribe", "channel": channel})["type"] == "reply"


def subscriptions() -> Subscriptions:
    """The machine's factory. A function, not the class: hypothesis digests the factory's source, and
    ``inspect.getsource`` of a class parses its whole module with ``ast.parse``. On CPython 3.11 the AST builder's
    recursion count is shared by all threads (python/cpython#106905), so a parse here while the app's thread
    formats a traceback (3.11's tracebacks parse each line for their carets) failed with "AST constructor
    recursion depth mismatch" in CI; a function's source is found without parsing."""
    return Subscriptions()


def test_subscriptions_follow_their_model(client: HubClient, token: str) -> None:
    with client.http.websocket_connect(DASHBOARD, headers=bearer(token)) as ws:
        Subscriptions.ws = ws
        try:
            run_state_machine_as_test(
                subscriptions, settings=settings(max_examples=40, stateful_step_count=20, deadline=None)
            )
        finally:
            Subscriptions.ws = None
