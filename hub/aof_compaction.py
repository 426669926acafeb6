"""When the embedded Redis rewrites its append-only file: once the file holds mostly what is no longer data.

Redis's own trigger (``auto-aof-rewrite-percentage``) compares the file with its size after the last rewrite,
and with none yet, with nothing: its first rewrite comes at ``auto-aof-rewrite-min-size`` whatever the file
holds. What telehub writes is appended to streams and leaves only by retention, so for days a telehub AOF is
nearly all live data and such a rewrite writes the whole data set again to reclaim nothing; while it runs, Redis
also copies every new write to the child (docs/performance.md: an ``ingest-columns`` run during a rewrite fell
from 2.9-3.3 k to 1.3-1.5 k frames/s here). This thread asks Redis what the file and the data weigh and
rewrites when the file is at least ``ratio`` times the data (and ``min_bytes``): after retention has trimmed
as much as is left, or when small writes (whose commands are larger than what they store) have piled up.
Redis's own trigger stays as a backstop far above (hub/embedded_redis.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from redis.exceptions import RedisError

__all__ = ["AofCompaction", "should_rewrite"]

log = logging.getLogger("telehub.redis")

GIB = 1 << 30


def should_rewrite(persistence: dict[str, Any], memory: dict[str, Any], *, ratio: float, min_bytes: int) -> bool:
    """From ``INFO persistence`` and ``INFO memory``: is a rewrite due (and none under way)?"""
    if not persistence.get("aof_enabled") or persistence.get("loading"):
        return False
    if persistence.get("aof_rewrite_in_progress") or persistence.get("aof_rewrite_scheduled"):
        return False
    size = int(persistence.get("aof_current_size", 0))
    data = int(memory.get("used_memory_dataset", 0))
    return size >= max(min_bytes, ratio * data)


class AofCompaction:
    """Checks every ``every_s`` and asks for ``BGREWRITEAOF`` when :func:`should_rewrite`."""

    def __init__(self, url: str, *, every_s: float = 10.0, ratio: float = 2.0, min_bytes: int = GIB) -> None:
        self.every_s = every_s
        self.ratio = ratio
        self.min_bytes = min_bytes
        self.rewrites = 0
        self._client: Any = redis.Redis.from_url(url, socket_timeout=5.0)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aof-compaction", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        self._client.close()

    def check(self) -> bool:
        """One look; True when it asked for a rewrite."""
        persistence = self._client.info("persistence")
        memory = self._client.info("memory")
        if not should_rewrite(persistence, memory, ratio=self.ratio, min_bytes=self.min_bytes):
            return False
        self._client.bgrewriteaof()
        self.rewrites += 1
        log.info(
            "rewriting the AOF: %d MB on disk for %d MB of data",
            int(persistence["aof_current_size"]) >> 20,
            int(memory["used_memory_dataset"]) >> 20,
        )
        return True

    def _run(self) -> None:
        while not self._stopping.wait(self.every_s):
            try:
                self.check()
            except RedisError as exc:  # Redis busy or stopping: look again next time
                log.debug("AOF check failed: %s", exc)
