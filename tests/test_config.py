"""HubConfig: TELEHUB_* variables, CLI overrides, validation messages, and the round trip to worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub.cli import build_parser
from hub.config import CLI_FLAGS, ConfigError, HubConfig
from hub.device_ingest import DeviceIngest
from hub.fanout.channels import Source
from hub.fanout.service import Fanout
from hub.redis_client import open_redis
from hub.registry.device_keys import DeviceKeys
from ingest.stream_writer import DAY_MS, Retention

NOWHERE = "redis://127.0.0.1:9/0"

SECRET = "s" * 40


def test_defaults_need_no_environment() -> None:
    config = HubConfig.from_env({})
    assert config == HubConfig()
    assert (config.host, config.port, config.workers) == ("127.0.0.1", 8080, 1)
    assert config.data_dir == Path("telehub-data")
    assert config.redis_url == ""


def test_from_env_parses_ints_bools_and_paths() -> None:
    config = HubConfig.from_env(
        {
            "TELEHUB_PORT": "9000",
            "TELEHUB_WORKERS": " 4 ",
            "TELEHUB_RATE_LIMIT_BURST": "7",
            "TELEHUB_DEMO": "yes",
            "TELEHUB_WEBHOOK_ALLOW_PRIVATE": "TRUE",
            "TELEHUB_DATA_DIR": "/srv/telehub",
            "TELEHUB_REDIS_URL": "redis://localhost:6379/2",
            "TELEHUB_LOG_LEVEL": "debug",
        }
    )
    assert config.port == 9000
    assert config.workers == 4
    assert config.rate_limit_burst == 7
    assert config.demo is True
    assert config.webhook_allow_private is True
    assert config.data_dir == Path("/srv/telehub")
    assert config.redis_url == "redis://localhost:6379/2"
    assert config.log_level == "debug"


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("on", True), ("0", False), ("No", False), ("off", False)])
def test_bool_spellings(raw: str, value: bool) -> None:
    assert HubConfig.from_env({"TELEHUB_DEMO": raw}).demo is value


def test_empty_and_foreign_variables_are_ignored() -> None:
    config = HubConfig.from_env({"TELEHUB_PORT": "", "PORT": "1", "TELEHUB_NO_SUCH_THING": "x"})
    assert config.port == 8080


@pytest.mark.parametrize(
    ("variable", "raw"), [("TELEHUB_PORT", "abc"), ("TELEHUB_JWT_TTL_S", "1.5"), ("TELEHUB_DEMO", "maybe")]
)
def test_unparsable_values_name_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=variable) as error:
        HubConfig.from_env({variable: raw})
    assert repr(raw) in str(error.value)


def test_cli_overrides_win_over_the_environment() -> None:
    env = {"TELEHUB_PORT": "9000", "TELEHUB_HOST": "0.0.0.0", "TELEHUB_DATA_DIR": "/env"}
    config = HubConfig.from_env(env, port=9100, host=None, data_dir=Path("/flag"))
    assert config.port == 9100
    assert config.data_dir == Path("/flag")
    # A flag that was not given (None) leaves the variable in force.
    assert config.host == "0.0.0.0"


# (field, bad value): each must be refused with the flag and the variable named.
INVALID: list[tuple[str, Any]] = [
    ("port", 0),
    ("port", 65536),
    ("workers", 0),
    ("workers", 65),
    ("redis_fsync", "sometimes"),
    ("redis_url", "http://localhost:6379"),
    ("jwt_ttl_s", 59),
    ("rate_limit_per_minute", 0),
    ("rate_limit_burst", 0),
    ("login_max_failures", 0),
    ("max_body_bytes", 1023),
    ("ws_heartbeat_ms", 99),
    ("ws_heartbeat_ms", 600_001),
    ("log_level", "verbose"),
    ("secret", "short"),
    ("bootstrap_password", "correct-horse-battery"),
    ("frames_retention", "7x"),
    ("telemetry_retention", "30s"),
    ("events_retention", "1d,2d"),
]


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_each_invalid_value_names_its_variable_and_its_flag_when_serve_has_one(name: str, value: Any) -> None:
    variable = "TELEHUB_" + name.upper()
    flag = "--" + name.replace("_", "-")
    # Only settings `telehub serve` takes as flags are named as flags: never point at a flag that doesn't exist.
    where = f"{flag} / {variable}" if name in CLI_FLAGS else variable
    with pytest.raises(ConfigError) as from_flag:
        HubConfig.from_env({}, **{name: value})
    assert f"{where}:" in str(from_flag.value)
    with pytest.raises(ConfigError) as from_env:
        HubConfig.from_env({variable: str(value)})
    assert f"{where}:" in str(from_env.value)
    if name not in CLI_FLAGS:
        assert flag + " " not in str(from_env.value)


def test_the_flags_named_in_errors_are_the_flags_serve_takes() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    taken = {a.dest for a in serve._actions if a.option_strings and a.dest != "help"}
    assert taken == set(CLI_FLAGS)


def test_data_dir_expands_the_home_directory() -> None:
    assert HubConfig.from_env({"TELEHUB_DATA_DIR": "~/telehub"}).data_dir == Path.home() / "telehub"


def test_bootstrap_email_without_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="TELEHUB_BOOTSTRAP_EMAIL and TELEHUB_BOOTSTRAP_PASSWORD"):
        HubConfig.from_env({"TELEHUB_BOOTSTRAP_EMAIL": "root@acme.example"})


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        HubConfig.from_env({"TELEHUB_PORT": "0", "TELEHUB_WORKERS": "0", "TELEHUB_LOG_LEVEL": "loud"})
    message = str(error.value)
    for variable in ("TELEHUB_PORT", "TELEHUB_WORKERS", "TELEHUB_LOG_LEVEL"):
        assert variable in message


def test_to_env_round_trips() -> None:
    config = HubConfig(
        host="0.0.0.0",
        port=9001,
        workers=3,
        public_url="https://hub.example",
        redis_url="redis://:p%40ss@localhost:6380/1",
        data_dir=Path("/var/lib/telehub"),
        redis_fsync="always",
        secret=SECRET,
        jwt_ttl_s=3600,
        bootstrap_email="root@acme.example",
        bootstrap_password="correct-horse-battery",
        bootstrap_org="acme",
        demo=True,
        rate_limit_per_minute=60,
        rate_limit_burst=10,
        webhook_allow_private=True,
        log_level="warning",
    )
    env = config.to_env()
    assert all(key.startswith("TELEHUB_") and isinstance(value, str) for key, value in env.items())
    assert env["TELEHUB_DEMO"] == "1"
    assert HubConfig.from_env(env) == config
    assert HubConfig.from_env(HubConfig().to_env()) == HubConfig()


def test_replace_validates_and_secrets_stay_out_of_repr() -> None:
    config = HubConfig(secret=SECRET, bootstrap_email="a@b.example", bootstrap_password="hunter2-hunter2")
    assert SECRET not in repr(config)
    assert "hunter2" not in repr(config)
    assert config.replace(port=81).port == 81
    with pytest.raises(ConfigError, match="--port / TELEHUB_PORT"):
        config.replace(port=0)


def test_aggregate_resolutions_and_retention() -> None:
    config = HubConfig.from_env({"TELEHUB_AGGREGATE_RESOLUTIONS": "10s, 5m", "TELEHUB_AGGREGATE_RETENTION": "2d,90d"})
    assert config.aggregate_resolutions_ms == (10_000, 300_000)
    assert config.aggregate_retention_ms == (2 * 86_400_000, 90 * 86_400_000)
    assert HubConfig.from_env({"TELEHUB_AGGREGATE_RESOLUTIONS": ""}).aggregate_resolutions_ms == (
        1_000,
        60_000,
        3_600_000,
    )
    assert HubConfig(aggregate_resolutions="").aggregate_resolutions_ms == ()


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("TELEHUB_AGGREGATE_RESOLUTIONS", "1x"),
        ("TELEHUB_AGGREGATE_RESOLUTIONS", "1s,1s,1h"),
        ("TELEHUB_AGGREGATE_RETENTION", "1d,30d"),
        ("TELEHUB_AGGREGATE_RETENTION", "1d,30d,30m"),
        ("TELEHUB_AGGREGATE_IDLE_TIMEOUT_MS", "0"),
    ],
)
def test_bad_aggregation_settings_name_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        HubConfig.from_env({variable: raw})


def test_stream_retention_reaches_the_writer_the_alerts_and_the_dashboards(tmp_path: Path) -> None:
    assert HubConfig().retention == Retention()
    config = HubConfig.from_env(
        {"TELEHUB_FRAMES_RETENTION": "14d", "TELEHUB_TELEMETRY_RETENTION": "6h", "TELEHUB_EVENTS_RETENTION": "90d"},
        redis_url=NOWHERE,
    )
    assert config.retention == Retention(frames_ms=14 * DAY_MS, telemetry_ms=6 * 3_600_000, events_ms=90 * DAY_MS)
    redis = open_redis(NOWHERE)  # never connected: only the wiring is looked at
    ingest = DeviceIngest(config, redis, DeviceKeys(redis))
    assert ingest.writer.retention == config.retention
    assert ingest.presence.retention == config.retention
    fanout = Fanout.from_config(config, redis, authenticator=None)  # type: ignore[arg-type]
    assert fanout.retention_of(Source(kind="telemetry", org_id="o", device_id="d")) == 14 * DAY_MS
    assert fanout.retention_of(Source(kind="telemetry", org_id="o", device_id=None)) == 6 * 3_600_000
