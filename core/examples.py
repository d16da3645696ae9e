"""Documentation-only values: fine to plan and preview with, refused by `pulumi up`.

The example stack (Pulumi.dev.yaml) uses names and addresses reserved for documentation so that it
can be planned by anyone; deploying them would order certificates Let's Encrypt refuses (boulder
policy/pa.go forbiddenMailDomains; RFC 2606 names), open SSH to addresses nobody owns, and install a
key whose private half was thrown away. `__main__.py` refuses them when `is_dry_run()` is false.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress

from core.names import DOCUMENTATION_DOMAINS
from core.settings import PROJECT, StackSettings

# RFC 5737 (IPv4 TEST-NET-1/2/3), RFC 3849 (IPv6 2001:db8::/32) and RFC 9637 (IPv6 3fff::/20).
DOCUMENTATION_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20")
)
# SHA256 fingerprint (as `ssh-keygen -l` prints it) of the placeholder key in Pulumi.dev.yaml; its
# private half was discarded when it was generated.
PLACEHOLDER_KEY_FINGERPRINTS = ("SHA256:dAwksbn+fYJMiRQpIfcwJXD5Z/yuloIFdV92u7oOSYU",)


def fingerprint(public_key: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line (base64 of the blob's digest, no padding)."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _documentation_name(name: str) -> bool:
    return (
        name == "example"
        or name.endswith(".example")
        or any(name == domain or name.endswith("." + domain) for domain in DOCUMENTATION_DOMAINS)
    )


def documentation_values(settings: StackSettings) -> list[tuple[str, str]]:
    """(key path, value) of every documentation-only value in the settings."""
    found: list[tuple[str, str]] = []
    domains = settings.domains
    named = [("domains.trackerApi", domains.tracker_api), ("domains.grafana", domains.grafana)]
    named += [(f"domains.httpTrackers[{i}]", n) for i, n in enumerate(domains.http_trackers)]
    if domains.udp_tracker:
        named.append(("domains.udpTracker", domains.udp_tracker))
    for path, name in (("dns.zone", settings.dns.zone), ("dns.reverseName", settings.dns.reverse_name)):
        if name:
            named.append((path, name))
    found += [(path, name) for path, name in named if _documentation_name(name)]
    if _documentation_name(settings.acme.email.rpartition("@")[2].lower()):
        found.append(("acme.email", settings.acme.email))
    for index, cidr in enumerate(settings.ssh.allowed_cidrs):
        network = ipaddress.ip_network(cidr)
        if any(
            network.version == doc.version and network.subnet_of(doc)  # type: ignore[arg-type]
            for doc in DOCUMENTATION_NETWORKS
        ):
            found.append((f"ssh.allowedCidrs[{index}]", cidr))
    for index, key in enumerate(settings.ssh.public_keys):
        if fingerprint(key) in PLACEHOLDER_KEY_FINGERPRINTS:
            found.append((f"ssh.publicKeys[{index}]", key.split()[-1] + " (the example key)"))
    return found


def documentation_problems(settings: StackSettings) -> list[str]:
    """Operator-facing lines refusing documentation values (for `pulumi up`)."""
    return [
        f"  - {PROJECT}:{path}: '{value}' is a documentation-only value from the example stack; "
        "`pulumi up` deploys real names, addresses and keys\n"
        f"      fix: pulumi config set --path '{path}' <your own value>"
        for path, value in documentation_values(settings)
    ]
