"""Alert rules: stored per organization (REST writes them), and each process's copy that ingest evaluates.

A rule is immutable once made (create and delete only), kept as JSON in the organization's ``alert-rules`` hash
with a creation order and a version counter that every change moves. Creating checks the limit in the same
script. Deleting resolves the rule's open alerts at once (``alert.resolved``, ``resolved_at`` now) and drops its
state, in one script; summaries made from an older copy of the rules are ignored by the apply script once the
rule is gone.

``RuleCache`` is ingest's ``AlertRules``: an organization's copy is used for up to ``max_age_s`` (1 s), then
the version is read again (one GET per organization that is ingesting, per second) and the rules only when it
moved. So a rule made or deleted through any process applies to what every process stores about a second
later at most (at once on the process that made the change).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson

from hub import keys
from hub.alerts import scripts
from hub.alerts.store import AlertStore, script_keys
from hub.clock import iso_ms, now_ms
from hub.redis_client import StrRedis
from ingest.alert_eval import AlertRule

__all__ = ["MAX_RULES", "OPS", "SEVERITIES", "AlertRuleStore", "RuleCache", "TooManyRules"]

MAX_RULES = 100
OPS = ("gt", "gte", "lt", "lte", "eq", "ne")
SEVERITIES = ("critical", "major", "minor", "warning", "info")


class TooManyRules(Exception):
    """The organization has ``MAX_RULES`` rules already."""


def evaluated(rule: dict[str, Any]) -> AlertRule:
    """What ingest evaluates of a stored rule."""
    return AlertRule(
        id=rule["id"],
        metric=rule["metric"],
        op=rule["op"],
        threshold=float(rule["threshold"]),
        for_s=int(rule["for_s"]),
        device_id=rule.get("device_id"),
        device_type=rule.get("device_type"),
    )


class AlertRuleStore:
    def __init__(self, redis: StrRedis, alerts: AlertStore) -> None:
        self.redis = redis
        self.alerts = alerts
        self._create = redis.register_script(scripts.CREATE_RULE)
        self._delete = redis.register_script(scripts.DELETE_RULE)

    async def create(
        self,
        org_id: str,
        *,
        name: str,
        metric: str,
        op: str,
        threshold: float,
        device_id: str | None,
        device_type: str | None,
        for_s: int,
        severity: str,
    ) -> dict[str, Any]:
        rule = {
            "id": "rul_" + secrets.token_hex(8),
            "name": name,
            "metric": metric,
            "op": op,
            "threshold": threshold,
            "device_id": device_id,
            "device_type": device_type,
            "for_s": for_s,
            "severity": severity,
            "created_at": iso_ms(now_ms()),
        }
        made = await self._create(
            keys=script_keys(org_id),
            args=[*self.alerts.common_args(org_id), rule["id"], orjson.dumps(rule), MAX_RULES],
        )
        if not made:
            raise TooManyRules(f"an organization may have at most {MAX_RULES} alert rules")
        return rule

    async def get(self, org_id: str, rule_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(keys.alert_rules(org_id), rule_id)
        if raw is None:
            return None
        rule: dict[str, Any] = orjson.loads(raw)
        return rule

    async def page(self, org_id: str, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Oldest first, as the other registries."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.alert_rule_order(org_id), offset, offset + limit - 1)
            pipe.zcard(keys.alert_rule_order(org_id))
            ids, total = await pipe.execute()
        if not ids:
            return [], int(total)
        found = await self.redis.hmget(keys.alert_rules(org_id), ids)
        return [orjson.loads(raw) for raw in found if raw is not None], int(total)

    async def delete(self, org_id: str, rule_id: str) -> int | None:
        """Delete the rule and resolve its open alerts; how many were resolved, None when there is no such rule."""
        resolved = int(
            await self._delete(
                keys=script_keys(org_id), args=[*self.alerts.common_args(org_id), rule_id, self.alerts.clock()]
            )
        )
        return None if resolved < 0 else resolved


@dataclass(slots=True)
class _Copy:
    version: str | None
    rules: tuple[AlertRule, ...]
    read_at: float


class RuleCache:
    """This process's copy of each organization's rules (ingest's ``AlertRules``)."""

    def __init__(self, redis: StrRedis, *, max_age_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.max_age_s = max_age_s
        self.clock = clock
        self._copies: dict[str, _Copy] = {}

    def current(self, org_id: str) -> tuple[AlertRule, ...] | None:
        copy = self._copies.get(org_id)
        if copy is None or self.clock() - copy.read_at > self.max_age_s:
            return None
        return copy.rules

    def forget(self, org_id: str) -> None:
        """This process changed the organization's rules: read them again before the next evaluation."""
        self._copies.pop(org_id, None)

    async def refresh(self, org_ids: Collection[str]) -> None:
        now = self.clock()
        stale = [org for org in org_ids if self.current(org) is None]
        if not stale:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for org_id in stale:
                pipe.get(keys.alert_rules_version(org_id))
            versions = await pipe.execute()
        moved = []
        for org_id, version in zip(stale, versions, strict=True):
            copy = self._copies.get(org_id)
            if copy is not None and copy.version == version:
                copy.read_at = now
            else:
                moved.append((org_id, version))
        if not moved:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for org_id, _ in moved:
                pipe.hvals(keys.alert_rules(org_id))
            found = await pipe.execute()
        for (org_id, version), rules in zip(moved, found, strict=True):
            parsed = tuple(evaluated(orjson.loads(raw)) for raw in rules)
            self._copies[org_id] = _Copy(version, parsed, now)
