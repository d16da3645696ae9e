"""The edge's files (pure): pingoo.yml for Pingoo on 443, and nginx's redirector (80, the internal
redirect listener) and Grafana (3443) server blocks. Templates: services/edge/templates/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core import layout
from core.rendering import Templates, image_version
from core.settings import StackSettings

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
