"""The embedded Redis's AOF is rewritten when it holds mostly what is no longer data, not because it grew:
a file of live stream entries is left alone, one of overwritten values is rewritten (and shrinks)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from hub.aof_compaction import GIB, AofCompaction, should_rewrite
from hub.embedded_redis import EmbeddedRedis

LIVE = {"aof_enabled": 1, "loading": 0, "aof_rewrite_in_progress": 0, "aof_rewrite_scheduled": 0}


@pytest.mark.parametrize(
    ("persistence", "dataset", "due"),
    [
        ({**LIVE, "aof_current_size": 3 * GIB}, 2 * GIB, False),  # mostly live data: nothing to reclaim
        ({**LIVE, "aof_current_size": 4 * GIB}, 2 * GIB, True),  # twice the data
        ({**LIVE, "aof_current_size": GIB // 2}, GIB // 8, False),  # four times, but below the minimum
        ({**LIVE, "aof_current_size": 4 * GIB, "aof_rewrite_in_progress": 1}, GIB, False),
        ({**LIVE, "aof_current_size": 4 * GIB, "aof_rewrite_scheduled": 1}, GIB, False),
        ({**LIVE, "aof_current_size": 4 * GIB, "loading": 1}, GIB, False),
        ({**LIVE, "aof_enabled": 0, "aof_current_size": 4 * GIB}, GIB, False),
    ],
)
def test_a_rewrite_is_due_when_the_file_is_twice_the_data(persistence: dict[str, Any], dataset: int, due: bool) -> None:
    memory = {"used_memory_dataset": dataset}
    assert should_rewrite(persistence, memory, ratio=2.0, min_bytes=GIB) is due


def aof_size(connection: redis.Redis) -> int:
    return int(connection.info("persistence")["aof_current_size"])


def wait_for_rewrite(connection: redis.Redis) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = connection.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        time.sleep(0.05)
    raise AssertionError("the rewrite did not finish")


def test_live_stream_entries_are_left_alone_and_overwritten_values_are_rewritten(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "data") as server, redis.Redis.from_url(server.url) as connection:
        compaction = AofCompaction(server.url, min_bytes=1 << 20)
        try:
            entry = b"x" * 20_000
            for i in range(200):  # 4 MB of entries, all live: as the frame streams are
                connection.xadd("frames", {"f": entry + str(i).encode()})
            assert not compaction.check()
            assert compaction.rewrites == 0
            for i in range(600):  # 12 MB written into one 20 KB value: the file is mostly garbage now
                connection.set("overwritten", entry + str(i).encode())
            before = aof_size(connection)
            assert compaction.check()
            wait_for_rewrite(connection)
            assert aof_size(connection) < before / 2
            assert connection.xlen("frames") == 200 and connection.get("overwritten") == entry + b"599"
            assert not compaction.check()  # rewritten: the file is about the data again
        finally:
            compaction.stop()


def test_the_embedded_server_checks_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[AofCompaction] = []
    start = AofCompaction.start

    def recorded(self: AofCompaction) -> None:
        started.append(self)
        start(self)

    monkeypatch.setattr(AofCompaction, "start", recorded)
    with EmbeddedRedis(tmp_path / "data") as server:
        (compaction,) = started
        assert compaction._thread is not None and compaction._thread.is_alive()
        with EmbeddedRedis(tmp_path / "data") as attached:  # a process that attaches does not check too
            assert not attached.owner and len(started) == 1
        assert server.owner
    assert compaction._thread is None
