"""What the public edge means for the rest of the deployment, as plain data (pure).

The edge's variants live in services/edge/ (components, rendering, templates). Each variant states
its facts here, in one value: the TCP ports it opens, every name it serves over TLS and on which
port, whether those names answer over IPv6, the ACME challenge that issues each certificate, the
Grafana URL, and the redirects it answers. DNS (AAAA and CAA), the firewall, the endpoints output,
the blackbox probes and the doctor read these facts; none of them knows the variants. core/ never
imports services/: the entry point asks services.edge.edge_facts(settings) and passes the result down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TLS_ALPN_01 = "tls-alpn-01"
HTTP_01 = "http-01"


@dataclass(frozen=True)
class EdgePort:
    """A public TCP port of the edge, open (firewall) and published (Docker) on these families."""

    port: int
    ipv6: bool
    purpose: str


@dataclass(frozen=True)
class TlsEndpoint:
    """A name served over TLS on a port, with the ACME challenge its certificate comes from."""

    name: str
    port: int
    challenge: str
    purpose: str

    @property
    def target(self) -> str:
        return f"{self.name}:{self.port}"


@dataclass(frozen=True)
class Redirect:
    """A URL the edge answers with a permanent redirect to `location` (a prefix of Location)."""

    url: str
    location: str
    tls: bool
    purpose: str


@dataclass(frozen=True)
class EdgeFacts:
    kind: str
    ports: tuple[EdgePort, ...]
    tls: tuple[TlsEndpoint, ...]
    # Every name in `tls` answers over IPv6 too (so it gets an AAAA record).
    ipv6: bool
    grafana_url: str
    redirects: tuple[Redirect, ...]
    tls_versions: tuple[str, ...]
    http2: bool
    # The program in front of the tracker (for texts: "health checks through Pingoo") and the
    # containers whose logs tell why a certificate or a probe fails.
    proxy: str
    containers: tuple[str, ...]
    # When its ACME clients renew (for the certificate alerts' text).
    renewal: str
    notes: tuple[str, ...] = field(default=())

    @property
    def names(self) -> list[str]:
        """Every name the edge serves, once, in order."""
        return list(dict.fromkeys(endpoint.name for endpoint in self.tls))

    def caa_methods(self) -> dict[str, list[str]]:
        """name -> the ACME challenges its certificates come from (CAA validationmethods)."""
        methods: dict[str, list[str]] = {}
        for endpoint in self.tls:
            wanted = methods.setdefault(endpoint.name, [])
            if endpoint.challenge not in wanted:
                wanted.append(endpoint.challenge)
        return {name: sorted(values, key=[TLS_ALPN_01, HTTP_01].index) for name, values in methods.items()}

    def output(self) -> Mapping[str, Any]:
        """The `edge` stack output: what `make doctor` and an operator need to know about the edge."""
        return {
            "kind": self.kind,
            "https": [
                {"name": e.name, "port": e.port, "challenge": e.challenge, "purpose": e.purpose}
                for e in self.tls
            ],
            "ports": [{"port": p.port, "ipv6": p.ipv6, "purpose": p.purpose} for p in self.ports],
            "ipv6": self.ipv6,
            "tlsVersions": list(self.tls_versions),
            "http2": self.http2,
            "containers": list(self.containers),
            "grafana": self.grafana_url,
            "redirects": [
                {"url": r.url, "location": r.location, "purpose": r.purpose} for r in self.redirects
            ],
            "notes": list(self.notes),
        }
