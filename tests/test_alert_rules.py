"""Alert rules, prometheus.yml, alertmanager.yml and the blackbox modules, checked by the real tools.

- `promtool test rules` runs tests/promtool/torrust_test.yml against the rules the dev plan renders:
  every alert fires on a broken series and stays silent on a healthy one (a pure test checks that
  the test file covers every alert both ways).
- `promtool check config` loads the rendered prometheus.yml *with* its rule files (relative glob).
- `amtool check-config` accepts alertmanager.yml with every receiver, and with none.
- `blackbox_exporter --config.check` accepts the rendered probe modules.
Each has a mutation that must make the tool fail. Versions here (Debian 12) are older than the pinned
images: promtool 2.42 (image v3.11.2), amtool 0.25 (v0.34.0), blackbox 0.23 (v0.28.0), node exporter
1.5 (v1.12.1); the templates use only fields both sides know (docs/decisions/0010-alerts-from-inside.md).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import layout
from core.settings import StackSettings, configured_receivers, load_settings
from services.edge import edge_facts
from services.monitoring import alerts
from tests.conftest import dev_config
from tests.realtools import (
    RenderedPlan,
    dev_plan,  # noqa: F401  (session fixture: the plan is rendered once)
    require_tool,
    run,
)

PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool" / "torrust_test.yml"

ALL_SECRETS = {
    "alertSmtpPassword": 'smtp-"pass": #1',
    "alertWebhookUrl": "https://hooks.example.com/alerts?key=abc",
    "alertDiscordWebhookUrl": "https://discord.com/api/webhooks/123/abc",
    "alertSlackWebhookUrl": "https://hooks.slack.com/services/T000/B000/XXXX",
    "alertTelegramBotToken": "123456:ABC-DEF",
}
ALL_RECEIVERS = {
    "email": {
        "to": ["ops@example.com", "oncall@example.com"],
        "from": "alerts@example.com",
        "smarthost": "smtp.example.com:587",
        "username": "alerts@example.com",
    },
    "telegram": {"chatId": -1001234567890},
    "slack": {"channel": "#ops"},
}


def settings_with(alerts_section: dict[str, Any] | None = None) -> StackSettings:
    config = dev_config()
    if alerts_section is not None:
        config["alerts"] = alerts_section
    return load_settings("dev", config.get)


def rules_of(text: str) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


# --- pure ----------------------------------------------------------------------------------------


def test_promtool_tests_cover_every_alert_firing_and_silent() -> None:
    names = {
        rule["alert"]
        for rule in rules_of(alerts.render_alert_rules(settings_with(), edge_facts(settings_with())))
    }
    assert names == {
        "CertificateExpiring",
        "EndpointDown",
        "TrackerUnhealthy",
        "ScrapeTargetDown",
        "DataVolumeFilling",
        "DataVolumeMissing",
        "BackupTooOld",
        "BackupMetricMissing",
    }
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    assert fires == names, f"alerts never shown to fire: {names - fires}"
    assert silent == names, f"alerts never shown to stay silent: {names - silent}"
    severities = {
        rule["labels"]["severity"]
        for rule in rules_of(alerts.render_alert_rules(settings_with(), edge_facts(settings_with())))
        if rule["alert"] == "CertificateExpiring"
    }
    assert severities == {"warning", "critical"}


def test_thresholds_come_from_settings() -> None:
    section = {
        "thresholds": {
            "certWarningDays": 20,
            "certCriticalDays": 5,
            "endpointDownMinutes": 3,
            "diskUsedPercent": 90,
            "backupMaxAgeHours": 170,
        }
    }
    rules = {
        (r["alert"], r["labels"]["severity"]): r
        for r in rules_of(
            alerts.render_alert_rules(settings_with(section), edge_facts(settings_with(section)))
        )
    }
    assert rules[("CertificateExpiring", "warning")]["expr"].endswith("< 20")
    assert rules[("CertificateExpiring", "critical")]["expr"].endswith("< 5")
    assert rules[("EndpointDown", "critical")]["for"] == "3m"
    assert rules[("TrackerUnhealthy", "critical")]["for"] == "3m"
    assert rules[("DataVolumeFilling", "warning")]["expr"].endswith("> 90")
    assert f'mountpoint="{layout.DATA_ROOT}"' in rules[("DataVolumeFilling", "warning")]["expr"]
    assert rules[("BackupTooOld", "warning")]["expr"].endswith("> 170 * 3600")
    assert rules[("BackupMetricMissing", "warning")]["for"] == "170h"
    assert alerts.BACKUP_METRIC in rules[("BackupMetricMissing", "warning")]["expr"]


def test_probe_targets_cover_every_public_endpoint() -> None:
    settings = settings_with()
    config = yaml.safe_load(alerts.render_blackbox_config(settings, edge_facts(settings)))
    jobs = {job.name: job for job in alerts.probe_jobs(settings, edge_facts(settings))}
    for job in jobs.values():
        assert job.module in config["modules"], job
    assert set(jobs[alerts.TLS_JOB].targets) == {
        "api.example.com:443",
        "http1.example.com:443",
        "grafana.example.com:443",
        "grafana.example.com:3443",
    }
    assert set(jobs[alerts.TRACKER_HEALTH_JOB].targets) == {
        "https://api.example.com/api/health_check",
        "https://http1.example.com/health_check",
    }
    assert jobs["blackbox_http_port80"].targets == ("http://grafana.example.com/",)
    # Probes use IPv4 (no IPv6 network).
    for name, module in config["modules"].items():
        body = module[module["prober"]]
        assert body["preferred_ip_protocol"] == "ip4" and body["ip_protocol_fallback"] is False, name


def test_probes_verify_production_certificates_and_skip_only_the_staging_chain() -> None:
    """Staging certificates chain to roots no system trusts: with acme.staging (the dev stack) every TLS
    probe skips chain verification (else every endpoint would alert as down); in production none does."""
    config = dev_config()
    tls_modules = {"tls_connect", "https_200", "https_health", "https_redirect"}
    for staging in (True, False):
        config["acme"] = {**config["acme"], "staging": staging}
        modules = yaml.safe_load(
            alerts.render_blackbox_config(
                load_settings("dev", config.get), edge_facts(load_settings("dev", config.get))
            )
        )["modules"]
        skipping = {
            name
            for name, module in modules.items()
            if module[module["prober"]].get("tls_config", {}).get("insecure_skip_verify") is True
        }
        assert skipping == (tls_modules if staging else set()), staging
        assert tls_modules < set(modules)


def test_prometheus_scrapes_probes_exporters_and_sends_to_alertmanager() -> None:
    from services.monitoring.render import render_prometheus

    config = yaml.safe_load(render_prometheus(settings_with(), edge_facts(settings_with()), "tok"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for probe in alerts.probe_jobs(settings_with(), edge_facts(settings_with())):
        job = jobs[probe.name]
        assert job["metrics_path"] == "/probe" and job["params"] == {"module": [probe.module]}
        assert job["static_configs"] == [{"targets": list(probe.targets)}]
        assert job["relabel_configs"][-1]["replacement"] == "blackbox-exporter:9115"
        assert "token" not in str(job), "the admin token goes to the tracker only"
    assert jobs["node"]["static_configs"] == [{"targets": ["node-exporter:9100"]}]
    assert config["rule_files"] == ["rules/*.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"] == [{"targets": ["alertmanager:9093"]}]


def test_alertmanager_receivers_follow_settings_and_secrets() -> None:
    text = alerts.render_alertmanager(settings_with(ALL_RECEIVERS), ALL_SECRETS)
    config = yaml.safe_load(text)
    (receiver,) = config["receivers"]
    assert config["route"]["receiver"] == receiver["name"]
    email = receiver["email_configs"][0]
    assert email["to"] == "ops@example.com, oncall@example.com"
    assert email["auth_password"] == ALL_SECRETS["alertSmtpPassword"]  # quoted safely
    assert email["require_tls"] is True and email["smarthost"] == "smtp.example.com:587"
    assert receiver["webhook_configs"][0]["url"] == ALL_SECRETS["alertWebhookUrl"]
    assert receiver["discord_configs"][0]["webhook_url"] == ALL_SECRETS["alertDiscordWebhookUrl"]
    assert receiver["slack_configs"][0] == {
        "api_url": ALL_SECRETS["alertSlackWebhookUrl"],
        "channel": "#ops",
        "send_resolved": True,
    }
    assert receiver["telegram_configs"][0]["chat_id"] == -1001234567890
    assert receiver["telegram_configs"][0]["bot_token"] == ALL_SECRETS["alertTelegramBotToken"]
    assert configured_receivers(settings_with(ALL_RECEIVERS), ALL_SECRETS) == [
        "email",
        "webhook",
        "discord",
        "slack",
        "telegram",
    ]
    # Nothing configured: a receiver without integrations (Alertmanager's "null" receiver).
    empty = yaml.safe_load(alerts.render_alertmanager(settings_with(), {}))
    assert empty["receivers"] == [{"name": "operator"}]
    assert configured_receivers(settings_with(), {}) == []


# --- real tools ----------------------------------------------------------------------------------


def promtool_test_rules(rules_text: str, work: Path) -> str:
    """Run the unit tests against `rules_text`; AssertionError with promtool's report on failure."""
    promtool = require_tool("promtool")
    work.mkdir(parents=True, exist_ok=True)
    (work / alerts.RULES_FILE_NAME).write_text(rules_text)
    shutil.copy(PROMTOOL_TESTS, work / PROMTOOL_TESTS.name)
    result = run([promtool, "test", "rules", str(work / PROMTOOL_TESTS.name)], timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool test rules failed:\n{output}"
    return output


def test_promtool_unit_tests_pass_on_rendered_rules(dev_plan: RenderedPlan, tmp_path: Path) -> None:  # noqa: F811
    rendered = dev_plan.file(layout.PROMETHEUS, f"{layout.PROMETHEUS_RULES_DIR}/{alerts.RULES_FILE_NAME}")
    assert "SUCCESS" in promtool_test_rules(rendered.read_text(), tmp_path)


RULE_MUTATIONS: dict[str, Callable[[str], str]] = {
    # A warning threshold below the renewal window's floor would miss the 10-days-left certificate.
    "cert warning threshold": lambda text: text.replace("/ 86400 < 14", "/ 86400 < 9", 1),
    # Without `for`, a 4-minute blip (a restart) pages someone.
    "endpoint down without for": lambda text: text.replace("for: 5m\n", "for: 0m\n", 1),
    # The healthy series would fire (and the broken one too early) with the wrong comparison.
    "disk threshold direction": lambda text: text.replace("> 85", "< 85", 1),
    # Without the absent() rule, a backup job that never reports is silent forever.
    "no absent backup rule": lambda text: text.replace(
        f"absent({alerts.BACKUP_METRIC})", f"absent({alerts.BACKUP_METRIC}) and on() vector(0) > 1", 1
    ),
    # Tracker health checks counted as endpoints: TrackerUnhealthy's job selector broken.
    "tracker job selector": lambda text: text.replace(
        'job="blackbox_tracker_health"', 'job="blackbox_tracker"', 1
    ),
}


@pytest.mark.parametrize("mutation", RULE_MUTATIONS, ids=list(RULE_MUTATIONS))
def test_mutation_rules_fail_their_unit_tests(mutation: str, tmp_path: Path) -> None:
    text = alerts.render_alert_rules(settings_with(), edge_facts(settings_with()))
    mutated = RULE_MUTATIONS[mutation](text)
    assert mutated != text, f"mutation {mutation!r} did not apply"
    with pytest.raises(AssertionError, match="promtool test rules failed"):
        promtool_test_rules(mutated, tmp_path)


def promtool_check_config(config: Path) -> str:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "config", str(config)], timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool check config failed:\n{output}"
    return output


