"""Channel patterns (API.md §5): MQTT wildcard matching, refused patterns, the streams a pattern reads."""

from __future__ import annotations

import re

import pytest

from clients.positions import message_label
from hub import slot_reads
from hub.fanout.channels import (
    InvalidChannel,
    Pattern,
    Source,
    device_commands,
    org_alerts,
    org_commands,
    parse_pattern,
)
from ingest import stream_keys

TELEMETRY = "devices/boiler-7/telemetry"
AGG_1M = "devices/boiler-7/aggregates/1m"
EVENTS = "devices/boiler-7/events"
COMMANDS = "devices/boiler-7/commands"
OTHER_TELEMETRY = "devices/pump.2/telemetry"

MATCHES = [
    # exact
    ("devices/boiler-7/telemetry", TELEMETRY, True),
    ("devices/boiler-7/telemetry", OTHER_TELEMETRY, False),
    ("devices/boiler-7/telemetry", EVENTS, False),
    ("devices/boiler-7/aggregates/1m", AGG_1M, True),
    ("devices/boiler-7/aggregates/1m", "devices/boiler-7/aggregates/1s", False),
    ("devices/boiler-7/events", EVENTS, True),
    ("devices/boiler-7/commands", COMMANDS, True),
    ("alerts", "alerts", True),
    ("alerts", TELEMETRY, False),
    # + at each level
    ("+/boiler-7/telemetry", TELEMETRY, True),
    ("+/boiler-7/telemetry", OTHER_TELEMETRY, False),
    ("devices/+/telemetry", TELEMETRY, True),
    ("devices/+/telemetry", OTHER_TELEMETRY, True),
    ("devices/+/telemetry", EVENTS, False),
    ("devices/+/telemetry", AGG_1M, False),
    ("devices/boiler-7/+", TELEMETRY, True),
    ("devices/boiler-7/+", EVENTS, True),
    ("devices/boiler-7/+", COMMANDS, True),
    ("devices/boiler-7/+", AGG_1M, False),  # + is exactly one level
    ("devices/boiler-7/+", OTHER_TELEMETRY, False),
    ("devices/boiler-7/aggregates/+", AGG_1M, True),
    ("devices/boiler-7/aggregates/+", "devices/boiler-7/aggregates/1h", True),
    ("devices/boiler-7/aggregates/+", TELEMETRY, False),
    ("devices/+/aggregates/1m", AGG_1M, True),
    ("devices/+/aggregates/1m", "devices/pump.2/aggregates/1m", True),
    ("devices/+/aggregates/1m", "devices/pump.2/aggregates/1s", False),
    ("devices/boiler-7/+/1m", AGG_1M, True),
    ("devices/+/+", TELEMETRY, True),
    ("devices/+/+", AGG_1M, False),
    ("devices/+/+/+", AGG_1M, True),
    ("devices/+/+/+", TELEMETRY, False),
    ("+/+/+", TELEMETRY, True),
    ("+/+/+", "alerts", False),
    ("+", "alerts", True),
    ("+", TELEMETRY, False),
    # # at each level
    ("#", TELEMETRY, True),
    ("#", AGG_1M, True),
    ("#", "alerts", True),
    ("devices/#", TELEMETRY, True),
    ("devices/#", AGG_1M, True),
    ("devices/#", "alerts", False),
    ("devices/boiler-7/#", TELEMETRY, True),
    ("devices/boiler-7/#", AGG_1M, True),
    ("devices/boiler-7/#", EVENTS, True),
    ("devices/boiler-7/#", OTHER_TELEMETRY, False),
    ("devices/boiler-7/#", "devices/boiler-7", True),  # MQTT: a/# matches a (no such channel exists)
    ("devices/boiler-7/aggregates/#", AGG_1M, True),
    ("devices/boiler-7/aggregates/#", TELEMETRY, False),
    ("devices/boiler-7/telemetry/#", TELEMETRY, True),  # the parent itself
    ("devices/boiler-7/telemetry/#", EVENTS, False),
    ("alerts/#", "alerts", True),
    ("alerts/#", TELEMETRY, False),
    ("+/#", "alerts", True),
    ("+/#", AGG_1M, True),
    ("devices/+/#", TELEMETRY, True),
    ("devices/+/#", AGG_1M, True),
    ("devices/+/#", "alerts", False),
    ("+/boiler-7/#", EVENTS, True),
    ("+/boiler-7/#", OTHER_TELEMETRY, False),
    # level counts
    ("devices/+/telemetry", "devices/boiler-7/telemetry/extra", False),
    ("devices/+/telemetry", "devices/telemetry", False),
    ("devices/boiler-7/aggregates/1m", "devices/boiler-7/aggregates", False),
    ("devices/boiler-7/aggregates/+", "devices/boiler-7/aggregates/1m/x", False),
    ("alerts", "alerts/x", False),
    ("devices/boiler-7/+/+", AGG_1M, True),
    ("devices/boiler-7/+/+", TELEMETRY, False),
    ("devices/boiler-7/#", "devices/boiler-7/aggregates/1m/x/y", True),
    ("devices/boiler-7/telemetry", "devices/boiler-7/telemetr", False),
    ("devices/boiler-7/telemetry", "devices/boiler-77/telemetry", False),
]


