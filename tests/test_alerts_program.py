"""The alerting services under mocks: containers, networks, privileges, secrets, the no-receiver
warning and the configuration errors (the same style as tests/test_program.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import layout
from tests.conftest import DEV_STACK, Deploy
from tests.test_plan import run_plan
from tests.test_program import (
    NETWORK,
    container,
    network_names,
    published,
    secret_value,
    uploads,
)
from tools.mocks import masked

NEW_CONTAINERS = (layout.BLACKBOX, layout.NODE_EXPORTER, layout.ALERTMANAGER)
EMAIL = {"to": ["ops@example.com"], "from": "alerts@example.com", "smarthost": "smtp.example.com:587"}
CANARIES = {
    "alertSmtpPassword": "CANARY-smtp-9a8b7c",
    "alertWebhookUrl": "https://hooks.example.com/CANARY-webhook-1f2e",
    "alertDiscordWebhookUrl": "https://discord.com/api/webhooks/1/CANARY-discord-3c4d",
    "alertSlackWebhookUrl": "https://hooks.slack.com/services/CANARY-slack-5e6f",
    "alertTelegramBotToken": "123:CANARY-telegram-7a8b",
}
ALL_RECEIVERS = {
    "email": dict(EMAIL, username="alerts@example.com"),
    "telegram": {"chatId": 42},
    "slack": {"channel": "#ops"},
}


def test_alerting_containers_publish_nothing_and_drop_every_capability(deploy: Deploy) -> None:
    run = deploy()
    for name in NEW_CONTAINERS:
        inputs = container(run, name).inputs
        assert published(run, name) == set(), name
        assert inputs["capabilities"] == {"drops": ["ALL"]}, name
        assert "privileged" not in inputs and "pidMode" not in inputs and "networkMode" not in inputs, name
        assert inputs["securityOpts"] == ["no-new-privileges:true"], name
        assert 0 < inputs["memory"] <= 128, name
        assert inputs["healthcheck"]["tests"][:3] == ["CMD", "wget", "-q"], name
    # The blackbox image has no USER: it runs as nobody here; the other two images already do.
    assert container(run, layout.BLACKBOX).inputs["user"] == "65534:65534"


def test_alerting_networks(deploy: Deploy) -> None:
    run = deploy()
    networks = {r.inputs["name"]: r.inputs for r in run.monitor.by_type(NETWORK)}
    assert networks["torrust-monitoring"]["internal"] is True
    # Egress only where it is the job: probing the public names, sending notifications.
    assert networks["torrust-probes"]["internal"] is False
    assert networks["torrust-notify"]["internal"] is False
    assert set(network_names(run, layout.BLACKBOX)) == {"torrust-monitoring", "torrust-probes"}
    assert set(network_names(run, layout.NODE_EXPORTER)) == {"torrust-monitoring"}
    assert set(network_names(run, layout.ALERTMANAGER)) == {"torrust-monitoring", "torrust-notify"}
    assert "torrust-monitoring" in network_names(run, layout.PROMETHEUS)
    # No alerting container shares a network with the edge or a backend it has no business with.
    for name in NEW_CONTAINERS:
        assert not set(network_names(run, name)) & {
            "torrust-edge",
            "torrust-udp",
            "torrust-tracker-backend",
            "torrust-grafana-backend",
            "torrust-dashboards",
            "torrust-metrics",
        }, name
    # The probes network and the notify network are not shared: each container has its own egress.
    for name in (layout.PROMETHEUS, layout.GRAFANA, layout.TRACKER, layout.PINGOO, layout.NGINX):
        assert not set(network_names(run, name)) & {"torrust-probes", "torrust-notify"}, name


def test_node_exporter_sees_the_host_read_only(deploy: Deploy) -> None:
    inputs = container(deploy(), layout.NODE_EXPORTER).inputs
    assert inputs["mounts"] == [
        {
            "type": "bind",
            "source": "/",
            "target": "/host",
            "readOnly": True,
            "bindOptions": {"propagation": "rslave"},
        }
    ]
    assert "volumes" not in inputs
    command = inputs["command"]
    assert "--path.rootfs=/host" in command
    assert f"--collector.textfile.directory=/host{layout.NODE_TEXTFILE_DIR}" in command


def test_prometheus_loads_the_rules_and_blackbox_its_modules(deploy: Deploy) -> None:
    run = deploy()
    files = uploads(run, layout.PROMETHEUS)
    rules = yaml.safe_load(files[f"{layout.PROMETHEUS_RULES_DIR}/torrust.yml"])
    assert {rule["alert"] for group in rules["groups"] for rule in group["rules"]} >= {
        "CertificateExpiring",
        "EndpointDown",
        "BackupMetricMissing",
    }
    scrape = yaml.safe_load(secret_value(files[layout.PROMETHEUS_CONFIG_FILE]))
    assert scrape["rule_files"] == ["rules/*.yml"]  # resolves to PROMETHEUS_RULES_DIR
    assert str(Path(layout.PROMETHEUS_CONFIG_FILE).parent / "rules") == layout.PROMETHEUS_RULES_DIR
    blackbox = container(run, layout.BLACKBOX).inputs
    assert f"--config.file={layout.BLACKBOX_CONFIG_FILE}" in blackbox["command"]
    assert "tls_connect" in uploads(run, layout.BLACKBOX)[layout.BLACKBOX_CONFIG_FILE]


def test_receiver_secrets_stay_secret(deploy: Deploy) -> None:
    run = deploy({"alerts": ALL_RECEIVERS}, secrets=dict(CANARIES))
    config_upload = uploads(run, layout.ALERTMANAGER)[layout.ALERTMANAGER_CONFIG_FILE]
    config = yaml.safe_load(secret_value(config_upload))  # the whole file is a secret Output
    receiver = config["receivers"][0]
    assert receiver["email_configs"][0]["auth_password"] == CANARIES["alertSmtpPassword"]
    assert receiver["telegram_configs"][0]["chat_id"] == 42
    plain = json.dumps([masked(r.inputs) for r in run.monitor.registrations]) + json.dumps(run.outputs)
    for value in CANARIES.values():
        assert value not in plain
    assert run.outputs["alertReceivers"] == ["email", "webhook", "discord", "slack", "telegram"]


def test_canary_receiver_secrets_never_reach_plan_files(deploy: Deploy, tmp_path: Path) -> None:
    from tools.plan import write_plan

    run = deploy({"alerts": ALL_RECEIVERS}, secrets=dict(CANARIES))
    write_plan("dev", run, tmp_path / "plan", {f"torrust-hybrid-tls:{k}": v for k, v in CANARIES.items()})
    written = {p: p.read_text() for p in (tmp_path / "plan").rglob("*") if p.is_file()}
    for path, text in written.items():
        for value in CANARIES.values():
            assert value not in text, path
    config = written[tmp_path / "plan/files/alertmanager/etc/alertmanager/alertmanager.yml"]
    assert "<plan-placeholder:alertSmtpPassword>" in config


def test_no_receiver_is_an_output_not_an_error(deploy: Deploy) -> None:
    run = deploy()
    assert run.outputs["alertReceivers"] == []
    config = yaml.safe_load(secret_value(uploads(run, layout.ALERTMANAGER)[layout.ALERTMANAGER_CONFIG_FILE]))
    assert config["receivers"] == [{"name": "operator"}]


def write_stack(tmp_path: Path, alerts: dict[str, Any] | None, secrets: dict[str, str]) -> Path:
    config: dict[str, Any] = dict(DEV_STACK)
    if alerts is not None:
        config["torrust-hybrid-tls:alerts"] = alerts
    for key, value in secrets.items():
        config[f"torrust-hybrid-tls:{key}"] = {"secure": value}
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def test_make_plan_warns_when_alerts_go_nowhere(tmp_path: Path) -> None:
    result = run_plan(tmp_path / "out", write_stack(tmp_path, None, {}))
    assert result.returncode == 0, result.stderr
    assert "no alert receiver is configured" in result.stderr


@pytest.mark.parametrize(
    ("alerts", "secrets"),
    [({"email": EMAIL}, {}), (None, {"alertDiscordWebhookUrl": "v1:AAAA"})],
    ids=["email", "discord"],
)
def test_make_plan_is_quiet_with_a_receiver(
    tmp_path: Path, alerts: dict[str, Any] | None, secrets: dict[str, str]
) -> None:
    result = run_plan(tmp_path / "out", write_stack(tmp_path, alerts, secrets))
    assert result.returncode == 0, result.stderr
    assert "no alert receiver" not in result.stderr


@pytest.mark.parametrize(
    ("changes", "secrets", "message"),
    [
        (
            {"alerts": {"email": dict(EMAIL, username="alerts@example.com")}},
            {},
            "alertSmtpPassword: alerts.email.username is set but the SMTP password is not",
        ),
        ({}, {"alertTelegramBotToken": "123:abc"}, "alerts.telegram.chatId: alertTelegramBotToken is set"),
        ({"alerts": {"telegram": {"chatId": 1}}}, {}, "alertTelegramBotToken: alerts.telegram is set"),
        ({"alerts": {"slack": {"channel": "#ops"}}}, {}, "alertSlackWebhookUrl: alerts.slack is set"),
        (
            {"alerts": {"email": dict(EMAIL, smarthost="smtp.example.com")}},
            {},
            r"alerts\.email\.smarthost: 'smtp.example.com' is not host:port",
        ),
        (
            {"alerts": {"thresholds": {"certWarningDays": 7, "certCriticalDays": 10}}},
            {},
            r"alerts\.thresholds: .*certCriticalDays \(10\) must be below certWarningDays \(7\)",
        ),
        ({"alerts": {"webhook": "https://x"}}, {}, r"alerts\.webhook: is not a known setting"),
    ],
    ids=[
        "smtp user without password",
        "telegram token without chat",
        "telegram chat without token",
        "slack without url",
        "smarthost without port",
        "thresholds out of order",
        "url as plain setting",
    ],
)
def test_alert_config_errors_stop_before_any_resource(
    deploy: Deploy, changes: dict[str, Any], secrets: dict[str, str], message: str
) -> None:
    with pytest.raises(Exception, match=message) as error:
        deploy(changes, secrets=dict(secrets))
    assert type(error.value).__name__ == "RunError"
    assert "fix: pulumi config" in str(error.value)


def test_plain_text_receiver_secret_is_refused_without_echoing_it(deploy: Deploy) -> None:
    url = "https://discord.com/api/webhooks/1/plain-text-token"
    with pytest.raises(Exception, match="alertDiscordWebhookUrl: is stored in plain text") as error:
        deploy({"alertDiscordWebhookUrl": url})
    assert url not in str(error.value)
    assert "pulumi config set --secret alertDiscordWebhookUrl" in str(error.value)


def test_alerting_image_defaults_agree_everywhere() -> None:
    from core.settings import _IMAGE_EXAMPLES, ImageSettings

    defaults = ImageSettings()
    dev = DEV_STACK["torrust-hybrid-tls:images"]
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for attribute, key in (
        ("blackbox_exporter", "blackboxExporter"),
        ("node_exporter", "nodeExporter"),
        ("alertmanager", "alertmanager"),
    ):
        value = getattr(defaults, attribute)
        assert _IMAGE_EXAMPLES[key] == value and dev[key] == value, key
        assert f"| `images.{key}` | `{value}` |" in readme, key
