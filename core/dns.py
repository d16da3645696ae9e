"""The DNS records the deployment needs, from the Primary IPs and the edge's facts alone (pure).

One list serves four consumers: the Hetzner zone RRsets (components/dns.py), the `dnsRecords`
output for operators who keep DNS manual, the DNS gate before the edges, and `make doctor`.

Which names get an AAAA record: only those whose every service answers over IPv6 (EdgeFacts.ipv6,
stated by each edge variant in services/edge/facts.py).
- The pingoo edge: Pingoo listens on `0.0.0.0:443` inside a container on the IPv6-enabled `edge`
  network; Docker's ip6tables DNAT sends IPv6 clients to the container's IPv6 address, where nothing
  listens. So the API, HTTP tracker and Grafana names stay IPv4-only: an AAAA would send IPv6
  clients, and Let's Encrypt's validation (it tries IPv6 first), to a refused port.
- The nginx edge listens on `[::]:80` and `[::]:443` as well: every name gets an AAAA.
- The UDP tracker binds `[::]:<port>` (services/tracker/templates/tracker/tracker.toml.j2) on the
  IPv6 `udp` network, so its name gets an AAAA, unless it is also one of the edge's IPv4-only names.

CAA (RFC 8659) with the `validationmethods` parameter (RFC 8657, honoured by Let's Encrypt): a
CAA set found at a name stops the climb to its parents, so each certificate name carries its own
record naming exactly the methods its ACME clients use (EdgeFacts.caa_methods): with the pingoo
edge tls-alpn-01 for the API and HTTP tracker names and tls-alpn-01 + http-01 for the Grafana name
(Pingoo's 443 redirect and certbot's 3443); with the nginx edge http-01 for every name (certbot).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from core.edgefacts import HTTP_01, TLS_ALPN_01, EdgeFacts
from core.settings import StackSettings

LETS_ENCRYPT_CAA = "letsencrypt.org"
__all__ = ["HTTP_01", "TLS_ALPN_01"]  # re-exported: the CAA methods


@dataclass(frozen=True)
class Record:
    name: str  # fully qualified, no trailing dot
    type: str  # A, AAAA, TXT, CAA
    value: str  # presentation format as the Hetzner API takes it (TXT quoted)
    purpose: str

    def relative_to(self, zone: str) -> str:
        """The RRset name inside the zone: '@' for the apex (never omitted, see components/dns.py)."""
        if self.name == zone:
            return "@"
        return self.name.removesuffix("." + zone)

    def zone_file_line(self, ttl: int) -> str:
        return f"{self.name}. {ttl} IN {self.type} {self.value}"

    def as_output(self) -> dict[str, str]:
        # TXT values are shown unquoted in the output (what a DNS console field takes).
        value = self.value[1:-1] if self.type == "TXT" else self.value
        return {"name": self.name, "type": self.type, "value": value, "purpose": self.purpose}


def server_ipv6(ipv6_network_or_address: str) -> str:
    """The address the server uses in its Primary IPv6 /64: the network's first address (::1).

    Hetzner assigns a /64; the server configures <prefix>::1 (hcloud CLI: `hcloud server ip --ipv6`
    "prints the first address of the Server's Primary IPv6 network"). Accepts the network
    (`2001:db8::/64`) or an address inside it.
    """
    network = ipaddress.IPv6Network(
        ipv6_network_or_address if "/" in ipv6_network_or_address else f"{ipv6_network_or_address}/64",
        strict=False,
    )
    return str(network[1])


def caa_value(methods: list[str]) -> str:
    return f'0 issue "{LETS_ENCRYPT_CAA}; validationmethods={",".join(methods)}"'


def ipv6_names(settings: StackSettings, edge: EdgeFacts) -> list[str]:
    """Names that get an AAAA record (see the module docstring)."""
    names = list(edge.names) if edge.ipv6 else []
    udp = settings.domains.udp_tracker
    if udp and udp not in edge.names:
        names.append(udp)
    return names


def public_names(settings: StackSettings, edge: EdgeFacts) -> list[str]:
    names = list(edge.names)
    udp = settings.domains.udp_tracker
    if udp and udp not in names:
        names.append(udp)
    return names


def records(settings: StackSettings, edge: EdgeFacts, ipv4: str, ipv6: str) -> list[Record]:
    """Every record the deployment needs, in a stable order."""
    domains = settings.domains
    with_ipv6 = ipv6_names(settings, edge)
    result = []
    for name in public_names(settings, edge):
        result.append(Record(name, "A", ipv4, "IPv4 of the server (Primary IP)"))
        if name in with_ipv6:
            roles = (["edge"] if name in edge.names else []) + (
                ["UDP tracker"] if name == domains.udp_tracker else []
            )
            why = " and ".join(roles)
            result.append(Record(name, "AAAA", ipv6, f"IPv6 of the server (Primary IP, {why})"))
    if domains.udp_tracker:
        ports = " ".join(f"UDP:{port}" for port in settings.tracker.udp_ports)
        result.append(Record(domains.udp_tracker, "TXT", f'"BITTORRENT {ports}"', "BEP 34 tracker ports"))
    for name, methods in edge.caa_methods().items():
        purpose = "Let's Encrypt only, " + " and ".join(methods)
        result.append(Record(name, "CAA", caa_value(methods), purpose))
    return result


def expected_addresses(
    settings: StackSettings, edge: EdgeFacts, ipv4: str, ipv6: str
) -> list[tuple[str, str, str]]:
    """(name, type, expected value or '' for "no record") for the DNS gate: A and AAAA of every name.

    An AAAA where none belongs is wrong too: IPv6 clients and Let's Encrypt would reach a closed port.
    """
    with_ipv6 = ipv6_names(settings, edge)
    result = []
    for name in public_names(settings, edge):
        result.append((name, "A", ipv4))
        result.append((name, "AAAA", ipv6 if name in with_ipv6 else ""))
    return result


def expected_caa(settings: StackSettings, edge: EdgeFacts) -> list[tuple[str, str, str]]:
    """(name, "CAA", the record this deployment wants) for the DNS gate: it waits until the CAA set
    that applies to each name lets Let's Encrypt issue by the edge's methods, so that a switch of
    the edge (or a CAA record made by hand) cannot make the first ACME attempt fail."""
    del settings
    return [(name, "CAA", caa_value(methods)) for name, methods in edge.caa_methods().items()]


def reverse_name(settings: StackSettings) -> str:
    return settings.dns.reverse_name or settings.domains.udp_tracker or settings.domains.tracker_api