@pytest.mark.parametrize(("pattern", "channel", "expected"), MATCHES)
def test_matching_table(pattern: str, channel: str, expected: bool) -> None:
    parsed = parse_pattern(pattern)
    assert parsed.matches(channel) is expected
    assert parsed.matches_levels(channel.split("/")) is expected


INVALID = [
    ("", "required"),
    ("/", "empty level"),
    ("devices//telemetry", "empty level"),
    ("devices/boiler-7/telemetry/", "empty level"),
    ("/alerts", "empty level"),
    ("#/telemetry", "'#' must be a whole level, and the last one"),
    ("devices/#/telemetry", "'#' must be a whole level, and the last one"),
    ("devices/boiler#/telemetry", "'#' must be a whole level"),
    ("devices/boiler+/telemetry", "'+' must be a whole level"),
    ("devices/+#/telemetry", "must be a whole level"),
    ("devices/++/telemetry", "'+' must be a whole level"),
    ("devices", "incomplete"),
    ("devices/boiler-7", "incomplete"),
    ("devices/+", "incomplete"),
    ("+/+", "incomplete"),
    ("devices/boiler-7/aggregates", "needs a resolution"),
    ("devices/boiler-7/temperature", "unknown kind 'temperature'"),
    ("devices/boiler-7/Telemetry", "unknown kind"),
    ("devices/boiler-7/telemetry/now", "too many levels"),
    ("devices/boiler-7/aggregates/1m/x", "too many levels"),
    ("devices/boiler 7/telemetry", "device id"),
    ("devices/" + "d" * 65 + "/telemetry", "device id"),
    ("devices/böiler/telemetry", "device id"),
    ("devices/boiler-7/aggregates/60s", "unknown resolution '60s'"),
    ("devices/boiler-7/aggregates/1x", "unknown resolution"),
    ("devices/boiler-7/aggregates/0m", "unknown resolution"),
    ("devices/boiler-7/aggregates/m", "unknown resolution"),
    ("devices/boiler-7/+/120s", "unknown resolution"),
    ("alerts/x", "alerts has no sub-levels"),
    ("alerts/+", "alerts has no sub-levels"),
    ("orgs/org_b/#", "unknown channel 'orgs'"),
    ("th:{org_b}:telemetry", "unknown channel"),
    ("Devices/boiler-7/telemetry", "unknown channel"),
    ("devices/" + "d" * 64 + "/aggregates/" + "1" * 60 + "s", "longer than 128"),
]


@pytest.mark.parametrize(("pattern", "message"), INVALID)
def test_invalid_patterns(pattern: str, message: str) -> None:
    with pytest.raises(InvalidChannel) as caught:
        parse_pattern(pattern)
    assert caught.value.code == "invalid_channel"
    assert caught.value.status == 400
    assert message in caught.value.message


@pytest.mark.parametrize("value", [None, 7, b"alerts", ["alerts"]])
def test_a_pattern_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidChannel, match="required"):
        parse_pattern(value)


def test_configured_resolutions_limit_literal_ones() -> None:
    assert parse_pattern("devices/x/aggregates/5m").resolution == "5m"
    with pytest.raises(InvalidChannel, match=re.escape("unknown resolution '5m' (1h, 1m, 1s)")):
        parse_pattern("devices/x/aggregates/5m", resolutions=("1s", "1m", "1h"))
    assert parse_pattern("devices/x/aggregates/+", resolutions=("1s",)).resolution is None


def test_longest_valid_channel_fits() -> None:
    text = "devices/" + "d" * 64 + "/aggregates/24h"
    assert parse_pattern(text).exact


def test_parsed_fields() -> None:
    pattern = parse_pattern("devices/boiler-7/#")
    assert pattern == Pattern(
        "devices/boiler-7/#",
        ("devices", "boiler-7", "#"),
        ("telemetry", "aggregates", "events", "commands"),
        "boiler-7",
        None,
    )
    assert not pattern.exact
    assert parse_pattern("alerts").exact and parse_pattern("alerts").device_id is None
    assert parse_pattern("#").kinds == ("telemetry", "aggregates", "events", "commands", "alerts")
    assert parse_pattern("+").kinds == ("alerts",)
    assert parse_pattern("devices/x/+").kinds == ("telemetry", "events", "commands")


RESOLUTIONS = ("1s", "1m", "1h")


