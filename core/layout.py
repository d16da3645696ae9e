"""Fixed facts of the deployment: ports, container names, host paths and internal addresses.

Everything here is deliberately not configurable: these values are wired into several templates and
resources at once, and the tests assert them. Change them here, never in a template.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- Public ports (the whole attack surface besides the UDP tracker ports) --------------------
SSH_PORT = 22
HTTP_PORT = 80  # nginx: ACME HTTP-01 webroot for the Grafana name + redirects
HTTPS_PORT = 443  # Pingoo: tracker API, HTTP trackers, Grafana name redirect
GRAFANA_TLS_PORT = 3443  # nginx: Grafana with WebSockets (Pingoo strips Upgrade)

# --- Tracker ports inside its container (never published except UDP) -------------------------
TRACKER_API_PORT = 1212
TRACKER_HTTP_BASE_PORT = 7070  # HTTP tracker i listens on 7070 + i
TRACKER_HEALTH_PORT = 1313  # bound to 127.0.0.1 inside the container only
GRAFANA_PORT = 3000
PROMETHEUS_PORT = 9090
BLACKBOX_PORT = 9115
NODE_EXPORTER_PORT = 9100
ALERTMANAGER_PORT = 9093
JSON_EXPORTER_PORT = 7979  # json_exporter's default --web.listen-address
# nginx listener (not published) that Pingoo forwards the Grafana name to; it redirects to :3443.
NGINX_REDIRECT_PORT = 8080

# --- Container names (fixed, so every one of them uses delete_before_replace) ----------------
PINGOO = "pingoo"
NGINX = "nginx-certbot"
TRACKER = "tracker"
PROMETHEUS = "prometheus"
GRAFANA = "grafana"
BLACKBOX = "blackbox-exporter"
NODE_EXPORTER = "node-exporter"
ALERTMANAGER = "alertmanager"
JSON_EXPORTER = "json-exporter"

# --- Host paths ------------------------------------------------------------------------------
# All state lives below DATA_ROOT, the mount point of the Hetzner Volume, so replacing the server
# loses nothing. Hetzner exposes a volume as /dev/disk/by-id/scsi-0HC_Volume_<volume id>.
DATA_ROOT = "/srv/torrust"
VOLUME_DEVICE_PREFIX = "/dev/disk/by-id/scsi-0HC_Volume_"
DATA_MOUNT_UNIT = "srv-torrust.mount"  # systemd's name for the mount unit of /srv/torrust
VOLUME_WAIT_SECONDS = 300
PINGOO_TLS_DIR = f"{DATA_ROOT}/pingoo/tls"
LETSENCRYPT_DIR = f"{DATA_ROOT}/letsencrypt"
TRACKER_LIB_DIR = f"{DATA_ROOT}/tracker/lib"
TRACKER_LOG_DIR = f"{DATA_ROOT}/tracker/log"
TRACKER_DATABASE_FILE = f"{TRACKER_LIB_DIR}/database/sqlite3.db"
GRAFANA_DATA_DIR = f"{DATA_ROOT}/grafana"
PROMETHEUS_DATA_DIR = f"{DATA_ROOT}/prometheus"
BACKUP_DIR = f"{DATA_ROOT}/backups"
# The backup job's systemd units (services/backups); the volume release stops them before unmounting.
BACKUP_SERVICE_NAME = "torrust-backup.service"
BACKUP_TIMER_NAME = "torrust-backup.timer"
# The node exporter's textfile collector reads *.prom files here (the backup job writes its
# metrics here, e.g. torrust_backup_last_success_timestamp_seconds; see templates/prometheus/rules).
NODE_TEXTFILE_DIR = "/var/lib/node_exporter/textfile_collector"

# Owners the images run as (uid:gid). Grafana's image runs as 472; the tracker entry script
# creates user `torrust` with USER_ID; Prometheus runs as nobody.
TRACKER_UID = 1000
GRAFANA_UID = 472
PROMETHEUS_UID = 65534

# --- Paths inside containers ------------------------------------------------------------------
PINGOO_CONFIG_FILE = "/etc/pingoo/pingoo.yml"
PINGOO_TLS_MOUNT = "/etc/pingoo/tls"
NGINX_REDIRECTOR_FILE = "/etc/nginx/conf.d/redirector.conf"  # replaces the image's own port-80 server
NGINX_GRAFANA_FILE = "/etc/nginx/user_conf.d/grafana.conf"
NGINX_WEBROOT = "/var/www/letsencrypt"  # certbot's webroot in jonasal/nginx-certbot
# The nginx edge (edge.kind nginx) replaces the image's main config too (worker and connection
# limits, the shared TLS and rate-limit settings) and adds one server file per name in user_conf.d/,
# each with its own certificate (jonasal/nginx-certbot: one certificate per `live/<name>/` path).
NGINX_MAIN_FILE = "/etc/nginx/nginx.conf"
NGINX_DEFAULT_TLS_FILE = "/etc/nginx/conf.d/default-tls.conf"
NGINX_USER_CONF_DIR = "/etc/nginx/user_conf.d"
TRACKER_API_CERT_NAME = "tracker-api"
HTTP_TRACKER_CERT_PREFIX = "http-tracker-"  # + 1, 2, ... in domains.httpTrackers order
# jonasal/nginx-certbot derives the certificate name from this path (live/<name>/privkey.pem).
GRAFANA_CERT_NAME = "grafana"
TRACKER_CONFIG_FILE = "/etc/torrust/tracker/tracker.toml"
TRACKER_LIB_MOUNT = "/var/lib/torrust/tracker"
TRACKER_LOG_MOUNT = "/var/log/torrust/tracker"
TRACKER_DATABASE_PATH = f"{TRACKER_LIB_MOUNT}/database/sqlite3.db"
PROMETHEUS_CONFIG_FILE = "/etc/prometheus/prometheus.yml"
# rule_files in prometheus.yml name "rules/*.yml", relative to the config file's directory.
PROMETHEUS_RULES_DIR = "/etc/prometheus/rules"
BLACKBOX_CONFIG_FILE = "/etc/blackbox_exporter/config.yml"
ALERTMANAGER_CONFIG_FILE = "/etc/alertmanager/alertmanager.yml"
# The node exporter sees the host's root file system here (read-only, --path.rootfs).
NODE_EXPORTER_ROOTFS = "/host"
JSON_EXPORTER_CONFIG_FILE = "/etc/json_exporter/config.yml"
GRAFANA_DATASOURCE_FILE = "/etc/grafana/provisioning/datasources/prometheus.yaml"
GRAFANA_DASHBOARD_PROVIDER_FILE = "/etc/grafana/provisioning/dashboards/torrust.yaml"
GRAFANA_DASHBOARDS_DIR = "/etc/grafana/dashboards/torrust"
GRAFANA_DATASOURCE_UID = "prometheus"

# --- Docker networks --------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkSpec:
    key: str
    internal: bool
    ipv6: bool
    subnet: str
    subnet6: str | None
    purpose: str


# `edge` carries published ports and ACME egress for Pingoo and nginx; `udp` carries the tracker's
# published UDP ports (IPv6 enabled: Docker needs an IPv6 network for native IPv6 UDP, see the
# tracker demo's 2026-03-09 post-mortem). The backend networks are internal: no egress, and only the
# containers that must talk share one.
NETWORKS: tuple[NetworkSpec, ...] = (
    NetworkSpec(
        "edge", False, True, "172.30.0.0/24", "fd00:7472:6b00::/64", "Pingoo + nginx: public ports, ACME"
    ),
    NetworkSpec("udp", False, True, "172.30.1.0/24", "fd00:7472:6b01::/64", "tracker: public UDP ports"),
    NetworkSpec("tracker-backend", True, False, "172.30.2.0/24", None, "Pingoo -> tracker API/HTTP"),
    NetworkSpec("grafana-backend", True, False, "172.30.3.0/24", None, "nginx -> Grafana"),
    NetworkSpec("metrics", True, False, "172.30.4.0/24", None, "Prometheus -> json-exporter -> tracker API"),
    NetworkSpec("dashboards", True, False, "172.30.5.0/24", None, "Grafana -> Prometheus"),
    NetworkSpec("monitoring", True, False, "172.30.6.0/24", None, "Prometheus -> exporters and Alertmanager"),
    # Not internal: the blackbox exporter probes the server's public names from outside the edge
    # (through the host's hairpin NAT, docs/decisions/0010-alerts-from-inside.md).
    NetworkSpec("probes", False, False, "172.30.7.0/24", None, "blackbox exporter -> public endpoints"),
    # Not internal: Alertmanager sends to SMTP servers and webhooks on the internet.
    NetworkSpec("notify", False, False, "172.30.8.0/24", None, "Alertmanager -> SMTP, webhooks"),
)

# Static addresses for the upstreams the edge proxies dial. Pingoo re-resolves DNS names only after
# its cache expires (Docker answers with TTL 600, research/pingoo.md §4.8) and nginx resolves a
# literal proxy_pass once at start, so a re-created backend with a new IP would get 502s. Fixed
# addresses survive re-creation.
TRACKER_BACKEND_IP = "172.30.2.10"
PINGOO_BACKEND_IP = "172.30.2.11"
NGINX_EDGE_IP = "172.30.0.20"
PINGOO_EDGE_IP = "172.30.0.21"
GRAFANA_BACKEND_IP = "172.30.3.10"
NGINX_BACKEND_IP = "172.30.3.11"
# The nginx edge's address on tracker-backend (not Pingoo's: a switch stops Pingoo before nginx
# starts, but Pingoo's container, and its address, go only at the end of that `pulumi up`).
NGINX_TRACKER_BACKEND_IP = "172.30.2.12"

# Which container joins which network (and with which fixed address, if any).
MEMBERSHIP: dict[str, tuple[tuple[str, str | None], ...]] = {
    PINGOO: (("edge", PINGOO_EDGE_IP), ("tracker-backend", PINGOO_BACKEND_IP)),
    NGINX: (("edge", NGINX_EDGE_IP), ("grafana-backend", NGINX_BACKEND_IP)),
    TRACKER: (("udp", None), ("tracker-backend", TRACKER_BACKEND_IP), ("metrics", None)),
    PROMETHEUS: (("metrics", None), ("dashboards", None), ("monitoring", None)),
    GRAFANA: (("grafana-backend", GRAFANA_BACKEND_IP), ("dashboards", None)),
    BLACKBOX: (("monitoring", None), ("probes", None)),
    NODE_EXPORTER: (("monitoring", None),),
    ALERTMANAGER: (("monitoring", None), ("notify", None)),
    JSON_EXPORTER: (("metrics", None),),
}

# nginx+certbot as the only edge (edge.kind nginx) also proxies to the tracker.
NGINX_EDGE_MEMBERSHIP: tuple[tuple[str, str | None], ...] = (
    *MEMBERSHIP[NGINX],
    ("tracker-backend", NGINX_TRACKER_BACKEND_IP),
)

LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


def http_tracker_port(index: int) -> int:
    return TRACKER_HTTP_BASE_PORT + index
