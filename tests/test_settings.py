"""Configuration validation: every bad value is refused with the key and the command that fixes it."""

from __future__ import annotations

from typing import Any

import pytest

from core.settings import (
    ConfigError,
    ImageSettings,
    StackSettings,
    check_secret_value,
    load_settings,
    tracker_schema_version,
)
from tests.conftest import dev_config


def load(config: dict[str, Any]) -> StackSettings:
    return load_settings("dev", config.get)


def with_change(path: str, value: Any) -> dict[str, Any]:
    """dev config with `path` (dotted, list indexes as numbers) set to value (None deletes it)."""
    config = dev_config()
    parts = path.split(".")
    target: Any = config
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    last = parts[-1]
    if value is None:
        if isinstance(target, list):
            del target[int(last)]
        else:
            target.pop(last, None)
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return config


def test_dev_stack_is_valid() -> None:
    settings = load(dev_config())
    assert settings.server.type == "cx23" and settings.server.location == "nbg1"
    assert settings.domains.edge_names == ["api.example.com", "http1.example.com", "grafana.example.com"]
    assert settings.acme.staging is True
    assert settings.tracker.udp_ports == [6969]
    assert settings.server_name == "torrust-dev"


def test_defaults_apply_when_optional_sections_are_absent() -> None:
    config = dev_config()
    for key in ("server", "tracker", "images"):
        del config[key]
    settings = load(config)
    assert settings.server.image == "docker-ce"
    assert settings.images.pingoo == "pingooio/pingoo:0.14.7"
    assert settings.tracker.database == "sqlite3"


BAD_CONFIGS: list[tuple[str, Any, str, str]] = [
    # (path, value, expected message part, expected fix part)
    ("domains.trackerApi", "API.example.com", "must be lowercase", "--path 'domains.trackerApi'"),
    ("domains.grafana", "*.example.com", "wildcard", "--path 'domains.grafana'"),
    ("domains.grafana", "api.example.com", "is used twice", "domains.trackerApi"),
    ("domains.httpTrackers", ["http1.example.com", "http1.example.com"], "is used twice", "domains"),
    ("domains.httpTrackers", [], "at least 1 item", "--path 'domains.httpTrackers[0]'"),
    ("domains.udpTracker", "udp1", "fully qualified", "--path 'domains.udpTracker'"),
    ("domains.trackerApi", "api..example.com", "fully qualified", "--path 'domains.trackerApi'"),
    ("domains.trackerApi", None, "is required but not set", "--path 'domains.trackerApi'"),
    (
        "domains.grafanaHost",
        "x.example.com",
        "not a known setting",
        "pulumi config rm --path 'domains.grafanaHost'",
    ),
    ("ssh.allowedCidrs", ["198.51.100.0/33"], "not a CIDR", "--path 'ssh.allowedCidrs[0]'"),
    ("ssh.allowedCidrs", ["198.51.100.7/24"], "not a CIDR", "--path 'ssh.allowedCidrs[0]'"),
    ("ssh.allowedCidrs", [], "at least 1 item", "--path 'ssh.allowedCidrs[0]'"),
    ("ssh.publicKeys", [], "needs at least one key", "ssh.publicKeys[0]"),
    ("ssh.publicKeys", ["not-a-key"], "not an OpenSSH public key", "ssh.publicKeys[0]"),
    ("ssh", None, "is required but not set", "ssh.publicKeys[0]"),
    ("tracker.udpPorts", [80], "out of range", "--path 'tracker.udpPorts[0]'"),
    ("tracker.udpPorts", [70000], "out of range", "--path 'tracker.udpPorts[0]'"),
    ("tracker.udpPorts", [6969, 6969], "listed twice", "--path 'tracker.udpPorts[0]'"),
    ("tracker.database", "mysql", "'sqlite3'", "--path 'tracker.database' sqlite3"),
    ("tracker.private", "maybe", "valid boolean", "--path 'tracker.private'"),
    ("images.grafana", "grafana/grafana", "no tag or digest", "--path 'images.grafana'"),
    ("images.tracker", "Torrust/Tracker:develop", "not an image reference", "--path 'images.tracker'"),
    # develop loads configuration schema 3.0.0, which this program does not render.
    ("images.tracker", "torrust/tracker:develop", "schema 3.0.0", "'images.tracker' torrust/tracker:v3.0.0"),
    (
        "images.tracker",
        "torrust/tracker:v3.1.0",
        "not a tracker release",
        "'images.tracker' torrust/tracker:v3.0.0",
    ),
    ("images.tracker", "torrust/tracker@sha256:" + "a" * 64, "no release tag", "torrust/tracker:v3.0.0"),
    ("images.tracker", "grafana/grafana:v3.0.0", "not the Torrust tracker image", "torrust/tracker:v3.0.0"),
    ("images.jsonExporter", "prometheuscommunity/json-exporter", "no tag or digest", "json-exporter:v0.7.0"),
    ("acme.email", None, "is required but not set", "--path 'acme.email'"),
    ("acme.email", "admin-at-example.com", "not an e-mail address", "--path 'acme.email'"),
    ("acme.staging", "yes please", "valid boolean", "--path 'acme.staging'"),
    ("server.location", "nbg2", "not a Hetzner location", "--path 'server.location' nbg1"),
    ("server.type", "huge", "not a Hetzner server type", "--path 'server.type' cx23"),
    ("server.image", "45557056", "numeric ID", "--path 'server.image'"),
    ("server.image", "windows-2022", "not supported", "--path 'server.image'"),
    ("server.backups", "sometimes", "valid boolean", "--path 'server.backups' true"),
    ("data.volumeSize", 5, "greater than or equal to 10", "--path 'data.volumeSize' 20"),
    ("data.deleteProtection", "perhaps", "valid boolean", "--path 'data.deleteProtection' true"),
    ("backup.schedule", "every night", "OnCalendar", "--path 'backup.schedule'"),
    ("backup.retentionDays", 0, "greater than or equal to 1", "--path 'backup.retentionDays' 14"),
    (
        "images.pingoo",
        "pingooio/pingoo:0.14.7@sha256:abc",
        "not an image reference",
        "--path 'images.pingoo'",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "message", "fix"), BAD_CONFIGS, ids=[f"{c[0]}={c[1]}" for c in BAD_CONFIGS]
)
def test_bad_config_is_refused_with_key_and_fix(path: str, value: Any, message: str, fix: str) -> None:
    config = with_change(path, value)
    with pytest.raises(ConfigError) as error:
        load(config)
    text = str(error.value)
    key = path.split(".")[0]
    assert f"torrust-hybrid-tls:{key}" in text
    assert message in text, text
    assert "fix: pulumi config" in text and fix in text, text