def test_exact_device_channels_read_the_device_streams() -> None:
    def sources(text: str) -> set[str]:
        return {s.key for s in parse_pattern(text).sources("org_a", RESOLUTIONS)}

    assert sources("devices/b7/telemetry") == {stream_keys.device_frames("org_a", "b7")}
    assert sources("devices/b7/events") == {stream_keys.device_events("org_a", "b7")}
    assert sources("devices/b7/aggregates/1m") == {stream_keys.device_aggregates("org_a", "b7", "1m")}
    assert sources("devices/b7/commands") == {device_commands("org_a", "b7")}
    assert sources("alerts") == {org_alerts("org_a")}
    assert device_commands("org_a", "b7") == "th:{org_a}:commands:b7"
    assert org_commands("org_a") == "th:{org_a}:commands"
    assert org_alerts("org_a") == "th:{org_a}:alerts"


def test_wildcard_device_level_reads_the_org_streams() -> None:
    stream_keys.use_partitions(1)

    def sources(text: str) -> set[str]:
        return {s.key for s in parse_pattern(text).sources("org_a", RESOLUTIONS)}

    assert sources("devices/+/telemetry") == {"th:{org_a}:telemetry"}
    assert sources("devices/+/aggregates/1m") == {"th:{org_a}:aggregates:1m"}
    assert sources("devices/+/aggregates/+") == {stream_keys.org_aggregates("org_a", r, 0) for r in RESOLUTIONS}
    every = {
        stream_keys.org_telemetry("org_a", 0),
        stream_keys.org_events("org_a", 0),
        org_commands("org_a"),
        org_alerts("org_a"),
        *(stream_keys.org_aggregates("org_a", r, 0) for r in RESOLUTIONS),
    }
    assert sources("#") == every
    assert sources("+/#") == every
    assert sources("devices/+/#") == every - {org_alerts("org_a")}
    assert sources("+") == sources("alerts/#") == {org_alerts("org_a")}
    assert {s.label for s in parse_pattern("#").sources("org_a", RESOLUTIONS)} == {
        "telemetry",
        "events",
        "commands",
        "alerts",
        *(f"aggregates/{r}" for r in RESOLUTIONS),
    }


def test_with_partitions_a_wildcard_device_level_reads_every_partition_and_labels_them() -> None:
    stream_keys.use_partitions(4)
    pattern = parse_pattern("devices/+/#")
    found = pattern.sources("org_a", ("1m",))
    assert {s.key for s in found} == {
        *(f"th:{{org_a.{p}}}:{kind}" for p in range(4) for kind in ("telemetry", "events", "aggregates:1m")),
        org_commands("org_a"),
    }
    assert {s.label for s in found} == {
        *(f"{kind}.{p}" for p in range(4) for kind in ("telemetry", "events", "aggregates/1m")),
        "commands",
    }
    # A literal device level reads the device's own streams, in its partition's slot.
    partition = stream_keys.partition_of("b7")
    assert {s.key for s in parse_pattern("devices/b7/telemetry").sources("org_a", ("1m",))} == {
        f"th:{{org_a.{partition}}}:frames:b7"
    }
    assert {s.label for s in parse_pattern("devices/b7/#").sources("org_a", ("1m",))} == {
        "telemetry",
        "events",
        "commands",
        "aggregates/1m",
    }


def test_wildcard_kind_with_literal_device_reads_that_device_only() -> None:
    found = parse_pattern("devices/b7/#").sources("org_a", ("1m",))
    assert found == {
        Source("org_a", "telemetry", "b7"),
        Source("org_a", "aggregates", "b7", "1m"),
        Source("org_a", "events", "b7"),
        Source("org_a", "commands", "b7"),
    }
    tag = stream_keys.partition_tag("org_a", stream_keys.partition_of("b7"))
    assert {slot_reads.hash_part(source.key) for source in found} == {tag, "org_a"}


@pytest.mark.parametrize("text", ["#", "devices/+/#", "+/+/telemetry", "devices/b7/#", "alerts"])
def test_sources_stay_in_the_callers_org(text: str) -> None:
    for source in parse_pattern(text).sources("org_b", RESOLUTIONS):
        assert source.org_id == "org_b"
        tags = {"org_b", *(stream_keys.partition_tag("org_b", p) for p in range(stream_keys.partitions()))}
        assert slot_reads.hash_part(source.key) in tags, source.key


def test_the_clients_label_a_message_as_the_hub_labels_the_stream_it_came_from() -> None:
    stream_keys.use_partitions(8)
    labels = {"telemetry": 8, "events": 8, "aggregates/1m": 8}
    for number in range(300):
        device = f"dev-{number}.x_{number * 7919}"
        read = parse_pattern(f"devices/{device}/#").sources("org_a", ("1m",))
        for source in parse_pattern("devices/+/#").sources("org_a", ("1m",)):
            if source.kind == "commands":
                continue
            channel_levels = "aggregates/1m" if source.kind == "aggregates" else source.kind
            own = next(s for s in read if s.label == channel_levels)
            if source.partition == stream_keys.partition_of(device):
                assert message_label(f"devices/{device}/{channel_levels}", labels) == source.label
                assert stream_keys.partition_tag("org_a", source.partition) in own.key
