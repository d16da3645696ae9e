"""Pure rendering: settings (and, where needed, secret values) in, file text out.

Nothing here touches Pulumi, so every template is testable on its own and the offline plan writes
exactly these strings. Templates use StrictUndefined: a missing variable is an error, not "".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from core import layout
from core.settings import DOCKER_CE_IMAGE, StackSettings, tracker_release, tracker_schema_version

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

_ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATES_DIR)),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


def _quote(value: object) -> str:
    """A double-quoted string (or bool/number) valid in YAML, TOML and nginx alike.

    Jinja's own `tojson` HTML-escapes <, > and &, which is noise in config files.
    """
    return json.dumps(value, ensure_ascii=False)


_ENV.filters["quote"] = _quote


def render_template(name: str, **context: object) -> str:
    return _ENV.get_template(name).render(**context)


@dataclass(frozen=True)
class PingooService:
    name: str
    host: str
    upstream: str
    comment: str


def pingoo_services(settings: StackSettings) -> list[PingooService]:
    """Host-routed services on Pingoo's 443 listener, in routing order."""
    domains = settings.domains
    services = [
        PingooService(
            "tracker_api",
            domains.tracker_api,
            f"http://{layout.TRACKER_BACKEND_IP}:{layout.TRACKER_API_PORT}",
            "Tracker REST API",
        )
    ]
    for index, host in enumerate(domains.http_trackers):
        services.append(
            PingooService(
                f"http_tracker_{index + 1}",
                host,
                f"http://{layout.TRACKER_BACKEND_IP}:{layout.http_tracker_port(index)}",
                f"HTTP tracker {index + 1}",
            )
        )
    services.append(
        PingooService(
            "grafana_redirect",
            domains.grafana,
            f"http://{layout.NGINX_EDGE_IP}:{layout.NGINX_REDIRECT_PORT}",
            f"Grafana name on 443: nginx redirects to :{layout.GRAFANA_TLS_PORT}",
        )
    )
    return services


def acme_directory(settings: StackSettings) -> str:
    return layout.LETSENCRYPT_STAGING if settings.acme.staging else layout.LETSENCRYPT_PRODUCTION


def image_version(image: str) -> str:
    """The tag of an image reference (for comments), or its digest when it has no tag."""
    name = image.split("@")[0]
    tail = name.rsplit("/", 1)[-1]
    return tail.split(":", 1)[1] if ":" in tail else image.split("@")[-1]


def render_pingoo(settings: StackSettings) -> str:
    return render_template(
        "pingoo/pingoo.yml.j2",
        stack=settings.stack,
        pingoo_version=image_version(settings.images.pingoo),
        https_port=layout.HTTPS_PORT,
        directory_url=acme_directory(settings),
        services=pingoo_services(settings),
    )


def render_nginx_redirector(settings: StackSettings) -> str:
    return render_template(
        "nginx/redirector.conf.j2",
        stack=settings.stack,
        http_port=layout.HTTP_PORT,
        webroot=layout.NGINX_WEBROOT,
        grafana_host=settings.domains.grafana,
        grafana_tls_port=layout.GRAFANA_TLS_PORT,
        redirect_port=layout.NGINX_REDIRECT_PORT,
    )


def render_nginx_grafana(settings: StackSettings) -> str:
    return render_template(
        "nginx/grafana.conf.j2",
        stack=settings.stack,
        grafana_host=settings.domains.grafana,
        grafana_tls_port=layout.GRAFANA_TLS_PORT,
        grafana_upstream=f"{layout.GRAFANA_BACKEND_IP}:{layout.GRAFANA_PORT}",
        cert_dir=f"/etc/letsencrypt/live/{layout.GRAFANA_CERT_NAME}",
    )


# Configuration schema -> template. Every tracker release the settings accept (TRACKER_RELEASES)
# maps to a schema that has a template here; tests/test_rendering.py keeps the two in step.
TRACKER_TEMPLATES = {"2.0.0": "tracker/tracker.toml.j2"}


