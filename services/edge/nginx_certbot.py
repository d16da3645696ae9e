"""nginx+certbot (jonasal/nginx-certbot), in the variant the edge setting picks:

- the pingoo edge (hybrid): Grafana on 3443 with WebSockets, ACME HTTP-01 and redirects on 80, and
  the internal redirect listener Pingoo forwards the Grafana name to;
- the nginx edge: every name on 443 (IPv4 and IPv6) and 80, one HTTP-01 certificate per name.

Both variants are the same resource (component `nginx`, container `nginx-certbot`), so a switch of
`edge.kind` replaces the container (delete before create: the host ports stay free for the new one)
and keeps certbot's state on the data volume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components.containers import ContainerSpec, PublishedPort, ServiceArgs, create_service_container
from core import layout
from core.settings import StackSettings
from services.edge.render import (
    NGINX_EDGE_MEMORY_MB,
    NGINX_EDGE_NOFILE,
    nginx_edge_files,
    render_nginx_grafana,
    render_nginx_redirector,
)

HEALTH_URL = f"http://127.0.0.1:{layout.NGINX_REDIRECT_PORT}/.well-known/torrust-edge-health"

# Before the nginx edge binds 443, Pingoo (of the hybrid this stack ran before) must let go of it:
# Pulumi deletes resources that left the program only at the end of a deployment, after every
# create, so the new nginx-certbot would find 443 still published by Pingoo and fail to start. A
# stopped container releases its published ports; Pulumi removes it at the end as usual, and with
# `unless-stopped` Docker does not start it again. A no-op when there is no Pingoo container.
HANDOVER_SCRIPT = (
    f"if docker container inspect {layout.PINGOO} >/dev/null 2>&1; then "
    f"docker stop --time 25 {layout.PINGOO} >/dev/null && echo 'stopped {layout.PINGOO}: 443 is free'; "
    f"else echo 'no {layout.PINGOO} container: nothing to hand over'; fi"
)


def certbot_env(settings: StackSettings) -> list[str]:
    return [
        f"CERTBOT_EMAIL={settings.acme.email}",
        f"STAGING={1 if settings.acme.staging else 0}",
        "USE_ECDSA=1",
        # certbot renew is a no-op until a certificate is due; checking daily keeps up with
        # shorter Let's Encrypt lifetimes.
        "RENEWAL_INTERVAL=1d",
    ]


@dataclass(frozen=True)
class NginxVariant:
    """What differs between the two uses of the container."""

    files: Mapping[str, str]
    published: Sequence[PublishedPort]
    memory_mb: int
    networks: Sequence[tuple[str, str | None]] | None


def hybrid_variant(settings: StackSettings) -> NginxVariant:
    return NginxVariant(
        files={
            layout.NGINX_REDIRECTOR_FILE: render_nginx_redirector(settings),
            layout.NGINX_GRAFANA_FILE: render_nginx_grafana(settings),
        },
        published=[PublishedPort(layout.HTTP_PORT), PublishedPort(layout.GRAFANA_TLS_PORT)],
        memory_mb=256,
        networks=None,
    )


def nginx_edge_variant(settings: StackSettings) -> NginxVariant:
    return NginxVariant(
        files=nginx_edge_files(settings),
        # Every listener is on [::] too (services/edge/templates/nginx-edge/), so both families.
        published=[PublishedPort(layout.HTTP_PORT), PublishedPort(layout.HTTPS_PORT)],
        # The connection budget of nginx.conf.j2 (half-open TLS handshakes) plus certbot's runs.
        memory_mb=NGINX_EDGE_MEMORY_MB,
        networks=layout.NGINX_EDGE_MEMBERSHIP,
    )


@dataclass
class NginxCertbotArgs(ServiceArgs):
    # The nginx edge (edge.kind nginx) instead of the hybrid's Grafana-only nginx.
    edge: bool = False


class NginxCertbot(pulumi.ComponentResource):
    def __init__(self, name: str, args: NginxCertbotArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:NginxCertbot", name, None, opts)
        settings = args.settings
        variant = nginx_edge_variant(settings) if args.edge else hybrid_variant(settings)
        self.files = dict(variant.files)
        after = list(args.after)
        self.handover: command.remote.Command | None = None
        # The engine tier (tests/engine) builds the host without remote commands: no handover there.
        if args.edge and args.docker_host.ready is not None:
            self.handover = command.remote.Command(
                f"{name}-handover",
                connection=args.docker_host.connection,
                create=HANDOVER_SCRIPT,
                # sshd does not accept PULUMI_COMMAND_STDOUT (AcceptEnv): off, as on every Command.
                add_previous_output_in_env=False,
                # Again on a replaced server (a no-op there: it starts without containers).
                triggers=[args.docker_host.server_id],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.docker_host.after, *after]),
            )
            after.append(self.handover)
        self.container = create_service_container(
            ContainerSpec(
                name=layout.NGINX,
                image=settings.images.nginx_certbot,
                memory_mb=variant.memory_mb,
                # A margin over Docker's default 10 s for nginx and a certbot run to finish.
                stop_timeout=15,
                env=certbot_env(settings),
                uploads=self.files,
                volumes={layout.LETSENCRYPT_DIR: "/etc/letsencrypt"},
                # nginx's master chowns its temp dirs and switches workers to uid 101 (and signals
                # them); certbot as root writes the challenge into the www-data owned webroot.
                capabilities=["CHOWN", "DAC_OVERRIDE", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"],
                nofile=NGINX_EDGE_NOFILE,
                published=variant.published,
                networks=variant.networks,
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
            after=after,
        )
        self.register_outputs({"container": self.container.name})
