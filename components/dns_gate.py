"""The DNS gate: a bounded wait, on the server, until every public name resolves to the Primary IPs
and the CAA records that apply to it let Let's Encrypt issue by the edge's ACME method.

Runs after Docker is ready and before the edge containers (Pingoo, nginx+certbot), for managed and
manual DNS alike, so that their first ACME attempts happen when they can succeed: Pingoo orders at
start and then only every 6 hours, certbot in jonasal/nginx-certbot at start and then every
RENEWAL_INTERVAL (research/pingoo.md §3.5, research/nginx_certbot.md §2.2). The script is
templates/dns-gate/wait-for-dns.sh (shellchecked and tested against a real DNS server in
tests/test_dns_gate.py).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command

from core.dns import expected_addresses, expected_caa
from core.edgefacts import EdgeFacts
from core.settings import StackSettings

SCRIPT = Path(__file__).resolve().parent.parent / "templates" / "dns-gate" / "wait-for-dns.sh"
# Slack on top of the script's own timeout for the SSH round trips and the last round of queries.
TIMEOUT_MARGIN_SECONDS = 300


def gate_command(settings: StackSettings, edge: EdgeFacts, ipv4: str, ipv6: str) -> str:
    """The remote command line: environment, the script inline (nothing left on the server), records."""
    dns = settings.dns
    expected = expected_addresses(settings, edge, ipv4, ipv6) + expected_caa(settings, edge)
    specs = [f"{name},{type_},{value}" for name, type_, value in expected]
    env = {
        "DNS_GATE_TIMEOUT": str(dns.gate_timeout),
        "DNS_GATE_RESOLVERS": " ".join(dns.resolvers),
        "DNS_GATE_TTL": str(dns.ttl),
    }
    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
    args = " ".join(shlex.quote(spec) for spec in specs)
    return f"{assignments} bash -c {shlex.quote(SCRIPT.read_text())} wait-for-dns {args}"


@dataclass
class DnsGateArgs:
    settings: StackSettings
    connection: command.remote.ConnectionArgs
    ready: pulumi.Resource
    server_id: pulumi.Input[str]
    ipv4: pulumi.Input[str]
    ipv6: pulumi.Input[str]
    edge: EdgeFacts


class DnsGate(pulumi.ComponentResource):
    def __init__(self, name: str, args: DnsGateArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:DnsGate", name, None, opts)
        settings = args.settings
        script = pulumi.Output.all(args.ipv4, args.ipv6).apply(
            lambda ips: gate_command(settings, args.edge, ips[0], ips[1])
        )
        self.command = command.remote.Command(
            f"{name}-wait",
            connection=args.connection,
            create=script,
            # Nothing reads PULUMI_COMMAND_STDOUT; setting it only warns (our sshd has no AcceptEnv).
            add_previous_output_in_env=False,
            # Waited for again on a replaced server (its edges are re-created) and on new records.
            triggers=[args.server_id, script],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[args.ready],
                custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{settings.dns.gate_timeout + TIMEOUT_MARGIN_SECONDS}s"
                ),
            ),
        )
        self.register_outputs({"stdout": self.command.stdout})
