"""Alerts in Redis: the state scripts behind ingest's ``AlertSink``, acknowledgement, and reading alerts back.

Keys (all in the organization's hash slot; built in hub/keys.py): ``alert:<id>`` hash per alert; indexes
``alert-index:{all,active,acknowledged,resolved}`` (sorted sets by creation sequence ``alert-seq``); the state of
each (rule, device) whose condition has held in ``alert-state:<rule>`` (device -> pending since, open alert,
newest ts seen; hub.alerts.scripts.APPLY); the ``alerts`` stream (the dashboard channel) and the event log. At
most ``MAX_RESOLVED`` resolved alerts are kept per organization, the oldest dropped first. Deleting a device
(``device_deleted``) resolves its open alerts at once and drops its state, as deleting a rule does.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack
from prometheus_client import Counter

from hub import keys
from hub.alerts import scripts
from hub.clock import now_ms
from hub.fanout.channels import org_alerts
from hub.redis_client import StrRedis
from ingest import stream_keys
from ingest.alert_eval import ConditionSummary

__all__ = ["MAX_RESOLVED", "STATUSES", "AckResult", "AlertStore", "public_alert", "script_keys"]

STATUSES = ("active", "acknowledged", "resolved")
MAX_RESOLVED = 10_000

ALERTS_TRIGGERED = Counter("telehub_alerts_triggered_total", "alerts triggered by ingested samples")
ALERTS_RESOLVED = Counter("telehub_alerts_resolved_total", "alerts resolved by ingested samples")


def script_keys(org_id: str) -> list[str]:
    """The KEYS every alert script of the organization takes (hub.alerts.scripts)."""
    return [
        keys.alert_rules(org_id),
        org_alerts(org_id),
        stream_keys.org_log(org_id),
        keys.alert_sequence(org_id),
        keys.alert_index(org_id),
        *(keys.alert_index(org_id, status) for status in STATUSES),
        keys.alert_rules_version(org_id),
        keys.alert_rule_order(org_id),
    ]


def public_alert(fields: Mapping[str, str]) -> dict[str, Any]:
    """An alert as the API shows it."""
    return {
        "id": fields["id"],
        "rule_id": fields["rule_id"],
        "device_id": fields["device_id"],
        "metric": fields["metric"],
        "value": float(fields["value"]),
        "severity": fields["severity"],
        "status": fields["status"],
        "triggered_at": fields["triggered_at"],
        "resolved_at": fields.get("resolved_at") or None,
        "acknowledged_at": fields.get("acknowledged_at") or None,
    }


def _fields(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _wire(summaries: Sequence[ConditionSummary]) -> bytes:
    """The MessagePack argument of the apply script (Redis 6.2's cmsgpack: bytes as raw strings)."""
    return msgpack.packb(
        [
            [
                s.rule_id,
                s.device_id,
                False if s.leading_false_ts is None else s.leading_false_ts,
                s.newest_ts,
                [
                    [
                        r.start_ts,
                        r.start_value,
                        False if r.trigger_ts is None else r.trigger_ts,
                        r.trigger_value,
                        r.last_ts,
                        r.last_value,
                        False if r.ended_ts is None else r.ended_ts,
                        r.prefix,
                    ]
                    for r in s.runs
                ],
            ]
            for s in summaries
        ],
        use_bin_type=False,
    )


class AckResult:
    """What an acknowledgement did: ``made``, or the status that stopped it (``missing`` for no such alert)."""

    __slots__ = ("fields", "made", "status")

    def __init__(self, reply: list[Any]) -> None:
        self.made = reply[0] == "made"
        self.fields = _fields(reply[1])
        self.status: str = self.fields.get("status", "missing") if reply[0] != "missing" else "missing"


class AlertStore:
    """One per process. ``apply`` is ingest's ``AlertSink``; the rest serve REST."""

    def __init__(self, redis: StrRedis, *, events_retention_ms: int, clock: Callable[[], int] = now_ms) -> None:
        self.redis = redis
        self.events_retention_ms = events_retention_ms
        self.clock = clock
        self._apply = redis.register_script(scripts.APPLY)
        self._ack = redis.register_script(scripts.ACK)
        self._delete_device = redis.register_script(scripts.DELETE_DEVICE)

    def common_args(self, org_id: str) -> list[Any]:
        """ARGV[1..4] of every alert script."""
        return [
            self.clock() - self.events_retention_ms,
            keys.alert(org_id, ""),
            MAX_RESOLVED,
            keys.alert_state(org_id, ""),
        ]

    async def apply(self, summaries: Mapping[str, Sequence[ConditionSummary]]) -> dict[str, dict[str, str]]:
        """Apply each organization's summaries with one script call, all in one pipeline; the device types the
        scripts read, per organization."""
        orgs = list(summaries)
        async with self.redis.pipeline(transaction=False) as pipe:
            for org_id in orgs:
                args = [
                    *self.common_args(org_id),
                    secrets.token_hex(8),
                    keys.device(org_id, ""),
                    _wire(summaries[org_id]),
                ]
                await self._apply(keys=script_keys(org_id), args=args, client=pipe)
            replies = await pipe.execute()
        learned: dict[str, dict[str, str]] = {}
        for org_id, reply in zip(orgs, replies, strict=True):
            ALERTS_TRIGGERED.inc(int(reply[0]))
            ALERTS_RESOLVED.inc(int(reply[1]))
            types = reply[2]
            learned[org_id] = dict(zip(types[::2], types[1::2], strict=True))
        return learned

    async def acknowledge(self, org_id: str, alert_id: str) -> AckResult:
        reply = await self._ack(keys=script_keys(org_id), args=[*self.common_args(org_id), alert_id, self.clock()])
        return AckResult(reply)

    async def device_deleted(self, org_id: str, device_id: str) -> int:
        """The device was deleted: resolve its open alerts now (``alert.resolved``) and drop its state in every
        rule, in one script; how many alerts were resolved. Changes nothing for a device with no alert state."""
        return int(
            await self._delete_device(
                keys=script_keys(org_id), args=[*self.common_args(org_id), device_id, self.clock()]
            )
        )

    async def get(self, org_id: str, alert_id: str) -> dict[str, str] | None:
        found: dict[str, str] = await self.redis.hgetall(keys.alert(org_id, alert_id))
        return found or None

    async def page(
        self, org_id: str, status: str | None, *, limit: int, offset: int
    ) -> tuple[list[dict[str, str]], int]:
        """Newest first: one page of the organization's alerts (in one status, or all) and how many there are."""
        index = keys.alert_index(org_id, status or "all")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(index, offset, offset + limit - 1)
            pipe.zcard(index)
            ids, total = await pipe.execute()
        if not ids:
            return [], int(total)
        async with self.redis.pipeline(transaction=False) as pipe:
            for alert_id in ids:
                pipe.hgetall(keys.alert(org_id, alert_id))
            records = await pipe.execute()
        return [record for record in records if record], int(total)
