"""The public TLS edge, one folder for every variant (`edge.kind`):

- `pingoo` (the default, the evaluation's hybrid): Pingoo on 443 for the tracker names, nginx+certbot
  for Grafana (3443) and port 80;
- `nginx`: nginx+certbot for every name on 443 and 80, IPv4 and IPv6; Pingoo is not deployed.

Components (pingoo.py, nginx_certbot.py), rendering (render.py), templates (templates/) and the facts
the rest of the deployment reads (facts.py: DNS, CAA, firewall, probes, endpoints) live here, so a
third edge touches this folder only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from components.containers import ServiceArgs
from components.docker_host import DockerHost
from core.edgefacts import EdgeFacts
from core.settings import StackSettings
from services.edge.facts import NGINX, edge_facts
from services.edge.nginx_certbot import NginxCertbot, NginxCertbotArgs
from services.edge.pingoo import PingooEdge

__all__ = ["Edge", "create_edge", "edge_facts"]


@dataclass
class Edge:
    facts: EdgeFacts
    nginx: NginxCertbot
    pingoo: PingooEdge | None


def create_edge(
    settings: StackSettings,
    docker_host: DockerHost,
    opts: pulumi.ResourceOptions,
    *,
    after: Sequence[pulumi.Resource] = (),
) -> Edge:
    """The edge's containers. `after`: what they wait for besides the host (the DNS gate)."""
    facts = edge_facts(settings)
    nginx_edge = settings.edge.kind == NGINX
    nginx = NginxCertbot(
        "nginx", NginxCertbotArgs(settings, docker_host, after=after, edge=nginx_edge), opts=opts
    )
    pingoo = None
    if not nginx_edge:
        # After nginx-certbot: switching back from the nginx edge replaces it (delete first), and
        # only then is 443 free for Pingoo.
        pingoo = PingooEdge(
            "pingoo", ServiceArgs(settings, docker_host, after=[*after, nginx.container]), opts=opts
        )
    return Edge(facts, nginx, pingoo)
