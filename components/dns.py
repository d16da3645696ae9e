"""DNS as code: the records in an existing Hetzner DNS zone, and reverse DNS of the Primary IPs.

Everything here depends on the Primary IPs only, never on the server: a replaced server keeps its
addresses, so DNS is untouched (tests/test_program.py proves it).

Hetzner DNS lives in the Cloud API (pulumi-hcloud >= 1.43: hcloud.ZoneRrset, hcloud.get_zone).
Every RRset's `name` is set explicitly ('@' for the apex): the Pulumi bridge fills an omitted name
from the resource name, which would create a record at a name nobody chose.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_hcloud as hcloud

from core.dns import Record, records, reverse_name
from core.edgefacts import EdgeFacts
from core.settings import StackSettings


@dataclass
class DnsArgs:
    settings: StackSettings
    primary_ip_ids: dict[str, pulumi.Input[str]]  # "ipv4"/"ipv6" -> Primary IP id
    ipv4: pulumi.Input[str]  # the Primary IPv4 address
    ipv6: pulumi.Input[str]  # the server's address in the Primary IPv6 /64 (core.dns.server_ipv6)
    edge: EdgeFacts  # which names answer over IPv6, which ACME challenges (services/edge/facts.py)


def rrset_resource_name(zone: str, name: str, type_: str) -> str:
    relative = "apex" if name == zone else name.removesuffix("." + zone)
    return f"dns-{type_.lower()}-{relative}"


def _rrset_records(values: list[Record], *, key: tuple[str, str]) -> list[hcloud.ZoneRrsetRecordArgs]:
    return [
        hcloud.ZoneRrsetRecordArgs(value=r.value, comment=r.purpose)
        for r in values
        if (r.name, r.type) == key
    ]


def _zone_lines(values: list[Any], *, key: tuple[str, str], ttl: int) -> str:
    return "\n".join(r.zone_file_line(ttl) for r in values[1] if (r.name, r.type) == key)


class Dns(pulumi.ComponentResource):
    """RRsets in the zone (when managed) and rDNS for both Primary IPs (when a zone or name is set)."""

    records_created: pulumi.Output[list[str]]

    def __init__(self, name: str, args: DnsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:Dns", name, None, opts)
        settings = args.settings
        dns = settings.dns
        child = pulumi.ResourceOptions(parent=self)
        ips = pulumi.Output.all(args.ipv4, args.ipv6)
        all_records = ips.apply(lambda v: records(settings, args.edge, v[0], v[1]))
        created: list[pulumi.Output[str]] = []
        self.nameservers: pulumi.Output[list[str]] = pulumi.Output.from_input([])
        if dns.managed and dns.zone is not None:
            zone_name = dns.zone
            # Fails the preview with the provider's error when the zone does not exist in the project.
            zone = hcloud.get_zone_output(name=zone_name, opts=pulumi.InvokeOutputOptions(parent=self))
            self.nameservers = zone.authoritative_nameservers.apply(lambda ns: list(ns.assigneds or []))
            # Names and types do not depend on the addresses; one RRset per (name, type).
            layout: dict[tuple[str, str], Record] = {}
            for record in records(settings, args.edge, "192.0.2.1", "2001:db8::1"):
                layout.setdefault((record.name, record.type), record)
            for (record_name, type_), first in layout.items():
                key = (record_name, type_)
                values = all_records.apply(functools.partial(_rrset_records, key=key))
                rrset = hcloud.ZoneRrset(
                    rrset_resource_name(zone_name, record_name, type_),
                    zone=zone_name,
                    name=first.relative_to(zone_name),  # never omitted: '@' for the apex
                    type=type_,
                    ttl=dns.ttl,
                    records=values,
                    labels={"app": "torrust-tracker", "stack": settings.stack, "managed-by": "pulumi"},
                    opts=child,
                )
                # Listed once the RRset exists (its id resolves), as zone file lines.
                created.append(
                    pulumi.Output.all(rrset.id, all_records).apply(
                        functools.partial(_zone_lines, key=key, ttl=dns.ttl)
                    )
                )

        self.rdns: dict[str, hcloud.Rdns] = {}
        if dns.zone is not None or dns.reverse_name is not None:
            ptr = reverse_name(settings)
            addresses = {"ipv4": args.ipv4, "ipv6": args.ipv6}
            for family, ip_id in args.primary_ip_ids.items():
                self.rdns[family] = hcloud.Rdns(
                    f"{name}-rdns-{family}",
                    primary_ip_id=pulumi.Output.from_input(ip_id).apply(int),
                    ip_address=addresses[family],
                    dns_ptr=ptr,
                    opts=child,
                )

        self.records_created = pulumi.Output.all(*created).apply(
            lambda blocks: [line for block in blocks for line in block.split("\n") if line]
        )
        self.register_outputs({"recordsCreated": self.records_created})

    def summary(self, settings: StackSettings) -> dict[str, object]:
        """The `dns` stack output: the zone, what the program manages, and the gate."""
        return {
            "zone": settings.dns.zone,
            "managed": settings.dns.managed,
            "ttl": settings.dns.ttl,
            "nameservers": self.nameservers,
            "recordsCreated": self.records_created,
            "reverseDns": {family: rdns.dns_ptr for family, rdns in self.rdns.items()},
            "gate": "skipped" if settings.dns.skip_gate else f"waits up to {settings.dns.gate_timeout} s",
            "resolvers": settings.dns.resolvers,
        }
