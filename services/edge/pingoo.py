"""Pingoo on 443: TLS (TLS-ALPN-01 certificates) for the tracker API, the HTTP trackers and the
Grafana name, routed by host."""

from __future__ import annotations

import pulumi

from components.containers import (
    IPV4_ANY,
    ContainerSpec,
    PublishedPort,
    ServiceArgs,
    create_service_container,
)
from core import layout
from services.edge.render import render_pingoo


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
                # IPv4 only: Pingoo 0.14.7 parses the listener host with `authority.host().parse::<IpAddr>()`
                # (pingoo/config/config_file.rs, parse_listener_address), and http's Authority::host()
                # keeps the brackets of an IPv6 literal, so `https://[::]:443` is refused. Published on
                # `::` the port would DNAT IPv6 clients to a closed port (and fail TLS-ALPN-01 over
                # IPv6), so it is not published there and its names get no AAAA record (core/dns.py).
                published=[PublishedPort(layout.HTTPS_PORT, families=(IPV4_ANY,))],
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
