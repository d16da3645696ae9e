"""Pingoo on 443: TLS (TLS-ALPN-01 certificates) for the tracker API, the HTTP trackers and the
Grafana name, routed by host."""

from __future__ import annotations

import pulumi

from components.containers import ContainerSpec, PublishedPort, ServiceArgs, create_service_container
from core import layout
from core.rendering import render_pingoo


class PingooEdge(pulumi.ComponentResource):
    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:PingooEdge", name, None, opts)
        settings = args.settings
        self.config_text = render_pingoo(settings)
        self.container = create_service_container(
            ContainerSpec(
                name=layout.PINGOO,
                image=settings.images.pingoo,
                memory_mb=256,
                env=["PINGOO_LOG=info"],
                uploads={layout.PINGOO_CONFIG_FILE: self.config_text},
                # acme.json (ACME account), <domain>.pem/.key: keep across container re-creation,
                # or every replacement orders new certificates (Let's Encrypt rate limits).
                volumes={layout.PINGOO_TLS_DIR: layout.PINGOO_TLS_MOUNT},
                published=[PublishedPort(layout.HTTPS_PORT)],
                # The image is FROM scratch: no shell, no client, so no health check is possible.
                healthcheck=None,
                # Root in the container writing only root-owned paths; Docker lets any process bind
                # ports < 1024 in its own network namespace, NET_BIND_SERVICE is a safeguard.
                capabilities=["NET_BIND_SERVICE"],
                nofile=65536,
                # Pingoo drains connections for up to 20 s on SIGTERM.
                stop_timeout=25,
            ),
            args.docker_host,
            self,
            after=args.after,
        )
        self.register_outputs({"container": self.container.name})
