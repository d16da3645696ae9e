"""Alerts from inside (pure): what the blackbox exporter probes, the alert rules, Alertmanager's
receivers. Nothing here touches Pulumi; secret values come in as plain strings and the callers keep
the rendered text a Pulumi secret.

Upstream sources read for the values below (docs/decisions/0010-alerts-from-inside.md):
- prometheus/blackbox_exporter v0.28.0 `config/config.go` (modules, `tls_config`, `fail_if_*`) and
  `prober/tcp.go` (the TLS server name defaults to the target's host).
- prometheus/alertmanager v0.34.0 `config/config.go` (Receiver: email_configs, webhook_configs,
  discord_configs, slack_configs, telegram_configs), `config/notifiers.go` (EmailConfig,
  SlackConfig) and `notify/{discord,telegram,webhook}/config.go`.
- prometheus/node_exporter v1.12.1 README "Docker" and `collector/filesystem_linux.go`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from core import layout
from core.edgefacts import EdgeFacts
from core.rendering import Templates
from core.settings import StackSettings, configured_receivers

# Every monitoring template (Prometheus, Grafana, json_exporter, blackbox, Alertmanager).
TEMPLATES = Templates(Path(__file__).resolve().parent / "templates")

# Probe modules, in templates/blackbox/config.yml.j2.
TLS_MODULE = "tls_connect"
HTTPS_HEALTH_MODULE = "https_health"
HTTPS_200_MODULE = "https_200"
HTTPS_REDIRECT_MODULE = "https_redirect"
HTTP_REDIRECT_MODULE = "http_redirect"

# Scrape jobs (the alert rules select on them).
TLS_JOB = "blackbox_tls"
HTTP_JOB = "blackbox_http"
TRACKER_HEALTH_JOB = "blackbox_tracker_health"
NODE_JOB = "node"
ALERTMANAGER_JOB = "alertmanager"

# The backup job's interface (it writes these with the node exporter's textfile collector): a gauge,
# Unix seconds of the last successful backup; every series (any labels) is checked on its own.
BACKUP_METRIC = "torrust_backup_last_success_timestamp_seconds"


@dataclass(frozen=True)
class ProbeJob:
    name: str
    module: str
    targets: tuple[str, ...]
    comment: str


def probe_jobs(settings: StackSettings, edge: EdgeFacts) -> list[ProbeJob]:
    """Every public endpoint, probed by its public name (as a client on the internet would), as the
    edge states them (services/edge/facts.py)."""
    domains = settings.domains
    ports = sorted({e.port for e in edge.tls})
    others = "".join(f" and on {port}" for port in ports if port != layout.HTTPS_PORT)
    grafana_port = urlsplit(edge.grafana_url).port or layout.HTTPS_PORT
    jobs = [
        ProbeJob(
            TLS_JOB,
            TLS_MODULE,
            tuple(e.target for e in edge.tls),
            f"TLS handshake (certificate valid for the name) on 443 per {edge.proxy} name{others}",
        ),
        ProbeJob(
            HTTP_JOB,
            HTTPS_200_MODULE,
            (f"{edge.grafana_url}api/health",),
            f"Grafana through nginx on {grafana_port}",
        ),
    ]
    for suffix, module, tls in (
        ("_redirects", HTTPS_REDIRECT_MODULE, True),
        ("_port80", HTTP_REDIRECT_MODULE, False),
    ):
        redirects = [r for r in edge.redirects if r.tls == tls]
        if redirects:
            jobs.append(
                ProbeJob(
                    f"{HTTP_JOB}{suffix}",
                    module,
                    tuple(r.url for r in redirects),
                    "; ".join(r.purpose for r in redirects),
                )
            )
    jobs.append(
        ProbeJob(
            TRACKER_HEALTH_JOB,
            HTTPS_HEALTH_MODULE,
            (
                f"https://{domains.tracker_api}/api/health_check",
                *(f"https://{host}/health_check" for host in domains.http_trackers),
            ),
            f'tracker health checks through {edge.proxy}: {{"status":"Ok"}}',
        )
    )
    return jobs


def render_blackbox_config(settings: StackSettings, edge: EdgeFacts) -> str:
    return TEMPLATES.render(
        "blackbox/config.yml.j2",
        stack=settings.stack,
        skip_verify=settings.acme.staging,
        proxy=edge.proxy,
        grafana_port=urlsplit(edge.grafana_url).port or layout.HTTPS_PORT,
    )


def prometheus_monitoring_context(settings: StackSettings, edge: EdgeFacts) -> dict[str, object]:
    """The scrape jobs, rule files and Alertmanager that prometheus.yml.j2 adds for alerting."""
    return {
        "probe_jobs": probe_jobs(settings, edge),
        "blackbox_address": f"{layout.BLACKBOX}:{layout.BLACKBOX_PORT}",
        "node_job": NODE_JOB,
        "node_address": f"{layout.NODE_EXPORTER}:{layout.NODE_EXPORTER_PORT}",
        "alertmanager_job": ALERTMANAGER_JOB,
        "alertmanager_address": f"{layout.ALERTMANAGER}:{layout.ALERTMANAGER_PORT}",
        "rule_files": RULE_FILES_GLOB,
    }


# Relative to prometheus.yml's directory (Prometheus resolves rule_files against it), so that the
# same file checks with promtool in a scratch folder and runs in /etc/prometheus.
RULE_FILES_GLOB = "rules/*.yml"
RULES_FILE_NAME = "torrust.yml"


def render_alert_rules(settings: StackSettings, edge: EdgeFacts) -> str:
    thresholds = settings.alerts.thresholds
    return TEMPLATES.render(
        "prometheus/rules/torrust.yml.j2",
        stack=settings.stack,
        proxy=edge.proxy,
        renewal=edge.renewal,
        edge_logs=" / ".join(edge.containers),
        thresholds=thresholds,
        tls_job=TLS_JOB,
        http_job_regex=f"{HTTP_JOB}.*",
        tracker_health_job=TRACKER_HEALTH_JOB,
        node_job=NODE_JOB,
        data_root=layout.DATA_ROOT,
        backup_metric=BACKUP_METRIC,
    )


def prometheus_rule_files(settings: StackSettings, edge: EdgeFacts) -> dict[str, str]:
    """Container path -> content of every rule file Prometheus loads."""
    return {f"{layout.PROMETHEUS_RULES_DIR}/{RULES_FILE_NAME}": render_alert_rules(settings, edge)}


# --- Alertmanager -------------------------------------------------------------------------------


def render_alertmanager(settings: StackSettings, secrets: Mapping[str, str]) -> str:
    """alertmanager.yml; carries the receiver secrets, so callers keep it a Pulumi secret."""
    alerts = settings.alerts
    return TEMPLATES.render(
        "alertmanager/alertmanager.yml.j2",
        stack=settings.stack,
        email=alerts.email,
        smtp_password=secrets.get("alertSmtpPassword"),
        webhook_url=secrets.get("alertWebhookUrl"),
        discord_webhook_url=secrets.get("alertDiscordWebhookUrl"),
        slack_webhook_url=secrets.get("alertSlackWebhookUrl"),
        slack=alerts.slack,
        telegram_bot_token=secrets.get("alertTelegramBotToken") if alerts.telegram else None,
        telegram=alerts.telegram,
        receivers=configured_receivers(settings, secrets),
    )