def render_tracker_toml(settings: StackSettings) -> str:
    tracker = settings.tracker
    schema = tracker_schema_version(settings.images.tracker)
    return render_template(
        TRACKER_TEMPLATES[schema],
        stack=settings.stack,
        tracker_release=tracker_release(settings.images.tracker),
        schema_version=schema,
        log_level=tracker.log_level,
        private=tracker.private,
        announce_interval=tracker.announce_interval,
        database_driver=tracker.database,
        database_path=layout.TRACKER_DATABASE_PATH,
        udp_ports=tracker.udp_ports,
        http_ports=[layout.http_tracker_port(i) for i in range(len(settings.domains.http_trackers))],
        api_port=layout.TRACKER_API_PORT,
        health_port=layout.TRACKER_HEALTH_PORT,
    )


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


def render_prometheus(settings: StackSettings, admin_token: str) -> str:
    """prometheus.yml carries the admin token (in the probe's target URL): upload it as a secret."""
    from core.alerts import prometheus_monitoring_context  # core.alerts renders with this module

    return render_template(
        "prometheus/prometheus.yml.j2",
        stack=settings.stack,
        scrape_interval=SCRAPE_INTERVAL,
        job=TRACKER_STATS_JOB,
        module=JSON_EXPORTER_MODULE,
        target_url=tracker_stats_url(admin_token),
        exporter=f"{layout.JSON_EXPORTER}:{layout.JSON_EXPORTER_PORT}",
        instance=f"{layout.TRACKER}:{layout.TRACKER_API_PORT}",
        **prometheus_monitoring_context(settings),
    )


def json_exporter_config() -> str:
    """json_exporter's module file (static: the token travels in Prometheus' probe URL)."""
    return (TEMPLATES_DIR / "json-exporter/config.yml").read_text()


def render_grafana_datasource(settings: StackSettings) -> str:
    return render_template(
        "grafana/provisioning/datasources/prometheus.yaml.j2",
        stack=settings.stack,
        uid=layout.GRAFANA_DATASOURCE_UID,
        url=f"http://{layout.PROMETHEUS}:{layout.PROMETHEUS_PORT}",
        scrape_interval=SCRAPE_INTERVAL,
    )


def grafana_static_files() -> dict[str, str]:
    """Dashboard provider and dashboards: static files, container path -> content."""
    files = {
        layout.GRAFANA_DASHBOARD_PROVIDER_FILE: (
            TEMPLATES_DIR / "grafana/provisioning/dashboards/torrust.yaml"
        ).read_text(),
    }
    for path in sorted((TEMPLATES_DIR / "grafana/dashboards").glob("*.json")):
        files[f"{layout.GRAFANA_DASHBOARDS_DIR}/{path.name}"] = path.read_text()
    return files


@dataclass(frozen=True)
class HostDirectory:
    path: str
    owner: int
    group: int
    mode: str


def host_directories() -> list[HostDirectory]:
    """Data directories with the owners the images need (created by cloud-init)."""
    return [
        HostDirectory(layout.DATA_ROOT, 0, 0, "0755"),
        HostDirectory(layout.PINGOO_TLS_DIR.rsplit("/", 1)[0], 0, 0, "0700"),
        HostDirectory(layout.PINGOO_TLS_DIR, 0, 0, "0700"),
        HostDirectory(layout.LETSENCRYPT_DIR, 0, 0, "0700"),
        HostDirectory(
            layout.TRACKER_LIB_DIR.rsplit("/", 1)[0], layout.TRACKER_UID, layout.TRACKER_UID, "0750"
        ),
        HostDirectory(layout.TRACKER_LIB_DIR, layout.TRACKER_UID, layout.TRACKER_UID, "0750"),
        HostDirectory(f"{layout.TRACKER_LIB_DIR}/database", layout.TRACKER_UID, layout.TRACKER_UID, "0750"),
        HostDirectory(layout.TRACKER_LOG_DIR, layout.TRACKER_UID, layout.TRACKER_UID, "0750"),
        HostDirectory(layout.GRAFANA_DATA_DIR, layout.GRAFANA_UID, 0, "0750"),
        HostDirectory(layout.PROMETHEUS_DATA_DIR, layout.PROMETHEUS_UID, layout.PROMETHEUS_UID, "0750"),
        HostDirectory(layout.BACKUP_DIR, 0, 0, "0700"),
    ]


