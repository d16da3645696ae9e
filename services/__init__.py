"""The services on the server, one folder each (component, rendering, templates).

`create_services` builds every service container component. The entry point calls it, and so does
the real-engine tier (tests/engine): both deploy exactly this container layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi

from components.containers import ServiceArgs
from components.docker_host import DockerHost
from core.edgefacts import EdgeFacts
from core.settings import StackSettings
from services.edge import create_edge, edge_facts
from services.edge.nginx_certbot import NginxCertbot
from services.edge.pingoo import PingooEdge
from services.monitoring.alertmanager import Alertmanager, AlertmanagerArgs
from services.monitoring.blackbox import BlackboxArgs, BlackboxExporter
from services.monitoring.monitoring import Monitoring, MonitoringArgs
from services.monitoring.node_exporter import NodeExporter
from services.tracker.tracker import Tracker, TrackerArgs


@dataclass
class ServiceSecrets:
    tracker_admin_token: pulumi.Input[str]
    grafana_admin_password: pulumi.Input[str]
    # Alert receiver secrets that are set (config key -> secret Output).
    alert_receivers: Mapping[str, pulumi.Output[str]]


@dataclass
class Services:
    tracker: Tracker
    # None with the nginx edge (edge.kind nginx): Pingoo is not deployed.
    pingoo: PingooEdge | None
    nginx: NginxCertbot
    edge: EdgeFacts
    monitoring: Monitoring
    blackbox: BlackboxExporter
    node_exporter: NodeExporter
    alertmanager: Alertmanager


def create_services(
    settings: StackSettings,
    docker_host: DockerHost,
    secrets: ServiceSecrets,
    *,
    edge_after: Sequence[pulumi.Resource] = (),
) -> Services:
    """Every service container, on `docker_host`'s provider and networks.

    `edge_after`: what the public edges wait for besides the host (the DNS gate), so that their
    first ACME attempt meets correct DNS.
    """
    opts = pulumi.ResourceOptions(providers=[docker_host.provider])
    facts = edge_facts(settings)
    tracker = Tracker(
        "tracker",
        TrackerArgs(settings, docker_host, admin_token=secrets.tracker_admin_token),
        opts=opts,
    )
    edge = create_edge(settings, docker_host, opts, after=edge_after)
    return Services(
        tracker=tracker,
        pingoo=edge.pingoo,
        nginx=edge.nginx,
        edge=facts,
        monitoring=Monitoring(
            "monitoring",
            MonitoringArgs(
                settings,
                docker_host,
                admin_token=secrets.tracker_admin_token,
                grafana_admin_password=secrets.grafana_admin_password,
                edge=facts,
            ),
            opts=opts,
        ),
        blackbox=BlackboxExporter("blackbox", BlackboxArgs(settings, docker_host, edge=facts), opts=opts),
        node_exporter=NodeExporter("node-exporter", ServiceArgs(settings, docker_host), opts=opts),
        alertmanager=Alertmanager(
            "alertmanager",
            AlertmanagerArgs(settings, docker_host, receiver_secrets=secrets.alert_receivers),
            opts=opts,
        ),
    )
