"""json_exporter (tracker stats JSON -> metrics), Prometheus (scrapes it) and Grafana (dashboards)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.containers import ContainerSpec, ServiceArgs, create_service_container, secret_env
from core import layout
from core.edgefacts import EdgeFacts
from core.settings import StackSettings
from services.monitoring.alerts import prometheus_rule_files
from services.monitoring.render import (
    grafana_static_files,
    json_exporter_config,
    render_grafana_datasource,
    render_prometheus,
)

PROMETHEUS_RETENTION = "30d"
# Bounded so that metrics can never fill the data volume the database and certificates live on.
PROMETHEUS_RETENTION_SIZE = "4GB"


def grafana_env(
    settings: StackSettings, edge: EdgeFacts, admin_password: pulumi.Input[str]
) -> list[pulumi.Input[str]]:
    # Where browsers reach Grafana (the edge decides: :3443 with the pingoo edge, 443 with nginx):
    # links, redirects and the Live origin check need exactly that origin, port included.
    root_url = edge.grafana_url
    return [
        f"GF_SERVER_ROOT_URL={root_url}",
        f"GF_SERVER_DOMAIN={settings.domains.grafana}",
        f"GF_LIVE_ALLOWED_ORIGINS={root_url.rstrip('/')}",
        "GF_SECURITY_ADMIN_USER=admin",
        secret_env("GF_SECURITY_ADMIN_PASSWORD", admin_password),
        "GF_SECURITY_COOKIE_SECURE=true",
        "GF_SECURITY_COOKIE_SAMESITE=lax",
        "GF_SECURITY_DISABLE_GRAVATAR=true",
        "GF_USERS_ALLOW_SIGN_UP=false",
        "GF_AUTH_ANONYMOUS_ENABLED=false",
        "GF_AUTH_ANONYMOUS_HIDE_VERSION=true",
        "GF_ANALYTICS_REPORTING_ENABLED=false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES=false",
        "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES=false",
        # Grafana's internal networks have no egress: don't try to preinstall plugins at start.
        "GF_PLUGINS_PREINSTALL_DISABLED=true",
    ]


@dataclass
class MonitoringArgs(ServiceArgs):
    admin_token: pulumi.Input[str]
    grafana_admin_password: pulumi.Input[str]
    edge: EdgeFacts  # the Grafana URL and the probed endpoints (services/edge/facts.py)


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:Monitoring", name, None, opts)
        settings = args.settings
        # Tracker v3.0.0 serves its stats as JSON only (docs/decisions/0008-tracker-version.md).
        # Image: prometheus-community/json_exporter v0.7.0 Dockerfile (busybox base, USER nobody,
        # ENTRYPOINT /bin/json_exporter, listens on :7979); no capabilities, no published port.
        self.json_exporter_files = {layout.JSON_EXPORTER_CONFIG_FILE: json_exporter_config()}
        self.json_exporter = create_service_container(
            ContainerSpec(
                name=layout.JSON_EXPORTER,
                image=settings.images.json_exporter,
                memory_mb=64,
                # Stateless exporter: a short grace period is enough to close its connections.
                stop_timeout=10,
                uploads=self.json_exporter_files,
                command=[
                    f"--config.file={layout.JSON_EXPORTER_CONFIG_FILE}",
                    f"--web.listen-address=:{layout.JSON_EXPORTER_PORT}",
                ],
                healthcheck=[
                    "CMD",
                    "wget",
                    "-q",
                    "--spider",
                    f"http://127.0.0.1:{layout.JSON_EXPORTER_PORT}/metrics",
                ],
            ),
            args.docker_host,
            self,
        )
        # The scrape config carries the admin token (in the probe's target URL): the file is a secret.
        self.prometheus_config: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.from_input(args.admin_token).apply(
                lambda token: render_prometheus(settings, args.edge, token)
            )
        )
        self.prometheus = create_service_container(
            ContainerSpec(
                name=layout.PROMETHEUS,
                image=settings.images.prometheus,
                memory_mb=512,
                # On SIGTERM Prometheus flushes the head block and closes the WAL; give it time.
                stop_timeout=60,
                uploads={
                    layout.PROMETHEUS_CONFIG_FILE: self.prometheus_config,
                    **prometheus_rule_files(settings, args.edge),
                },
                volumes={layout.PROMETHEUS_DATA_DIR: "/prometheus"},
                command=[
                    f"--config.file={layout.PROMETHEUS_CONFIG_FILE}",
                    "--storage.tsdb.path=/prometheus",
                    f"--storage.tsdb.retention.time={PROMETHEUS_RETENTION}",
                    f"--storage.tsdb.retention.size={PROMETHEUS_RETENTION_SIZE}",
                ],
                healthcheck=[
                    "CMD",
                    "wget",
                    "-q",
                    "--spider",
                    f"http://127.0.0.1:{layout.PROMETHEUS_PORT}/-/healthy",
                ],
            ),
            args.docker_host,
            self,
        )

        self.grafana_files = {
            layout.GRAFANA_DATASOURCE_FILE: render_grafana_datasource(settings),
            **grafana_static_files(),
        }
        self.grafana = create_service_container(
            ContainerSpec(
                name=layout.GRAFANA,
                image=settings.images.grafana,
                memory_mb=512,
                # Grafana closes its SQLite database on SIGTERM.
                stop_timeout=30,
                env=grafana_env(settings, args.edge, args.grafana_admin_password),
                uploads=self.grafana_files,
                volumes={layout.GRAFANA_DATA_DIR: "/var/lib/grafana"},
                healthcheck=[
                    "CMD",
                    "wget",
                    "-q",
                    "--spider",
                    f"http://127.0.0.1:{layout.GRAFANA_PORT}/api/health",
                ],
            ),
            args.docker_host,
            self,
        )
        self.register_outputs(
            {
                "jsonExporter": self.json_exporter.name,
                "prometheus": self.prometheus.name,
                "grafana": self.grafana.name,
            }
        )