DOCKER_DAEMON = {
    # Log rotation for every container; the containers also set it explicitly so that the
    # daemon default never shows up as a diff (kreuzwerker/terraform-provider-docker#473).
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "5"},
    # Publish ports on IPv6 too (needs Docker >= 27 for a non-experimental ip6tables).
    "ip6tables": True,
    "live-restore": True,
}

# Conntrack table size for UDP tracker load; the demo tracker ran 1M at ~3k req/s.
CONNTRACK_MAX = 1048576


def docker_daemon(settings: StackSettings) -> dict[str, object]:
    """daemon.json for the Docker the image ships (docker-ce) or the distribution's docker.io.

    Distribution docker.io below Docker 27 (Debian 12: 20.10.24) refuses to start with ip6tables
    unless experimental is on: moby daemon/daemon_unix.go verifyDaemonSettings,
    "ip6tables rules are only available if experimental features are enabled" (removed in 27.0).
    tests/test_real_docker_host.py starts the real dockerd 20.10.24 with both files.
    docs/decisions/0011-first-deploy-host.md.
    """
    daemon: dict[str, object] = dict(DOCKER_DAEMON)
    if settings.server.image != DOCKER_CE_IMAGE:
        daemon["experimental"] = True
    return daemon


# Hetzner's metadata service serves the user data, and so the SSH host private key, to anything
# on the server's network path without a token; containers reach it through FORWARD. The rule
# sits in DOCKER-USER, which dockerd jumps to first from FORWARD and never flushes; the script
# runs before dockerd starts (and again with every docker restart) and creates the chain itself.
METADATA_ADDRESS = "169.254.169.254"
METADATA_BLOCK_SCRIPT_PATH = "/usr/local/sbin/torrust-block-metadata"
METADATA_BLOCK_UNIT = "torrust-block-metadata.service"


def metadata_block_script() -> str:
    return render_template(
        "cloud-init/block-metadata.sh.j2",
        address=METADATA_ADDRESS,
    )


def metadata_block_unit() -> str:
    return render_template(
        "cloud-init/block-metadata.service.j2",
        script=METADATA_BLOCK_SCRIPT_PATH,
    )


# sshd's default MaxStartups 10:30:100 drops 30% of new connections once 10 are unauthenticated
# (openssh-portable servconf.c defaults, sshd.c should_drop_connection). The Docker provider opens
# one `ssh … docker system dial-stdio` per operation and runs a dozen at once (docker/cli
# cli/connhelper/connhelper.go); port 22 only admits ssh.allowedCidrs, so a higher limit costs
# nothing. docs/decisions/0011-first-deploy-host.md.
SSHD_MAX_STARTUPS = "100:30:200"


def render_cloud_init(
    settings: StackSettings, host_key_private: str, host_key_public: str, volume_id: str
) -> str:
    return render_template(
        "cloud-init/user-data.yaml.j2",
        stack=settings.stack,
        data_root=layout.DATA_ROOT,
        volume_device=f"{layout.VOLUME_DEVICE_PREFIX}{volume_id}",
        mount_unit=layout.DATA_MOUNT_UNIT,
        volume_wait_seconds=layout.VOLUME_WAIT_SECONDS,
        host_key_private=host_key_private.strip(),
        host_key_public=host_key_public.strip(),
        upgrade_packages=True,
        install_docker=settings.server.image != DOCKER_CE_IMAGE,
        docker_daemon_json=json.dumps(docker_daemon(settings), sort_keys=True),
        sshd_max_startups=SSHD_MAX_STARTUPS,
        metadata_block_script_path=METADATA_BLOCK_SCRIPT_PATH,
        metadata_block_script=metadata_block_script(),
        metadata_block_unit_name=METADATA_BLOCK_UNIT,
        metadata_block_unit=metadata_block_unit(),
        conntrack_max=CONNTRACK_MAX,
        directories=host_directories(),
    )
