"""nginx+certbot (jonasal/nginx-certbot): Grafana on 3443 with WebSockets, ACME HTTP-01 and
redirects on 80, and the internal redirect listener Pingoo forwards the Grafana name to."""

from __future__ import annotations

import pulumi

from components.containers import ContainerSpec, PublishedPort, ServiceArgs, create_service_container
from core import layout
from core.settings import StackSettings
from services.edge.render import render_nginx_grafana, render_nginx_redirector

HEALTH_URL = f"http://127.0.0.1:{layout.NGINX_REDIRECT_PORT}/.well-known/torrust-edge-health"


def certbot_env(settings: StackSettings) -> list[str]:
    return [
        f"CERTBOT_EMAIL={settings.acme.email}",
        f"STAGING={1 if settings.acme.staging else 0}",
        "USE_ECDSA=1",
        # certbot renew is a no-op until a certificate is due; checking daily keeps up with
        # shorter Let's Encrypt lifetimes.
        "RENEWAL_INTERVAL=1d",
    ]


class NginxCertbot(pulumi.ComponentResource):
    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:NginxCertbot", name, None, opts)
        settings = args.settings
        self.files = {
            layout.NGINX_REDIRECTOR_FILE: render_nginx_redirector(settings),
            layout.NGINX_GRAFANA_FILE: render_nginx_grafana(settings),
        }
        self.container = create_service_container(
            ContainerSpec(
                name=layout.NGINX,
                image=settings.images.nginx_certbot,
                memory_mb=256,
                # A margin over Docker's default 10 s for nginx and a certbot run to finish.
                stop_timeout=15,
                env=certbot_env(settings),
                uploads=self.files,
                volumes={layout.LETSENCRYPT_DIR: "/etc/letsencrypt"},
                # nginx's master chowns its temp dirs and switches workers to uid 101 (and signals
                # them); certbot as root writes the challenge into the www-data owned webroot.
                capabilities=["CHOWN", "DAC_OVERRIDE", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"],
                nofile=65536,
                published=[PublishedPort(layout.HTTP_PORT), PublishedPort(layout.GRAFANA_TLS_PORT)],
                # curl is removed from the image; python3 stays for certbot.
                healthcheck=[
                    "CMD",
                    "python3",
                    "-c",
                    f"import urllib.request; urllib.request.urlopen('{HEALTH_URL}', timeout=4)",
                ],
            ),
            args.docker_host,
            self,
            after=args.after,
        )
        self.register_outputs({"container": self.container.name})
