"""The Hetzner Cloud server: SSH keys, firewall, generated host key, cloud-init, the server itself."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
import pulumi_tls as tls

from core import layout
from core.edgefacts import EdgeFacts
from core.rendering import render_cloud_init
from core.settings import StackSettings

ANY_IPV4 = "0.0.0.0/0"
ANY_IPV6 = "::/0"


@dataclass(frozen=True)
class FirewallRule:
    protocol: str
    port: str
    sources: tuple[str, ...]
    description: str


def firewall_rules(settings: StackSettings, edge: EdgeFacts) -> list[FirewallRule]:
    """The complete public surface, per address family exactly as published; nothing else is reachable."""
    everyone = (ANY_IPV4, ANY_IPV6)
    rules = [
        FirewallRule(
            "tcp", str(layout.SSH_PORT), tuple(settings.ssh.allowed_cidrs), "SSH from operator CIDRs"
        ),
    ]
    # The edge's ports, on the families its listeners answer (services/edge/facts.py): Pingoo's 443
    # is IPv4 only.
    rules += [
        FirewallRule("tcp", str(port.port), everyone if port.ipv6 else (ANY_IPV4,), port.purpose)
        for port in edge.ports
    ]
    rules += [
        FirewallRule("udp", str(port), everyone, f"UDP tracker {port}") for port in settings.tracker.udp_ports
    ]
    return rules


@dataclass
class HostArgs:
    settings: StackSettings
    edge: EdgeFacts  # the edge's public ports and their families (services/edge/facts.py)


class Host(pulumi.ComponentResource):
    """One server, plus what must outlive it: primary IPs (DNS stays valid) and the data volume.

    The server is replaceable (image, location, user data, SSH keys force a replacement); the IPs
    and the volume are protected and re-attached to the new server.
    """

    ipv4_address: pulumi.Output[str]
    ipv6_address: pulumi.Output[str]
    host_public_key: pulumi.Output[str]

    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:Host", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app": "torrust-tracker", "stack": settings.stack, "managed-by": "pulumi"}

        self.ssh_keys = [
            hcloud.SshKey(
                f"{name}-ssh-key-{index}",
                name=f"{settings.server_name}-operator-{index}",
                public_key=key,
                labels=labels,
                opts=child,
            )
            for index, key in enumerate(settings.ssh.public_keys)
        ]
        # Keys already in the project (ssh.existingKeys), looked up by ID or name: a missing key
        # fails `pulumi preview`, before anything is created.
        self.existing_key_ids: list[pulumi.Output[str]] = [
            (
                hcloud.get_ssh_key_output(id=int(ref), opts=pulumi.InvokeOptions(parent=self))
                if ref.isdigit()
                else hcloud.get_ssh_key_output(name=ref, opts=pulumi.InvokeOptions(parent=self))
            ).id.apply(lambda key_id: str(key_id))
            for ref in settings.ssh.existing_keys
        ]

        self.firewall = hcloud.Firewall(
            f"{name}-firewall",
            name=f"{settings.server_name}-firewall",
            labels=labels,
            rules=[
                hcloud.FirewallRuleArgs(
                    direction="in",
                    protocol=rule.protocol,
                    port=rule.port,
                    source_ips=list(rule.sources),
                    description=rule.description,
                )
                for rule in firewall_rules(settings, args.edge)
            ],
            opts=child,
        )

        protection = settings.data.delete_protection
        keep = pulumi.ResourceOptions(parent=self, protect=protection)
        # Primary IPs survive the server (auto_delete false), so DNS records stay valid.
        self.primary_ips = {
            family: hcloud.PrimaryIp(
                f"{name}-{family}",
                name=f"{settings.server_name}-{family}",
                type=family,
                location=settings.server.location,
                assignee_type="server",
                auto_delete=False,
                delete_protection=protection,
                labels=labels,
                opts=keep,
            )
            for family in ("ipv4", "ipv6")
        }
        # Every stateful path lives on this volume (core.layout.DATA_ROOT).
        self.volume = hcloud.Volume(
            f"{name}-volume",
            name=f"{settings.server_name}-data",
            size=settings.data.volume_size,
            location=settings.server.location,
            format="ext4",
            delete_protection=protection,
            labels=labels,
            opts=keep,
        )

        # The server's SSH host key, generated here so that the readiness step and the Docker
        # provider verify it on first contact (no trust-on-first-use).
        self.host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=child)
        user_data: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(
                self.host_key.private_key_openssh, self.host_key.public_key_openssh, self.volume.id
            ).apply(lambda values: render_cloud_init(settings, values[0], values[1], values[2]))
        )

        self.server = hcloud.Server(
            f"{name}-server",
            name=settings.server_name,
            server_type=settings.server.type,
            image=settings.server.image,
            location=settings.server.location,
            ssh_keys=[key.id for key in self.ssh_keys] + self.existing_key_ids,
            firewall_ids=[self.firewall.id.apply(int)],
            user_data=user_data,
            labels=labels,
            public_nets=[
                hcloud.ServerPublicNetArgs(
                    ipv4_enabled=True,
                    ipv4=self.primary_ips["ipv4"].id.apply(int),
                    ipv6_enabled=True,
                    ipv6=self.primary_ips["ipv6"].id.apply(int),
                )
            ],
            backups=settings.server.backups,
            shutdown_before_deletion=True,
            # The replacement needs the primary IPs and the volume the old server still holds.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.volume_attachment = hcloud.VolumeAttachment(
            f"{name}-volume-attachment",
            server_id=self.server.id.apply(int),
            volume_id=self.volume.id.apply(int),
            automount=False,  # cloud-init mounts it with a systemd mount unit Docker requires
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

        self.ipv4_address = self.server.ipv4_address
        self.ipv6_address = self.server.ipv6_address
        self.host_public_key = self.host_key.public_key_openssh
        self.user_data = user_data
        self.register_outputs(
            {
                "ipv4Address": self.ipv4_address,
                "ipv6Address": self.ipv6_address,
                "serverId": self.server.id,
                "volumeId": self.volume.id,
            }
        )
