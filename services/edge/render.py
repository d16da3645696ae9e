"""The edge's files (pure): pingoo.yml for Pingoo on 443, and nginx's redirector (80, the internal
redirect listener) and Grafana (3443) server blocks. Templates: services/edge/templates/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core import layout
from core.rendering import Templates, image_version
from core.settings import NginxEdgeSettings, StackSettings

TEMPLATES = Templates(Path(__file__).resolve().parent / "templates")


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


def render_pingoo(settings: StackSettings) -> str:
    return TEMPLATES.render(
        "pingoo/pingoo.yml.j2",
        stack=settings.stack,
        pingoo_version=image_version(settings.images.pingoo),
        https_port=layout.HTTPS_PORT,
        directory_url=acme_directory(settings),
        services=pingoo_services(settings),
    )


def render_nginx_redirector(settings: StackSettings) -> str:
    return TEMPLATES.render(
        "nginx/redirector.conf.j2",
        stack=settings.stack,
        http_port=layout.HTTP_PORT,
        webroot=layout.NGINX_WEBROOT,
        grafana_host=settings.domains.grafana,
        grafana_tls_port=layout.GRAFANA_TLS_PORT,
        redirect_port=layout.NGINX_REDIRECT_PORT,
    )


def render_nginx_grafana(settings: StackSettings) -> str:
    return TEMPLATES.render(
        "nginx/grafana.conf.j2",
        stack=settings.stack,
        grafana_host=settings.domains.grafana,
        grafana_tls_port=layout.GRAFANA_TLS_PORT,
        grafana_upstream=f"{layout.GRAFANA_BACKEND_IP}:{layout.GRAFANA_PORT}",
        cert_dir=f"/etc/letsencrypt/live/{layout.GRAFANA_CERT_NAME}",
    )


# --- The nginx edge (edge.kind nginx): nginx+certbot serves every name on 443 --------------------

# Budget of the nginx edge container (services/edge/nginx_certbot.py): see nginx.conf.j2.
NGINX_EDGE_WORKERS = 2
NGINX_EDGE_WORKER_CONNECTIONS = 4096
NGINX_EDGE_NOFILE = 65536
NGINX_EDGE_MEMORY_MB = 512
# Seconds (nginx.conf.j2 says why each one).
NGINX_EDGE_TIMEOUTS = {"header": 10, "body": 10, "send": 10, "keepalive": 15}
# A bencoded dictionary with a BEP 3 "failure reason", for a throttled announce.
THROTTLED_REASON = "too many requests from your address; announce less often"


def bencoded_failure(reason: str) -> str:
    return f"d14:failure reason{len(reason.encode())}:{reason}e"


@dataclass(frozen=True)
class NginxSite:
    """One name on the nginx edge: its server file, certificate and backend."""

    kind: str  # tracker_api | http_tracker | grafana
    host: str
    cert_name: str
    upstream_name: str
    upstream: str
    keepalive: int
    rate_limited: bool
    comment: str

    @property
    def file(self) -> str:
        return f"{layout.NGINX_USER_CONF_DIR}/{self.cert_name}.conf"


def nginx_sites(settings: StackSettings) -> list[NginxSite]:
    """Every name the nginx edge serves, in routing order (API, HTTP trackers, Grafana)."""
    domains = settings.domains
    sites = [
        NginxSite(
            "tracker_api",
            domains.tracker_api,
            layout.TRACKER_API_CERT_NAME,
            "tracker_api",
            f"{layout.TRACKER_BACKEND_IP}:{layout.TRACKER_API_PORT}",
            16,
            True,
            "the tracker REST API",
        )
    ]
    for index, host in enumerate(domains.http_trackers):
        sites.append(
            NginxSite(
                "http_tracker",
                host,
                f"{layout.HTTP_TRACKER_CERT_PREFIX}{index + 1}",
                f"http_tracker_{index + 1}",
                f"{layout.TRACKER_BACKEND_IP}:{layout.http_tracker_port(index)}",
                32,
                True,
                f"HTTP tracker {index + 1}",
            )
        )
    # Grafana loads dozens of assets and queries at once: a connection limit, no request rate.
    sites.append(
        NginxSite(
            "grafana",
            domains.grafana,
            layout.GRAFANA_CERT_NAME,
            "grafana",
            f"{layout.GRAFANA_BACKEND_IP}:{layout.GRAFANA_PORT}",
            16,
            False,
            "Grafana (with Grafana Live's WebSocket)",
        )
    )
    return sites


def _limits(settings: StackSettings) -> NginxEdgeSettings:
    return settings.edge.nginx


def render_nginx_edge_main(settings: StackSettings) -> str:
    return TEMPLATES.render(
        "nginx-edge/nginx.conf.j2",
        stack=settings.stack,
        workers=NGINX_EDGE_WORKERS,
        worker_connections=NGINX_EDGE_WORKER_CONNECTIONS,
        nofile=NGINX_EDGE_NOFILE,
        memory_mb=NGINX_EDGE_MEMORY_MB,
        timeouts=NGINX_EDGE_TIMEOUTS,
        announce_interval=settings.tracker.announce_interval,
        limits=_limits(settings),
    )


def render_nginx_edge_default_tls(settings: StackSettings) -> str:
    return TEMPLATES.render(
        "nginx-edge/default-tls.conf.j2", stack=settings.stack, https_port=layout.HTTPS_PORT
    )


def render_nginx_edge_redirector(settings: StackSettings) -> str:
    return TEMPLATES.render(
        "nginx-edge/redirector.conf.j2",
        stack=settings.stack,
        http_port=layout.HTTP_PORT,
        webroot=layout.NGINX_WEBROOT,
        names=[site.host for site in nginx_sites(settings)],
        health_port=layout.NGINX_REDIRECT_PORT,
        limits=_limits(settings),
    )


def render_nginx_edge_site(settings: StackSettings, site: NginxSite) -> str:
    return TEMPLATES.render(
        "nginx-edge/site.conf.j2",
        stack=settings.stack,
        site=site,
        https_port=layout.HTTPS_PORT,
        cert_dir="/etc/letsencrypt/live",
        limits=_limits(settings),
        throttled_reply=bencoded_failure(THROTTLED_REASON),
    )


def nginx_edge_files(settings: StackSettings) -> dict[str, str]:
    """Container path -> content of every file the nginx edge uploads."""
    files = {
        layout.NGINX_MAIN_FILE: render_nginx_edge_main(settings),
        layout.NGINX_REDIRECTOR_FILE: render_nginx_edge_redirector(settings),
        layout.NGINX_DEFAULT_TLS_FILE: render_nginx_edge_default_tls(settings),
    }
    for site in nginx_sites(settings):
        files[site.file] = render_nginx_edge_site(settings, site)
    return files
