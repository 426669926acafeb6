"""The alerts of one process: the stores REST uses and the loop that evaluates the rules over ingest."""

from __future__ import annotations

from hub.alerts.rules import AlertRuleStore, RuleCache
from hub.alerts.store import AlertStore
from hub.redis_client import StrRedis
from ingest.alert_loop import AlertLoop

__all__ = ["Alerts"]


class Alerts:
    """Made by ``DeviceIngest``; ``loop`` is handed to the flusher, started and stopped with ingest."""

    def __init__(self, redis: StrRedis, *, events_retention_ms: int) -> None:
        self.store = AlertStore(redis, events_retention_ms=events_retention_ms)
        self.rules = AlertRuleStore(redis, self.store)
        self.cache = RuleCache(redis)
        self.loop = AlertLoop(self.cache, self.store)

    def rules_changed(self, org_id: str) -> None:
        """A rule of the organization was made or deleted here: this process uses the change at once."""
        self.cache.forget(org_id)
