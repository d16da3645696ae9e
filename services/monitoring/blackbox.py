"""Blackbox exporter: probes every public endpoint by its public name, as a client would.

It sits on the non-internal `probes` network, so its probes leave through Docker's NAT to the
server's own public addresses and come back in through the published ports (hairpin NAT on the
host; docs/decisions/0010-alerts-from-inside.md). Prometheus reaches it on `monitoring`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.containers import ContainerSpec, ServiceArgs, create_service_container
from core import layout
from core.edgefacts import EdgeFacts
from services.monitoring.alerts import render_blackbox_config


@dataclass
class BlackboxArgs(ServiceArgs):
    edge: EdgeFacts


class BlackboxExporter(pulumi.ComponentResource):
    def __init__(self, name: str, args: BlackboxArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:BlackboxExporter", name, None, opts)
        settings = args.settings
        self.config_text = render_blackbox_config(settings, args.edge)
        self.container = create_service_container(
            ContainerSpec(
                name=layout.BLACKBOX,
                image=settings.images.blackbox_exporter,
                memory_mb=48,
                # Stateless exporter: a short grace period is enough to close its connections.
                stop_timeout=10,
                uploads={layout.BLACKBOX_CONFIG_FILE: self.config_text},
                command=[
                    f"--config.file={layout.BLACKBOX_CONFIG_FILE}",
                    f"--web.listen-address=:{layout.BLACKBOX_PORT}",
                ],
                healthcheck=[
                    "CMD",
                    "wget",
                    "-q",
                    "--spider",
                    f"http://127.0.0.1:{layout.BLACKBOX_PORT}/-/healthy",
                ],
                # The image has no USER (root); TCP/HTTP probes need no privilege (ICMP is unused).
                user=f"{layout.PROMETHEUS_UID}:{layout.PROMETHEUS_UID}",
            ),
            args.docker_host,
            self,
        )
        self.register_outputs({"container": self.container.name})
