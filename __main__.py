"""torrust-hybrid-tls: a Torrust tracker on one Hetzner Cloud server behind Pingoo (443) and
nginx+certbot (3443 for Grafana), with Prometheus and Grafana.

Wiring only: load the configuration (core/configuration.py), build the components, export what
the operator needs.
"""

from __future__ import annotations

import os

import pulumi

from components.dns import Dns, DnsArgs
from components.dns_gate import DnsGate, DnsGateArgs
from components.docker_host import DockerHost, DockerHostArgs, ssh_command
from components.host import Host, HostArgs
from components.secrets import Secrets, SecretsArgs
from core.configuration import load_configuration
from core.dns import records as dns_record_list
from core.dns import server_ipv6
from core.endpoints import backup_paths, endpoints
from core.settings import RESTIC_PASSWORD_KEY, ConfigError, configured_receivers
from services import ServiceSecrets, create_services
from services.backups.backups import Backups, BackupsArgs
from services.edge import edge_facts

try:
    configuration = load_configuration()
except ConfigError as error:
    # RunError prints the message without a Python traceback.
    raise pulumi.RunError(str(error)) from None
settings, secrets = configuration.settings, configuration.secrets
for warning in configuration.warnings:
    pulumi.log.warn(warning)

# What the chosen edge (edge.kind) means for DNS, the firewall, probes and outputs (services/edge/facts.py).
edge = edge_facts(settings)
operator_secrets = Secrets("secrets", SecretsArgs(configured=secrets))
host = Host("host", HostArgs(settings=settings, edge=edge))
docker_host = DockerHost(
    "docker",
    DockerHostArgs(
        settings=settings,
        ipv4_address=host.ipv4_address,
        host_public_key=host.host_public_key,
        server_id=host.server.id,
        server_ready_after=[host.volume_attachment],
        private_key=configuration.private_key,
    ),
)
backups = Backups(
    "backups",
    BackupsArgs(
        settings=settings,
        connection=docker_host.connection,
        ready=docker_host.readiness,
        restic_password=secrets.get(RESTIC_PASSWORD_KEY),
        credentials={env: secrets[key] for env, key in settings.backup.offsite.credentials.items()},
    ),
)

# DNS follows the Primary IPs, which exist before (and outlive) the server.
primary_ipv4 = host.primary_ips["ipv4"].ip_address
primary_ipv6 = host.primary_ips["ipv6"].ip_network.apply(lambda net: server_ipv6(net or ""))
dns = Dns(
    "dns",
    DnsArgs(
        settings=settings,
        primary_ip_ids={family: ip.id for family, ip in host.primary_ips.items()},
        ipv4=primary_ipv4,
        ipv6=primary_ipv6,
        edge=edge,
    ),
)
edge_after: list[pulumi.Resource] = []
if not settings.dns.skip_gate:
    dns_gate = DnsGate(
        "dns-gate",
        DnsGateArgs(
            settings=settings,
            connection=docker_host.connection,
            ready=docker_host.readiness,
            server_id=host.server.id,
            ipv4=primary_ipv4,
            ipv6=primary_ipv6,
            edge=edge,
        ),
    )
    edge_after.append(dns_gate.command)

services = create_services(
    settings,
    docker_host,
    ServiceSecrets(
        tracker_admin_token=operator_secrets.tracker_admin_token,
        grafana_admin_password=operator_secrets.grafana_admin_password,
        alert_receivers=configuration.alert_secrets,
    ),
    edge_after=edge_after,
)

pulumi.export("serverIpv4", host.ipv4_address)
pulumi.export("serverIpv6", host.ipv6_address)
pulumi.export("endpoints", host.ipv4_address.apply(lambda ipv4: endpoints(settings, edge, ipv4)))
pulumi.export("edge", edge.output())
pulumi.export(
    "dnsRecords",
    pulumi.Output.all(primary_ipv4, primary_ipv6).apply(
        lambda ips: [record.as_output() for record in dns_record_list(settings, edge, ips[0], ips[1])]
    ),
)
pulumi.export("dns", dns.summary(settings))
private_key_file = (
    os.path.expanduser(settings.ssh.private_key_file) if settings.ssh.private_key_file else None
)
pulumi.export(
    "sshCommand",
    pulumi.Output.all(host.ipv4_address, host.host_public_key).apply(
        lambda values: ssh_command(settings.ssh.user, values[0], values[1], private_key_file)
    ),
)
pulumi.export("hostKey", host.host_public_key.apply(str.strip))
pulumi.export("backupPaths", backup_paths())
pulumi.export("acmeStaging", settings.acme.staging)
pulumi.export("trackerAdminToken", operator_secrets.tracker_admin_token)
pulumi.export("grafanaAdminPassword", operator_secrets.grafana_admin_password)
pulumi.export("alertReceivers", configured_receivers(settings, configuration.alert_secrets))
if backups.offsite is not None:
    pulumi.export("offsite", backups.offsite.summary(settings))
    # Without it every off-site backup is lost: keep a copy outside of this stack.
    pulumi.export("offsiteResticPassword", backups.offsite.restic_password)
