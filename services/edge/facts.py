"""The facts of each edge variant (core/edgefacts.py): what DNS, the firewall, the probes, the
endpoints output and the doctor must know about the edge. One function per variant; a third edge
adds one here, its component and its templates, all in this folder."""

from __future__ import annotations

from core import layout
from core.edgefacts import HTTP_01, TLS_ALPN_01, EdgeFacts, EdgePort, Redirect, TlsEndpoint
from core.settings import StackSettings

PINGOO = "pingoo"
NGINX = "nginx"
PORT80_PURPOSE = "port 80 (nginx): 308 to HTTPS"


def hybrid_facts(settings: StackSettings) -> EdgeFacts:
    """Pingoo on 443 (IPv4 only, TLS 1.3 only, TLS-ALPN-01) for every name, nginx+certbot on 80 and
    3443 (Grafana, HTTP-01); Pingoo forwards the Grafana name to nginx, which redirects to 3443."""
    domains = settings.domains
    grafana_url = f"https://{domains.grafana}:{layout.GRAFANA_TLS_PORT}/"
    on_443 = [
        TlsEndpoint(domains.tracker_api, layout.HTTPS_PORT, TLS_ALPN_01, "tracker API (Pingoo)"),
        *(
            TlsEndpoint(host, layout.HTTPS_PORT, TLS_ALPN_01, f"HTTP tracker {i + 1} (Pingoo)")
            for i, host in enumerate(domains.http_trackers)
        ),
        TlsEndpoint(
            domains.grafana, layout.HTTPS_PORT, TLS_ALPN_01, "Grafana name: redirect to 3443 (Pingoo)"
        ),
    ]
    return EdgeFacts(
        kind=PINGOO,
        ports=(
            EdgePort(layout.HTTP_PORT, True, "nginx: ACME HTTP-01 and redirects"),
            # Pingoo 0.14.7 listens on IPv4 only (services/edge/pingoo.py).
            EdgePort(layout.HTTPS_PORT, False, "Pingoo: tracker API and HTTP trackers"),
            EdgePort(layout.GRAFANA_TLS_PORT, True, "nginx: Grafana"),
        ),
        tls=(
            *on_443,
            TlsEndpoint(domains.grafana, layout.GRAFANA_TLS_PORT, HTTP_01, "Grafana (nginx+certbot)"),
        ),
        ipv6=False,
        grafana_url=grafana_url,
        redirects=(
            Redirect(
                f"https://{domains.grafana}/",
                grafana_url,
                True,
                "the Grafana name on 443: Pingoo -> nginx -> 308 to :3443",
            ),
            Redirect(f"http://{domains.grafana}/", grafana_url, False, "port 80 (nginx): 308 to HTTPS"),
        ),
        tls_versions=("TLSv1.3",),
        http2=True,
        proxy="Pingoo",
        containers=(layout.PINGOO, layout.NGINX),
        renewal="Pingoo renews below 30 days, certbot at 30 days or 1/3 of the lifetime",
        notes=(
            "Pingoo 0.14.7 completes TLS handshakes one at a time without a timeout: one idle "
            "connection stalls every new client on 443 (docs/decisions/0001-hybrid-tls-edge.md); "
            "the nginx edge does not (edge.kind nginx).",
        ),
    )


def nginx_facts(settings: StackSettings) -> EdgeFacts:
    """nginx+certbot on 80 and 443 for every name, IPv4 and IPv6, certificates over HTTP-01."""
    domains = settings.domains
    grafana_url = f"https://{domains.grafana}/"
    return EdgeFacts(
        kind=NGINX,
        ports=(
            EdgePort(layout.HTTP_PORT, True, "nginx: ACME HTTP-01 and redirects"),
            EdgePort(layout.HTTPS_PORT, True, "nginx: tracker API, HTTP trackers and Grafana"),
        ),
        tls=(
            TlsEndpoint(domains.tracker_api, layout.HTTPS_PORT, HTTP_01, "tracker API (nginx)"),
            *(
                TlsEndpoint(host, layout.HTTPS_PORT, HTTP_01, f"HTTP tracker {i + 1} (nginx)")
                for i, host in enumerate(domains.http_trackers)
            ),
            TlsEndpoint(domains.grafana, layout.HTTPS_PORT, HTTP_01, "Grafana (nginx)"),
        ),
        ipv6=True,
        grafana_url=grafana_url,
        redirects=(
            Redirect(f"http://{domains.grafana}/", grafana_url, False, "port 80 (nginx): 308 to HTTPS"),
        ),
        tls_versions=("TLSv1.2", "TLSv1.3"),
        http2=True,
        proxy="nginx",
        containers=(layout.NGINX,),
        renewal="certbot renews at 30 days or 1/3 of the lifetime left",
        notes=(f"port {layout.GRAFANA_TLS_PORT} is closed: Grafana is at {grafana_url}",),
    )


def edge_facts(settings: StackSettings) -> EdgeFacts:
    return nginx_facts(settings) if settings.edge.kind == NGINX else hybrid_facts(settings)
