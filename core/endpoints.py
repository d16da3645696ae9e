"""What the operator needs to know after `pulumi up`: URLs, DNS records, backup paths (pure)."""

from __future__ import annotations

from typing import Any

from core import layout
from core.edgefacts import EdgeFacts
from core.settings import StackSettings


def endpoints(settings: StackSettings, edge: EdgeFacts, ipv4: str) -> dict[str, Any]:
    domains = settings.domains
    udp_host = domains.udp_tracker or ipv4
    http_path = "/announce" + ("/<key>" if settings.tracker.private else "")
    return {
        "trackerApi": {
            "base": f"https://{domains.tracker_api}/api/v1",
            "healthCheck": f"https://{domains.tracker_api}/api/health_check",
            "stats": f"https://{domains.tracker_api}/api/v1/stats?token=<trackerAdminToken>",
        },
        "httpTrackers": [f"https://{host}{http_path}" for host in domains.http_trackers],
        "httpTrackerHealthChecks": [f"https://{host}/health_check" for host in domains.http_trackers],
        "udpTrackers": [f"udp://{udp_host}:{port}/announce" for port in settings.tracker.udp_ports],
        "grafana": edge.grafana_url,
    }


def backup_paths() -> list[dict[str, str]]:
    """Host paths holding state that a replacement server must get back."""
    return [
        {"path": f"{layout.PINGOO_TLS_DIR}/acme.json", "what": "Pingoo ACME account key (per directory URL)"},
        {"path": f"{layout.PINGOO_TLS_DIR}/*.pem", "what": "Pingoo certificate chains"},
        {"path": f"{layout.PINGOO_TLS_DIR}/*.key", "what": "Pingoo certificate private keys"},
        {
            "path": f"container:{layout.PINGOO}:{layout.PINGOO_CONFIG_FILE}",
            "what": "Pingoo config (re-rendered by Pulumi)",
        },
        {"path": layout.LETSENCRYPT_DIR, "what": "certbot accounts, certificates and renewal config"},
        {"path": layout.TRACKER_DATABASE_FILE, "what": "tracker SQLite database (copy with sqlite3 .backup)"},
        {"path": layout.GRAFANA_DATA_DIR, "what": "Grafana database (users, preferences)"},
        {"path": layout.PROMETHEUS_DATA_DIR, "what": "Prometheus TSDB (metrics history)"},
        {"path": layout.BACKUP_DIR, "what": "nightly backups of all of the above: copy them off the server"},
    ]
