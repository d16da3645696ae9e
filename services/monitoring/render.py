"""Monitoring's files (pure): prometheus.yml, json_exporter's module, Grafana's provisioning and
dashboards. The alerting half (probes, rules, Alertmanager) is services/monitoring/alerts.py.
Templates: services/monitoring/templates/."""

from __future__ import annotations

from core import layout
from core.edgefacts import EdgeFacts
from core.settings import StackSettings
from services.monitoring.alerts import TEMPLATES, prometheus_monitoring_context

SCRAPE_INTERVAL = "15s"
# The one scrape job: Prometheus -> json_exporter /probe -> tracker GET /api/v1/stats (JSON only in
# v3.0.0: no ?format=prometheus, no /api/v1/metrics; docs/decisions/0008-tracker-version.md).
TRACKER_STATS_JOB = "tracker_stats"
JSON_EXPORTER_MODULE = "tracker_stats"  # the module name in templates/json-exporter/config.yml
TRACKER_STATS_PATH = "/api/v1/stats"


def tracker_stats_url(admin_token: str) -> str:
    """The stats URL json_exporter fetches. v3.0.0 takes the token only as ?token= (query), see
    src/servers/apis/v1/middlewares/auth.rs. The settings accept only URL-safe tokens
    (core.settings.URL_SAFE_SECRETS), so the token goes in verbatim (and the plan's placeholder stays
    findable in the rendered file)."""
    return f"http://{layout.TRACKER}:{layout.TRACKER_API_PORT}{TRACKER_STATS_PATH}?token={admin_token}"


def render_prometheus(settings: StackSettings, edge: EdgeFacts, admin_token: str) -> str:
    """prometheus.yml carries the admin token (in the probe's target URL): upload it as a secret."""
    return TEMPLATES.render(
        "prometheus/prometheus.yml.j2",
        stack=settings.stack,
        scrape_interval=SCRAPE_INTERVAL,
        job=TRACKER_STATS_JOB,
        module=JSON_EXPORTER_MODULE,
        target_url=tracker_stats_url(admin_token),
        exporter=f"{layout.JSON_EXPORTER}:{layout.JSON_EXPORTER_PORT}",
        instance=f"{layout.TRACKER}:{layout.TRACKER_API_PORT}",
        **prometheus_monitoring_context(settings, edge),
    )


def json_exporter_config() -> str:
    """json_exporter's module file (static: the token travels in Prometheus' probe URL)."""
    return TEMPLATES.text("json-exporter/config.yml")


def render_grafana_datasource(settings: StackSettings) -> str:
    return TEMPLATES.render(
        "grafana/provisioning/datasources/prometheus.yaml.j2",
        stack=settings.stack,
        uid=layout.GRAFANA_DATASOURCE_UID,
        url=f"http://{layout.PROMETHEUS}:{layout.PROMETHEUS_PORT}",
        scrape_interval=SCRAPE_INTERVAL,
    )


def grafana_static_files() -> dict[str, str]:
    """Dashboard provider and dashboards: static files, container path -> content."""
    files = {
        layout.GRAFANA_DASHBOARD_PROVIDER_FILE: TEMPLATES.text(
            "grafana/provisioning/dashboards/torrust.yaml"
        ),
    }
    for path in sorted((TEMPLATES.folder / "grafana/dashboards").glob("*.json")):
        files[f"{layout.GRAFANA_DASHBOARDS_DIR}/{path.name}"] = path.read_text()
    return files
