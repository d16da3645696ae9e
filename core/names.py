"""Names and contact addresses as Let's Encrypt accepts them.

The rules are boulder's (Let's Encrypt's CA), policy/pa.go `ValidDomain` and `ValidEmail`
(letsencrypt/boulder, commit 0b8f2124c705bea74b1b8787820275bb71d6e9c9): LDH labels of 1-63 bytes, at
most 10 labels and 253 bytes, no IP address, no trailing dot, "??--" labels only as "xn--" A-labels
that decode as IDNA (and are NFC), and a name under a real public TLD. We cannot ship the IANA TLD
list, so the special-use and reserved TLDs that people actually type are refused by name (RFC 6761,
RFC 2606, RFC 6762, RFC 7686, RFC 9476, ICANN's 2024 `.internal` reservation); they are not in the
root zone, so boulder refuses them as "does not end with a valid public suffix".

Documentation-only names (RFC 2606 example.*) are accepted here: the example stack must plan. The
program refuses them at `pulumi up` (core.examples).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

import idna

MAX_LABELS = 10  # boulder policy/pa.go maxLabels
MAX_LABEL_LENGTH = 63  # RFC 1035 section 2.3.4
MAX_NAME_LENGTH = 253  # RFC 1035 minus the length byte and the root dot

# Special-use / reserved top-level names that no CA issues for.
RESERVED_TLDS = {
    "local": "RFC 6762 (mDNS)",
    "localhost": "RFC 6761",
    "test": "RFC 6761",
    "example": "RFC 2606/6761",
    "invalid": "RFC 6761",
    "onion": "RFC 7686 (Tor)",
    "alt": "RFC 9476",
    "internal": "ICANN reserved it for private use (2024)",
    "home": "RFC 8375 (home.arpa; .home is not delegated)",
    "lan": "not delegated (private use)",
    "corp": "not delegated (ICANN name collision)",
    "localdomain": "not delegated",
    "arpa": "infrastructure (RFC 3172), not for hosts",
}
# RFC 2606 second-level documentation names; boulder's forbiddenMailDomains for contact e-mail.
DOCUMENTATION_DOMAINS = ("example.com", "example.net", "example.org")

_LDH = re.compile(r"^[a-z0-9-]+$")


def punycode_suggestion(value: str) -> str | None:
    """The A-label form of a name typed in Unicode, or None when it has no valid one."""
    try:
        return idna.encode(value, uts46=True).decode("ascii")
    except idna.IDNAError:
        return None


def domain_problem(value: str) -> str | None:
    """Why Let's Encrypt would refuse to issue for `value`, or None when it would not."""
    if not value:
        return "is empty"
    if not value.isascii():
        suggestion = punycode_suggestion(value)
        if suggestion is None:
            return f"'{value}' is not a valid internationalised name (IDNA 2008)"
        return f"'{value}' contains non-ASCII characters; certificates use the punycode form '{suggestion}'"
    if value != value.lower():
        return f"'{value}' must be lowercase (Pingoo's ACME rejects upper case names)"
    if "*" in value:
        return f"'{value}' is a wildcard; Pingoo cannot obtain wildcard certificates"
    if value.endswith("."):
        return f"'{value}' must not end with a dot"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return f"'{value}' is an IP address; Let's Encrypt issues for DNS names here"
    if len(value) > MAX_NAME_LENGTH:
        return f"'{value[:40]}…' is {len(value)} characters long; a name has at most {MAX_NAME_LENGTH}"
    labels = value.split(".")
    if len(labels) < 2:
        return f"'{value}' is not a fully qualified domain name like 'api.example.com'"
    if len(labels) > MAX_LABELS:
        return f"'{value}' has {len(labels)} labels; Let's Encrypt allows at most {MAX_LABELS}"
    for position, label in enumerate(labels, start=1):
        if not label:
            return f"'{value}' has an empty label (two dots in a row): not a fully qualified domain name"
        if len(label) > MAX_LABEL_LENGTH:
            return (
                f"label {position} '{label[:20]}…' of '{value}' is {len(label)} characters long; "
                f"a label has at most {MAX_LABEL_LENGTH}"
            )
        if not _LDH.match(label) or label.startswith("-") or label.endswith("-"):
            return (
                f"label '{label}' of '{value}' may only hold letters, digits and inner '-' "
                "(not a fully qualified domain name like 'api.example.com')"
            )
        if label[2:4] == "--":
            if not label.startswith("xn--"):
                return f"label '{label}' of '{value}' has '--' in positions 3-4, reserved for 'xn--'"
            try:
                unicode = idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                return f"label '{label}' of '{value}' is not valid punycode (IDNA A-label)"
            if unicodedata.normalize("NFC", unicode) != unicode:
                return f"label '{label}' of '{value}' does not decode to NFC-normalised Unicode"
    tld = labels[-1]
    if tld.isdigit():
        return f"'{value}' looks like an IP address; a DNS name is required"
    if tld in RESERVED_TLDS:
        return (
            f"'{value}' ends in '.{tld}', a special-use name ({RESERVED_TLDS[tld]}); "
            "Let's Encrypt issues only for names under public TLDs"
        )
    return None


def email_problem(value: str) -> str | None:
    """Why Let's Encrypt would refuse `value` as the ACME account contact, or None.

    boulder ValidEmail: net/mail.ParseAddress, then ValidDomain on the domain. A bare address is
    what certbot sends (mailto:<address>), so display names and comments are refused too.
    """
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or any(ch.isspace() or ch in '<>(),;:"[]\\' for ch in value):
        return f"'{value}' is not an e-mail address such as 'admin@tracker.example.org'"
    if len(value) > 254:
        return "is longer than 254 characters"
    problem = domain_problem(domain.lower())
    if problem is not None:
        return f"the domain of '{value}' is refused by Let's Encrypt: {problem}"
    return None
