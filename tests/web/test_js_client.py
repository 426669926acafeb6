"""The JavaScript client (clients/js, as the hub serves it) in Chromium against a live hub: resuming after an
outage with ``since`` on plain, wildcard and composite channels (nothing missed, nothing twice), a gap the hub
cannot replay reported as such, an iterator's bounded buffer, and errors carrying the contract's codes."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from playwright.async_api import Page

from clients import DeviceClient, RestClient
from tests.processes import ServeProcess
from tests.web.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, WAIT_MS, PageLog, new_device

# Installed in the page as window.t: the client module, a logged-in RestClient and HubClient whose WebSocket
# can be cut off (window.blocked: every connection attempt goes to a path that refuses it), and what each
# subscription received.
SETUP = """async ([email, password]) => {
  const telehub = await import("/static/build/telehub.js");
  const rest = new telehub.RestClient("/");
  const { token } = await rest.login(email, password);
  window.blocked = false;
  class GatedSocket extends WebSocket {
    constructor(url) {
      super(window.blocked ? url.replace("/api/v1/ws", "/api/v1/ws-cut-off") : url);
    }
  }
  const hub = new telehub.HubClient("/", {
    token, WebSocket: GatedSocket, backoff: { initialMs: 100, maximumMs: 300 },
  });
  await hub.start();
  window.t = { telehub, rest, hub, token, got: {}, subs: {}, gaps: {} };
  return hub.connections;
}"""

# Subscribe `channel` under `name`, keeping the `n` of each telemetry message (and whether a gap preceded it).
SUBSCRIBE = """async ([name, channel, options]) => {
  window.t.got[name] = [];
  window.t.gaps[name] = 0;
  window.t.subs[name] = await window.t.hub.subscribe(channel, {
    ...options,
    onMessage: (m) => {
      if (m.channel.endsWith("/telemetry")) window.t.got[name].push([m.data.metrics.n, m.gapBefore]);
    },
    onGap: () => { window.t.gaps[name] += 1; },
  });
  const s = window.t.subs[name];
  return { recovered: s.recovered, gaps: s.gaps, since: s.since() };
}"""


async def send_range(device: DeviceClient, first: int, last: int) -> None:
    for n in range(first, last + 1):
        await device.send({"n": n})
    await device.flush()


async def received(page: Page, name: str, count: int) -> list[int]:
    await page.wait_for_function(
        "([name, count]) => window.t.got[name].length >= count", arg=[name, count], timeout=WAIT_MS
    )
    got: list[list[Any]] = await page.evaluate("name => window.t.got[name]", name)
    return [int(n) for n, _ in got]


async def open_client(page: Page, hub: ServeProcess) -> None:
    await page.goto(hub.url + "/")
    assert await page.evaluate(SETUP, [ADMIN_EMAIL, ADMIN_PASSWORD]) == 1


async def test_an_outage_is_resumed_with_since_without_gap_or_duplicate(
    web_hub: ServeProcess, rest: RestClient, page: tuple[Page, PageLog], tmp_path: Path
) -> None:
    browser_page, _ = page
    device = await new_device(rest, "resume")
    await open_client(browser_page, web_hub)
    channels = {
        "exact": f"devices/{device.id}/telemetry",  # the device's stream: plain positions
        "wildcard": "devices/+/telemetry",  # the organization's stream: plain positions
        "composite": f"devices/{device.id}/#",  # several streams of the device: label=offset parts
    }
    for name, channel in channels.items():
        reply = await browser_page.evaluate(SUBSCRIBE, [name, channel, {}])
        assert reply["recovered"] is False and reply["gaps"] == 0, "a first subscribe resumes nothing"
    async with DeviceClient(web_hub.url, device.key, state_path=tmp_path / "seq.json") as client:
        await send_range(client, 1, 20)
        for name in channels:
            assert await received(browser_page, name, 20) == list(range(1, 21))

        # The connection drops and every new attempt fails for a while; the device goes on meanwhile.
        await browser_page.evaluate("() => { window.blocked = true; window.t.hub.socket.close(); }")
        await browser_page.wait_for_function(
            "() => window.t.hub.state === 'reconnecting' && window.t.hub.lastCloseCode === 1006", timeout=WAIT_MS
        )
        await send_range(client, 21, 60)
        assert await browser_page.evaluate("() => window.t.got.exact.length") == 20, "nothing came while cut off"
        await browser_page.evaluate("() => { window.blocked = false; }")

        for name in channels:
            got = await received(browser_page, name, 60)
            assert got == list(range(1, 61)), f"{name}: a gap or a duplicate: {got}"
    state = await browser_page.evaluate(
        """() => Object.fromEntries(Object.entries(window.t.subs).map(([name, s]) =>
             [name, { recovered: s.recovered, gaps: s.gaps, since: s.since() }]))"""
    )
    assert await browser_page.evaluate("() => window.t.hub.connections") == 2
    assert all(s["recovered"] is True and s["gaps"] == 0 for s in state.values()), state
    assert "=" not in state["exact"]["since"]["offset"] and "=" not in state["wildcard"]["since"]["offset"]
    assert "telemetry=" in state["composite"]["since"]["offset"], "a composite position names its streams"
    assert await browser_page.evaluate("() => window.t.gaps") == {"exact": 0, "wildcard": 0, "composite": 0}


async def test_a_position_the_hub_cannot_replay_is_reported_as_a_gap(
    web_hub: ServeProcess, rest: RestClient, page: tuple[Page, PageLog], tmp_path: Path
) -> None:
    browser_page, _ = page
    device = await new_device(rest, "gap")
    await open_client(browser_page, web_hub)
    stale = {"since": {"offset": "1-0", "epoch": "a-history-that-is-gone"}}
    reply = await browser_page.evaluate(SUBSCRIBE, ["stale", f"devices/{device.id}/telemetry", stale])
    assert reply["recovered"] is False and reply["gaps"] == 1
    assert await browser_page.evaluate("() => window.t.gaps.stale") == 1, "onGap was called"
    async with DeviceClient(web_hub.url, device.key, state_path=tmp_path / "seq.json") as client:
        await send_range(client, 1, 3)
        await received(browser_page, "stale", 3)
    got = await browser_page.evaluate("() => window.t.got.stale")
    assert got == [[1, True], [2, False], [3, False]], "the first message after the gap says so"


async def test_an_iterator_that_falls_behind_stays_bounded_and_misses_nothing(
    web_hub: ServeProcess, rest: RestClient, page: tuple[Page, PageLog], tmp_path: Path
) -> None:
    browser_page, _ = page
    device = await new_device(rest, "iter")
    await open_client(browser_page, web_hub)
    await browser_page.evaluate(
        """async (channel) => {
             window.t.iterated = await window.t.hub.subscribe(channel, { bufferSize: 4 });
           }""",
        f"devices/{device.id}/telemetry",
    )
    async with DeviceClient(web_hub.url, device.key, state_path=tmp_path / "seq.json") as client:
        await send_range(client, 1, 30)
    # Nobody read meanwhile: at most 4 messages were kept. Reading now gets all 30, in order, once each.
    values, most_kept = await browser_page.evaluate(
        """async () => {
             const sub = window.t.iterated;
             const values = [];
             let mostKept = sub.buffer.length;
             for await (const message of sub) {
               values.push(message.data.metrics.n);
               mostKept = Math.max(mostKept, sub.buffer.length);
               if (values.length === 30) break;
             }
             return [values, mostKept];
           }"""
    )
    assert values == list(range(1, 31))
    assert most_kept <= 4


async def test_errors_carry_the_contract_codes(web_hub: ServeProcess, page: tuple[Page, PageLog]) -> None:
    browser_page, _ = page
    await open_client(browser_page, web_hub)
    errors = await browser_page.evaluate(
        """async () => {
             const { telehub } = window.t;
             const caught = async (work) => {
               try { await work(); return null; } catch (e) {
                 return { name: e.name, code: e.code, status: e.status ?? null, closeCode: e.closeCode ?? null,
                          requestId: e.requestId ?? null, telehub: e instanceof telehub.TelehubError };
               }
             };
             return {
               login: await caught(() => new telehub.RestClient("/").login("nobody@example.com", "wrong")),
               missing: await caught(() => window.t.rest.getDevice("no-such-device")),
               channel: await caught(() => window.t.hub.subscribe("devices/x/nonsense")),
               twice: await caught(async () => {
                 await window.t.hub.subscribe("alerts");
                 await window.t.hub.subscribe("alerts");
               }),
               token: await caught(() => new telehub.HubClient("/", { token: "not-a-token" }).start()),
               ping: await window.t.hub.ping() >= 0,
             };
           }"""
    )
    assert errors["login"]["name"] == "ApiError" and errors["login"]["code"] == "invalid_credentials"
    assert errors["login"]["status"] == 401 and errors["login"]["requestId"].startswith("req_")
    assert errors["missing"]["code"] == "not_found" and errors["missing"]["status"] == 404
    assert errors["channel"]["name"] == "SubscriptionError" and errors["channel"]["code"] == "invalid_channel"
    assert errors["twice"]["code"] == "already_subscribed"
    assert errors["token"]["name"] == "SessionEnded" and errors["token"]["closeCode"] == 4001
    assert errors["token"]["code"] == "unauthenticated"
    assert all(error["telehub"] for error in errors.values() if isinstance(error, dict))
    assert errors["ping"] is True


async def test_positions_match_wildcards_and_round_trip_composite_offsets(
    web_hub: ServeProcess, page: tuple[Page, PageLog]
) -> None:
    browser_page, _ = page
    await browser_page.goto(web_hub.url + "/")
    checks = await browser_page.evaluate(
        """async () => {
             const { matches, Position } = await import("/static/build/telehub.js");
             const position = new Position();
             position.replied("aggregates/1m=5-0,telemetry=7-0", "aggregates/1m=e1,telemetry=e2", false);
             const fresh = position.since();
             const took = [
               position.advance("devices/d/telemetry", "9-0", "e2", 0),
               position.advance("devices/d/telemetry", "9-0", "e2", 1),   // the entry's next point
               position.advance("devices/d/telemetry", "9-0", "e2", 0),   // a second copy of the entry
               position.advance("devices/d/telemetry", "8-0", "e2", 0),   // older
             ];
             const kept = Position.fromSince(position.since());
             return {
               matches: [
                 matches("devices/+/telemetry", "devices/a/telemetry"),
                 matches("devices/#", "devices/a/aggregates/1m"),
                 matches("devices/+/telemetry", "devices/a/events"),
                 matches("devices/+", "devices/a/telemetry"),
                 matches("alerts", "alerts"),
               ],
               fresh, took, since: position.since(),
               replayedAgain: kept.advance("devices/d/telemetry", "9-0", "e2", 1),
             };
           }"""
    )
    assert checks["matches"] == [True, True, False, False, True]
    assert checks["fresh"] == {"offset": "aggregates/1m=5-0,telemetry=7-0", "epoch": "aggregates/1m=e1,telemetry=e2"}
    assert checks["took"] == [True, True, False, False]
    assert checks["since"]["offset"] == "aggregates/1m=5-0,telemetry=9-0"
    assert checks["replayedAgain"] is False, "a kept since covers its whole entry"


async def test_partitioned_positions_move_the_part_of_the_devices_partition(
    web_hub: ServeProcess, page: tuple[Page, PageLog]
) -> None:
    browser_page, _ = page
    await browser_page.goto(web_hub.url + "/")
    devices = ["boiler-7", "a", "pump.3_x", "Z" * 64]
    checks = await browser_page.evaluate(
        """async (devices) => {
             const { crc32, messageLabel, Position } = await import("/static/build/telehub.js");
             const position = new Position();
             position.replied("commands=1-0,telemetry.0=1-0,telemetry.1=2-0,telemetry.2=3-0",
                              "commands=E,telemetry.0=E,telemetry.1=E,telemetry.2=E", false);
             const took = position.advance("devices/boiler-7/telemetry", "9-0", "E", 0);
             const kept = Position.fromSince(position.since());
             return {
               crcs: devices.map((d) => crc32(d)),
               labels: devices.map((d) => messageLabel(`devices/${d}/aggregates/1m`, new Map([["aggregates/1m", 8]]))),
               took, since: position.since().offset,
               again: kept.advance("devices/boiler-7/telemetry", "9-0", "E", 0),
             };
           }""",
        devices,
    )
    assert checks["crcs"] == [zlib.crc32(d.encode()) for d in devices]
    assert checks["labels"] == [f"aggregates/1m.{zlib.crc32(d.encode()) % 8}" for d in devices]
    part = zlib.crc32(b"boiler-7") % 3
    expected = {"commands": "1-0", "telemetry.0": "1-0", "telemetry.1": "2-0", "telemetry.2": "3-0"}
    expected[f"telemetry.{part}"] = "9-0"
    assert checks["took"] is True
    assert checks["since"] == ",".join(f"{label}={value}" for label, value in sorted(expected.items()))
    assert checks["again"] is False, "a kept since knows the partitions"