def test_promtool_check_config_loads_the_rule_files(dev_plan: RenderedPlan) -> None:  # noqa: F811
    output = promtool_check_config(dev_plan.prometheus_yml)
    # The relative glob found the rendered rule file next to it, and promtool parsed every rule.
    assert "1 rule files found" in output, output
    assert "9 rules found" in output, output


def test_mutation_broken_rule_fails_check_config(dev_plan: RenderedPlan, tmp_path: Path) -> None:  # noqa: F811
    shutil.copytree(dev_plan.prometheus_yml.parent, tmp_path / "prometheus")
    rules = tmp_path / "prometheus" / "rules" / alerts.RULES_FILE_NAME
    rules.write_text(rules.read_text().replace("probe_success{", "probe_success{{", 1))
    with pytest.raises(AssertionError, match="promtool check config failed"):
        promtool_check_config(tmp_path / "prometheus" / "prometheus.yml")


def amtool_check(path: Path) -> str:
    amtool = require_tool("amtool")
    result = run([amtool, "check-config", str(path)], timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"amtool check-config failed:\n{output}"
    return output


def test_amtool_accepts_every_receiver(tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(alerts.render_alertmanager(settings_with(ALL_RECEIVERS), ALL_SECRETS))
    output = amtool_check(path)
    assert "1 receivers" in output and "1 inhibit rules" in output, output


def test_amtool_accepts_the_dev_plan_without_receivers(dev_plan: RenderedPlan) -> None:  # noqa: F811
    amtool_check(dev_plan.file(layout.ALERTMANAGER, layout.ALERTMANAGER_CONFIG_FILE))


@pytest.mark.parametrize(
    ("old", "new"),
    [("discord_configs", "discord_config"), ("chat_id: -1001234567890", 'chat_id: "ops"')],
    ids=["unknown key", "chat id not a number"],
)
def test_mutation_amtool_rejects_broken_config(tmp_path: Path, old: str, new: str) -> None:
    text = alerts.render_alertmanager(settings_with(ALL_RECEIVERS), ALL_SECRETS)
    assert old in text
    path = tmp_path / "alertmanager.yml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(AssertionError, match="amtool check-config failed"):
        amtool_check(path)


def blackbox_check(path: Path) -> None:
    blackbox = require_tool("prometheus-blackbox-exporter")
    result = run([blackbox, "--config.check", f"--config.file={path}"], timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"blackbox exporter rejected its config:\n{output}"
    assert "deprecated" not in output, output


def test_blackbox_accepts_rendered_modules(dev_plan: RenderedPlan) -> None:  # noqa: F811
    blackbox_check(dev_plan.file(layout.BLACKBOX, layout.BLACKBOX_CONFIG_FILE))


def test_mutation_blackbox_rejects_typo(dev_plan: RenderedPlan, tmp_path: Path) -> None:  # noqa: F811
    text = dev_plan.file(layout.BLACKBOX, layout.BLACKBOX_CONFIG_FILE).read_text()
    path = tmp_path / "config.yml"
    path.write_text(text.replace("valid_status_codes", "valid_status_code", 1))
    with pytest.raises(AssertionError, match="rejected its config"):
        blackbox_check(path)
