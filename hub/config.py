"""Hub configuration: one frozen dataclass, filled from CLI flags over ``TELEHUB_*`` environment variables.

Every field ``x`` is also read from ``TELEHUB_X`` (API.md §7). Values are validated here, once, with messages
that say what to change.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ingest.stream_writer import Retention

__all__ = ["ConfigError", "HubConfig", "durations_ms"]

ENV_PREFIX = "TELEHUB_"
FSYNC_POLICIES = ("always", "everysec", "no")
LOG_LEVELS = ("debug", "info", "warning", "error")
# One server, or a Redis Cluster given by some of its nodes (hub.redis_client).
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
# Settings that `telehub serve` also takes as flags; the rest are environment variables only.
CLI_FLAGS = frozenset({"host", "port", "workers", "redis_url", "data_dir", "demo", "log_level"})


class ConfigError(ValueError):
    """A setting is invalid; the message names the flag and the environment variable."""


@dataclass(frozen=True, kw_only=True)
class HubConfig:
    # Network.
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # Public base URL used in links handed to devices (provisioning); derived from the request when empty.
    public_url: str = ""

    # Storage. No redis_url: an embedded redis-server runs in data_dir with AOF on.
    redis_url: str = ""
    data_dir: Path = Path("./telehub-data")
    redis_fsync: str = "everysec"
    # How many partitions each organization's devices are spread over (hub/layout.py): 0 takes the store's,
    # or for a new store 1 on a single Redis and 8 on a cluster. Fixed once data is written.
    partitions: int = 0

    # Secrets and tokens. No secret: one is generated and kept in data_dir.
    secret: str = field(default="", repr=False)
    jwt_ttl_s: int = 86_400

    # Bootstrap organization, created on start when the store has none.
    bootstrap_email: str = ""
    bootstrap_password: str = field(default="", repr=False)
    bootstrap_org: str = "default"
    demo: bool = False

    # REST rate limits per credential (or per IP when unauthenticated).
    rate_limit_per_minute: int = 1000
    rate_limit_burst: int = 100
    # Failed logins allowed per email and per IP in login_window_s before 429.
    login_max_failures: int = 10
    login_window_s: int = 900

    # Limits on sizes.
    max_body_bytes: int = 1_048_576
    # A device WebSocket frame larger than this closes the connection with 1009.
    max_frame_bytes: int = 1_048_576

    # Ingest: how often the batch of received frames is written to Redis (and acked).
    flush_interval_ms: int = 0

    # How long the streams keep entries (one <n>s/m/h/d each), trimmed as entries are added: each device's
    # frames (history: readings, messages), the organization-wide telemetry stream (live wildcard reads and
    # webhooks), and the device and organization event logs (presence, device events, commands, alerts).
    frames_retention: str = "7d"
    telemetry_retention: str = "1d"
    events_retention: str = "30d"

    # Aggregation in the ingest loop: window widths (comma list of <n>s/<n>m/<n>h; empty turns it off), how
    # long each one's streams keep entries (one <n>s/m/h/d per width), and the window-closing rules.
    aggregate_resolutions: str = "1s,1m,1h"
    aggregate_retention: str = "1d,30d,365d"
    # A sample up to this far behind its device's newest still lands in an open window ...
    aggregate_lateness_ms: int = 5_000
    # ... and up to this much further behind corrects a closed one (re-emitted as corrected).
    aggregate_late_horizon_ms: int = 30_000
    # A device that sent nothing for this long gets its open windows closed.
    aggregate_idle_timeout_ms: int = 10_000

    # Dashboard WebSocket: bytes waiting for one client before it is closed with 4008, subscriptions per
    # connection, open connections per credential (user or API key, across processes), and the most entries
    # one subscribe with ``since`` replays (further behind: recovered false).
    dashboard_send_buffer_bytes: int = 1_048_576
    dashboard_max_subscriptions: int = 100
    dashboard_max_connections: int = 1_000
    dashboard_max_replay: int = 10_000
    # WebSocket heartbeat (devices and dashboards): a ping after this long without a ping, and the connection
    # dropped (a device marked offline) when no answer arrives within the same time.
    ws_heartbeat_ms: int = 20_000

    # Webhooks: URLs that resolve to private, loopback or link-local addresses are refused unless allowed;
    # the time one delivery attempt may take; the waits before each retry (comma list of <n>s/m/h/d, ±20%
    # jitter; attempts = retries + 1); attempts in flight per endpoint; how long a delivery taken by a process
    # may go untouched before another process takes it over (that process is presumed dead).
    webhook_allow_private: bool = False
    webhook_timeout_ms: int = 10_000
    webhook_backoff: str = "10s,1m,5m,15m,30m,1h"
    webhook_concurrency: int = 4
    webhook_claim_idle_ms: int = 60_000
    log_level: str = "info"

    def __post_init__(self) -> None:
        self._check()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> HubConfig:
        """Build from ``TELEHUB_*`` variables; keyword ``overrides`` (e.g. CLI flags) win when not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The ``TELEHUB_*`` variables that rebuild this config in another process (worker processes)."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                value = "1" if value else "0"
            env[ENV_PREFIX + f.name.upper()] = str(value)
        return env

    def replace(self, **changes: Any) -> HubConfig:
        return dataclasses.replace(self, **changes)

    @property
    def aggregate_resolutions_ms(self) -> tuple[int, ...]:
        """The window widths in ms (empty: aggregation off)."""
        return durations_ms(self.aggregate_resolutions) or ()

    @property
    def aggregate_retention_ms(self) -> tuple[int, ...]:
        return durations_ms(self.aggregate_retention) or ()

    @property
    def retention(self) -> Retention:
        """How long each stream kind keeps entries, in ms."""
        frames, telemetry, events = (
            durations_ms(getattr(self, name))[0]  # type: ignore[index]
            for name in ("frames_retention", "telemetry_retention", "events_retention")
        )
        return Retention(frames_ms=frames, telemetry_ms=telemetry, events_ms=events)

    @property
    def webhook_backoff_ms(self) -> tuple[int, ...]:
        """The wait before each retry of a webhook delivery, in ms."""
        return durations_ms(self.webhook_backoff) or ()

    def _check(self) -> None:
        problems: list[str] = []

        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                variable = ENV_PREFIX + name.upper()
                where = f"--{name.replace('_', '-')} / {variable}" if name in CLI_FLAGS else variable
                problems.append(f"{where}: {what}")

        need(1 <= self.port <= 65535, "port", f"must be 1..65535, got {self.port}")
        need(1 <= self.workers <= 64, "workers", f"must be 1..64, got {self.workers}")
        need(self.redis_fsync in FSYNC_POLICIES, "redis_fsync", f"must be one of {', '.join(FSYNC_POLICIES)}")
        need(
            not self.redis_url or self.redis_url.startswith(REDIS_URL_SCHEMES),
            "redis_url",
            "must start with redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://",
        )
        if self.redis_url.startswith(REDIS_URL_SCHEMES[3:]):
            from hub.redis_client import parse_cluster_url

            try:
                parse_cluster_url(self.redis_url)
            except ValueError as exc:
                need(False, "redis_url", f"{exc} (redis+cluster://[:password@]host:port[,host:port...])")
        need(0 <= self.partitions <= 1024, "partitions", f"must be 0 (the store's) to 1024, got {self.partitions}")
        need(self.jwt_ttl_s >= 60, "jwt_ttl_s", "must be at least 60 seconds")
        need(self.rate_limit_per_minute >= 1, "rate_limit_per_minute", "must be at least 1")
        need(self.rate_limit_burst >= 1, "rate_limit_burst", "must be at least 1")
        need(self.login_max_failures >= 1, "login_max_failures", "must be at least 1")
        need(self.max_body_bytes >= 1024, "max_body_bytes", "must be at least 1024")
        need(self.dashboard_send_buffer_bytes >= 65_536, "dashboard_send_buffer_bytes", "must be at least 65536")
        for name in ("dashboard_max_subscriptions", "dashboard_max_connections", "dashboard_max_replay"):
            need(getattr(self, name) >= 1, name, "must be at least 1")
        need(100 <= self.ws_heartbeat_ms <= 600_000, "ws_heartbeat_ms", "must be 100 to 600000")
        need(1024 <= self.max_frame_bytes <= 64 * 1_048_576, "max_frame_bytes", "must be 1024 to 67108864")
        need(0 <= self.flush_interval_ms <= 1000, "flush_interval_ms", "must be 0 to 1000")
        for name in ("frames_retention", "telemetry_retention", "events_retention"):
            kept = durations_ms(getattr(self, name))
            need(
                kept is not None and len(kept) == 1 and kept[0] >= 60_000,
                name,
                f"must be one duration of at least a minute, such as 7d or 12h; got {getattr(self, name)!r}",
            )
        resolutions = durations_ms(self.aggregate_resolutions)
        retention = durations_ms(self.aggregate_retention)
        need(
            resolutions is not None
            and len(set(resolutions)) == len(resolutions)
            and all(r % 1000 == 0 for r in resolutions),
            "aggregate_resolutions",
            f"must be distinct whole-second widths such as 1s,1m,1h; got {self.aggregate_resolutions!r}",
        )
        need(
            not resolutions
            or (
                retention is not None
                and len(retention) == len(resolutions)
                and all(kept >= width for kept, width in zip(retention, resolutions, strict=False))
            ),
            "aggregate_retention",
            f"must give one duration (at least the width) per aggregate resolution; got {self.aggregate_retention!r}",
        )
        need(self.aggregate_lateness_ms >= 0, "aggregate_lateness_ms", "must be at least 0")
        need(self.aggregate_late_horizon_ms >= 0, "aggregate_late_horizon_ms", "must be at least 0")
        need(self.aggregate_idle_timeout_ms >= 1, "aggregate_idle_timeout_ms", "must be at least 1")
        need(100 <= self.webhook_timeout_ms <= 60_000, "webhook_timeout_ms", "must be 100 to 60000")
        need(bool(durations_ms(self.webhook_backoff)), "webhook_backoff", "must be a comma list such as 10s,1m,1h")
        need(1 <= self.webhook_concurrency <= 64, "webhook_concurrency", "must be 1 to 64")
        need(self.webhook_claim_idle_ms >= 1000, "webhook_claim_idle_ms", "must be at least 1000")
        need(self.log_level in LOG_LEVELS, "log_level", f"must be one of {', '.join(LOG_LEVELS)}")
        need(
            bool(self.bootstrap_email) == bool(self.bootstrap_password),
            "bootstrap_password",
            "set both TELEHUB_BOOTSTRAP_EMAIL and TELEHUB_BOOTSTRAP_PASSWORD, or neither",
        )
        need(not self.secret or len(self.secret) >= 32, "secret", "must be at least 32 characters")
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def durations_ms(text: str) -> tuple[int, ...] | None:
    """``"1s,1m,1h"`` -> ``(1000, 60000, 3600000)`` (units s, m, h, d); None if any item is not one."""
    units = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    values = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        number, unit = item[:-1], item[-1:]
        if unit not in units or not number.isdigit() or int(number) == 0:
            return None
        values.append(int(number) * units[unit])
    return tuple(values)


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
    name = ENV_PREFIX + f.name.upper()
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected 1/0, true/false, yes/no or on/off, got {raw!r}")
    if kind == "Path":
        return Path(raw).expanduser()
    return raw
