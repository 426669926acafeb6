"""How a dashboard connection writes what the fan-out hands it: a quiet dashboard on the next turn of the event
loop, a busy one at most once per ``COALESCE_S`` (every message, in order, in fewer system calls)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from hub.fanout.connection import COALESCE_S, DashboardConnection
from hub.fanout.registry import Outgoing
from hub.fanout.service import Fanout


class RecordingTransport:
    """What a socket would have been asked to send, one list per ``writelines`` call, and when."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, list[bytes]]] = []

    def writelines(self, frames: list[bytes]) -> None:
        self.writes.append((asyncio.get_running_loop().time(), list(frames)))

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


def connection() -> tuple[DashboardConnection, RecordingTransport]:
    fanout = cast(Fanout, SimpleNamespace(limits=SimpleNamespace(send_buffer_bytes=1 << 20)))
    dashboard = DashboardConnection(fanout, max_frame_bytes=65536, heartbeat=None)
    transport = RecordingTransport()
    dashboard.connection_made(cast(Any, transport))
    return dashboard, transport


def message(n: int) -> Outgoing:
    return Outgoing(b'{"n": %d}' % n, binary=False)


async def test_a_quiet_dashboard_is_written_to_on_the_next_turn() -> None:
    dashboard, transport = connection()
    sent = [message(1), message(2)]
    for outgoing in sent:
        assert dashboard.put(outgoing)
    await asyncio.sleep(0)
    assert transport.writes and transport.writes[0][1] == [m.frame for m in sent]


async def test_a_busy_dashboard_gets_every_message_in_order_at_most_one_write_per_interval() -> None:
    dashboard, transport = connection()
    loop = asyncio.get_running_loop()
    sent = [message(n) for n in range(400)]
    started = loop.time()
    for n, outgoing in enumerate(sent):
        dashboard.put(outgoing)
        if n % 4 == 3:
            await asyncio.sleep(COALESCE_S / 10)  # 40 messages per interval, each on a turn of its own
    await asyncio.sleep(2 * COALESCE_S)
    elapsed = transport.writes[-1][0] - started
    assert [frame for _, frames in transport.writes for frame in frames] == [m.frame for m in sent]
    assert len(transport.writes) <= elapsed / COALESCE_S + 2, (len(transport.writes), elapsed)
    gaps = [b[0] - a[0] for a, b in zip(transport.writes, transport.writes[1:], strict=False)]
    assert min(gaps) >= COALESCE_S * 0.99