def test_every_problem_is_reported_at_once() -> None:
    config = with_change("domains.trackerApi", "API.example.com")
    config["acme"]["email"] = "nope"
    with pytest.raises(ConfigError) as error:
        load(config)
    assert "domains.trackerApi" in str(error.value) and "acme.email" in str(error.value)


def test_non_object_value_is_refused() -> None:
    config = dev_config()
    config["domains"] = "api.example.com"
    with pytest.raises(ConfigError, match=r"domains: must be an object"):
        load(config)


def test_mutable_image_tags_are_listed_for_a_warning() -> None:
    assert load(dev_config()).images.mutable() == []
    moving = with_change("images.grafana", "grafana/grafana:latest")
    assert load(moving).images.mutable() == ["grafana/grafana:latest"]
    pinned = with_change("images.grafana", "grafana/grafana:latest@sha256:" + "a" * 64)
    assert load(pinned).images.mutable() == []


@pytest.mark.parametrize(
    ("image", "schema"),
    [
        ("torrust/tracker:v3.0.0", "2.0.0"),
        ("torrust/tracker:3.0.0", "2.0.0"),
        ("docker.io/torrust/tracker:v3.0.0@sha256:" + "b" * 64, "2.0.0"),
    ],
)
def test_tracker_releases_map_to_their_schema(image: str, schema: str) -> None:
    settings = load(with_change("images.tracker", image))
    assert tracker_schema_version(settings.images.tracker) == schema


def test_default_tracker_image_is_a_pinned_release() -> None:
    default = ImageSettings().tracker
    assert default == "torrust/tracker:v3.0.0"
    assert tracker_schema_version(default) == "2.0.0"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("abc123", "too short"),
        ("has whitespace in the middle 0123456789", "whitespace"),
        # The tracker admin token travels in a URL (?token=): no '&', '#', '%', '+' ...
        ("token&format=x#0123456789abcdef", "sent in a URL query"),
    ],
)
def test_secret_checks_never_echo_the_value(value: str | None, problem: str) -> None:
    message = check_secret_value("trackerAdminToken", value, min_length=24)
    assert message is not None and problem in message
    assert "pulumi config set --secret trackerAdminToken" in message
    if value:
        assert value not in message


def test_good_or_unset_secret_passes() -> None:
    assert check_secret_value("trackerAdminToken", "a" * 32, min_length=24) is None
    assert check_secret_value("trackerAdminToken", None, min_length=24) is None  # generated
