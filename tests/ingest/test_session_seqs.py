"""Which seqs a device connection takes: growing ones, resends of what it sent, never one it skipped."""

from __future__ import annotations

from typing import Any

from ingest.ports import DeviceIdentity
from ingest.session import MAX_SKIPPED_RANGES, DeviceSession


async def _nowhere(message: dict[str, Any]) -> None:
    raise AssertionError("nothing is sent in these tests")


def session(last_stored: int) -> DeviceSession:
    made = DeviceSession(DeviceIdentity("org_a", "d1"), _nowhere, max_in_flight=8, binary=True)
    made.acked_seq = made.received_seq = last_stored  # what start() sets from hello's last_seq
    return made


def test_growing_seqs_and_resends_are_taken_skipped_ones_are_not() -> None:
    s = session(16)
    assert all(s.received(seq) for seq in (3, 16, 17, 18, 21, 25))  # at or below 16: resends of stored frames
    assert [s.received(seq) for seq in (18, 21, 17)] == [True, True, True]  # resends of frames sent here
    assert [s.received(seq) for seq in (19, 20, 22, 24)] == [False, False, False, False]  # skipped: out of order
    assert s.received(26) and s.received_seq == 26
    assert s.received(0)  # command results carry no seq


def test_only_the_latest_skipped_ranges_are_remembered() -> None:
    s = session(0)
    for seq in range(2, 2 * (MAX_SKIPPED_RANGES + 2), 2):  # 2, 4, 6…: every odd seq skipped
        assert s.received(seq)
    assert not s.received(s.received_seq - 1)
    assert s.received(1)  # forgotten: taken as a resend (the store keeps it out)
