"""Stack configuration: one pydantic model, validated before any resource is created.

The structured keys live under the project namespace (``torrust-hybrid-tls:<key>``) and are read
with ``pulumi.Config().get_object``. Every error names the key path and the ``pulumi config set``
command that fixes it, because the person reading it is an operator at a terminal, not a developer.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import shlex
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from core.names import domain_problem, email_problem, punycode_suggestion
from core.oncalendar import CalendarError, check_calendar
from core.sshkeys import SshKeyError, parse_public_key

PROJECT = "torrust-hybrid-tls"

# Top-level structured keys, in the order the README documents them.
STRUCTURED_KEYS = (
    "server", "ssh", "domains", "acme", "edge", "tracker", "images", "data", "backup", "dns", "alerts",
)  # fmt: skip
# Operator secrets (top-level keys, set with --secret, generated when unset) and their minimum length.
SECRET_MIN_LENGTHS = {"trackerAdminToken": 24, "grafanaAdminPassword": 16}
SECRET_KEYS = tuple(SECRET_MIN_LENGTHS)
# Alert receiver secrets (top-level keys, set with --secret, never generated): each one that is set
# turns its receiver on (the SMTP password goes with `alerts.email`). services/monitoring/alerts.py
# reads them.
ALERT_SECRET_KEYS = (
    "alertSmtpPassword",
    "alertWebhookUrl",
    "alertDiscordWebhookUrl",
    "alertSlackWebhookUrl",
    "alertTelegramBotToken",
)
# backup.offsite: the restic repository password (top-level secret; generated when unset). A new
# stack restoring an old stack's repository sets it to the old stack's offsiteResticPassword.
RESTIC_PASSWORD_KEY = "offsiteResticPassword"
RESTIC_PASSWORD_MIN_LENGTH = 24

# Secrets that travel inside a URL: tracker v3.0.0 takes the admin token only as `?token=` (its
# src/servers/apis/v1/middlewares/auth.rs) and Prometheus hands json_exporter the stats URL with it.
# It goes in verbatim, so the characters that split or decode a query string are refused.
URL_SAFE_SECRETS = ("trackerAdminToken",)
URL_QUERY_SPECIAL = "&#%+;="

# Hetzner Cloud locations (https://docs.hetzner.cloud/#locations). A typo here would only fail
# half-way through `pulumi up`, so it is checked up front.
HETZNER_LOCATIONS = ("fsn1", "nbg1", "hel1", "ash", "hil", "sin")
_EU_LOCATIONS = ("fsn1", "nbg1", "hel1")
# Where each server type family is sold. Hetzner refuses other pairs at create time with
# "unsupported location for server type" (invalid_input), half-way through the first `up`.
# Sources, read 2026-11-26: Hetzner Cloud API `GET /server_types` -> `locations[].available`
# (pulumi-hcloud 1.43.3 `get_server_type`; since 2026-04-01 per docs.hetzner.cloud changelog
# "datacenter-deprecations"); Hetzner's server overview lists the cost-optimized CX (Intel/AMD)
# and CAX (Arm) lines in Germany and Finland only, while CPX (regular performance) and CCX
# (dedicated vCPU) are sold in every location, Ashburn, Hillsboro and Singapore included. Seen
# in practice: trailofbits/algo#14562, roots/trellis-cli#622 (CX/CAX refused in US locations),
# testflows/TestFlows-GitHub-Hetzner-Runners#96 (cx23: "unsupported location for server type").
# The live answer for one account is `hcloud server-type describe <type>`; this table only
# catches the pairs that can never work. Unknown families are not checked.
SERVER_TYPE_LOCATIONS: dict[str, tuple[str, ...]] = {
    "cx": _EU_LOCATIONS,
    "cax": _EU_LOCATIONS,
    "cpx": HETZNER_LOCATIONS,
    "ccx": HETZNER_LOCATIONS,
}
# A valid choice per location for the error message (the smallest current type sold there).
_SUGGESTED_TYPE = {
    "fsn1": "cx23",
    "nbg1": "cx23",
    "hel1": "cx23",
    "ash": "cpx22",
    "hil": "cpx22",
    "sin": "cpx22",
}


_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# registry[:port]/path[:tag][@sha256:digest]; the tag is mandatory unless a digest pins the image.
_IMAGE_REF = re.compile(
    r"^(?P<repo>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
# Alert receivers' addresses: plain syntax (not the ACME contact, which core/names.py checks).
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SERVER_TYPE = re.compile(r"^[a-z]{2,4}[0-9]{1,3}$")
# A Hetzner SSH key name (as shown by `hcloud ssh-key list`) or its numeric ID.
_SSH_KEY_REF = re.compile(r"^\S(.{0,126}\S)?$")
# The Hetzner docker-ce app image ships Docker; any other image gets Docker from the distribution.
DOCKER_CE_IMAGE = "docker-ce"
MUTABLE_TAGS = ("latest", "develop", "main", "master", "nightly", "edge")


class ConfigError(Exception):
    """Invalid stack configuration; the message is written for the operator."""


# A validator may end its message with FIX_MARK + a fix specific to the value (e.g. the network
# address of a CIDR with host bits); _format_errors puts it on the "fix:" line instead of the generic one.
FIX_MARK = " \x00fix: "
# A model-level validator (no field location) names its key with KEY_MARK + path at the very end.
KEY_MARK = "\x00key: "


def _fqdn(value: str) -> str:
    problem = domain_problem(value)
    if problem is not None:
        suggestion = punycode_suggestion(value) if not value.isascii() else None
        if suggestion:
            # An IDN typed in Unicode: the fix is its A-label form.
            problem += f"{FIX_MARK}pulumi config set --path '{{path}}' {suggestion}"
        raise ValueError(problem)
    return value


Fqdn = Annotated[str, AfterValidator(_fqdn)]


def _image_ref(value: str) -> str:
    match = _IMAGE_REF.match(value)
    if not match:
        raise ValueError(f"'{value}' is not an image reference like 'grafana/grafana:12.4.2'")
    if not match.group("tag") and not match.group("digest"):
        raise ValueError(f"'{value}' has no tag or digest; pin a version such as '{value}:1.2.3'")
    return value


ImageRef = Annotated[str, AfterValidator(_image_ref)]


def _cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            six = ":" in value
            example = "2001:db8::/48" if six else "198.51.100.0/24"
            mine = "-6 https://ifconfig.me)/128" if six else "-4 https://ifconfig.me)/32"
            raise ValueError(
                f"'{value}' is not a CIDR such as '{example}' ({exc})"
                f"{FIX_MARK}pulumi config set --path '{{path}}' \"$(curl -s {mine}\""
            ) from None
        # Host bits set: suggest the network of the same family, not an IPv4 example for IPv6.
        raise ValueError(
            f"'{value}' is not a CIDR: it has host bits set; the network is '{loose}'"
            f"{FIX_MARK}pulumi config set --path '{{path}}' {loose}"
        ) from None
    return str(network)


Cidr = Annotated[str, AfterValidator(_cidr)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        str_strip_whitespace=True,
        # The docstring under each field is its description: the README's configuration reference
        # and Pulumi.yaml's `config:` block are generated from it (tools/config_reference.py).
        use_attribute_docstrings=True,
    )


class ServerSettings(_Model):
    type: str = "cx23"
    """Hetzner server type (changed in place; the server is stopped briefly). CX and CAX types are sold
    in fsn1, nbg1, hel1 only; in ash, hil and sin use CPX (e.g. cpx22) or CCX; other pairs are refused."""
    location: str = "nbg1"
    """Hetzner location: fsn1, nbg1, hel1, ash, hil or sin (replaces the server)."""
    image: str = DOCKER_CE_IMAGE
    """Hetzner's docker-ce app image; ubuntu-24.04 or debian-12 get the distribution's docker.io, with
    experimental on so that Docker < 27 accepts ip6tables (decision 0011) (replaces the server)."""
    name: str | None = None
    """Server name; the volume, IPs, firewall and keys are named after it (default torrust-<stack>)."""
    # Hetzner's daily server backups (+20% of the server price); they do not include volumes.
    backups: bool = False
    """Hetzner daily server backups (+20% of the server price; they do not include the volume)."""

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if not _SERVER_TYPE.match(value):
            raise ValueError(f"'{value}' is not a Hetzner server type such as 'cx23' or 'cpx22'")
        return value

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        if value not in HETZNER_LOCATIONS:
            raise ValueError(
                f"'{value}' is not a Hetzner location; use one of {', '.join(HETZNER_LOCATIONS)}"
            )
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if value.isdigit():
            # Numeric image IDs cause a replacement on every `up` (pulumi-hcloud#174).
            raise ValueError("use an image name such as 'docker-ce' or 'ubuntu-24.04', not a numeric ID")
        if value != DOCKER_CE_IMAGE and not value.startswith(("ubuntu-", "debian-")):
            raise ValueError(f"'{value}' is not supported; use 'docker-ce', 'ubuntu-24.04' or 'debian-12'")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_LABEL.match(value):
            raise ValueError(f"'{value}' is not a valid server name (lowercase letters, digits, '-')")
        return value

    @model_validator(mode="after")
    def _type_sold_in_location(self) -> ServerSettings:
        family = re.sub(r"[0-9]+$", "", self.type)
        allowed = SERVER_TYPE_LOCATIONS.get(family)
        if allowed is not None and self.location not in allowed:
            raise ValueError(
                f"server.type '{self.type}' is not sold in server.location '{self.location}' "
                f"({family.upper()} types are available in {', '.join(allowed)}); "
                f"choose e.g. server.type '{_SUGGESTED_TYPE[self.location]}' for '{self.location}'"
            )
        return self


class SshSettings(_Model):
    # Public keys the program uploads to the Hetzner project (one hcloud.SshKey each) ...
    public_keys: list[str] = Field(default_factory=list)
    """OpenSSH public keys for root, uploaded to the Hetzner project (changing them replaces the
    server)."""
    # ... and keys already in the project, by name or numeric ID. Hetzner refuses a second key with
    # the same fingerprint (uniqueness_error), so a key that is already uploaded goes here.
    existing_keys: list[str] = Field(default_factory=list)
    """SSH keys already in the Hetzner project, by name or numeric ID (`hcloud ssh-key list`), for root
    as well: a key uploaded before or by another stack (Hetzner refuses a second key with the same
    fingerprint). At least one key in publicKeys or existingKeys is required; changing them replaces
    the server."""
    allowed_cidrs: list[Cidr] = Field(min_length=1)
    """CIDRs allowed to reach port 22 (IPv4 and/or IPv6)."""
    # Optional path of the private key on the operator's machine; without it the ssh-agent is used.
    private_key_file: str | None = None
    """Private key path on the machine running Pulumi (unset: ssh-agent); a passphrase-protected key
    must be loaded in ssh-agent."""
    user: Literal["root"] = "root"
    """SSH user (root only)."""
    # 0.0.0.0/0 or ::/0 in allowedCidrs opens sshd to the internet; only with this explicit opt-in.
    allow_from_anywhere: bool = False
    """Opt-in for 0.0.0.0/0 or ::/0 in allowedCidrs (sshd open to the internet)."""

    @field_validator("public_keys")
    @classmethod
    def _keys(cls, values: list[str]) -> list[str]:
        blobs: dict[bytes, int] = {}
        for index, value in enumerate(values):
            try:
                _, blob, _ = parse_public_key(value)
            except SshKeyError as exc:
                shown = "" if "PRIVATE" in str(exc) else f"'{value[:40]}…' "
                raise ValueError(f"key {index}: {shown}{exc}") from None
            if blob in blobs:
                # sshd compares the blob; the comment does not make a second key.
                raise ValueError(f"keys {blobs[blob]} and {index} are the same public key")
            blobs[blob] = index
        return values

    @model_validator(mode="after")
    def _anywhere(self) -> SshSettings:
        everyone = [c for c in self.allowed_cidrs if ipaddress.ip_network(c).prefixlen == 0]
        if everyone and not self.allow_from_anywhere:
            raise ValueError(
                f"{', '.join(everyone)} lets the whole internet reach sshd; list your own addresses, "
                "or opt in with ssh.allowFromAnywhere=true"
                f"{FIX_MARK}pulumi config set --path 'ssh.allowedCidrs[0]' \"$(curl -s https://ifconfig.me)/32\""
                "   (or: pulumi config set --path 'ssh.allowFromAnywhere' true)"
                f"{KEY_MARK}ssh.allowedCidrs"
            )
        return self

    @field_validator("allowed_cidrs")
    @classmethod
    def _unique_cidrs(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("the same CIDR is listed twice")
        return values

    @field_validator("existing_keys", mode="before")
    @classmethod
    def _existing_keys(cls, values: Any) -> Any:
        if not isinstance(values, list):
            return values
        # `pulumi config set --path 'ssh.existingKeys[0]' 123` stores a number.
        result = [
            str(value) if isinstance(value, int) and not isinstance(value, bool) else value
            for value in values
        ]
        for value in result:
            if not isinstance(value, str) or not _SSH_KEY_REF.match(value.strip()):
                raise ValueError(
                    f"{value!r} is not the name or numeric ID of an SSH key in the Hetzner project"
                    " (see `hcloud ssh-key list`)"
                )
        if len({value.strip() for value in result}) != len(result):
            raise ValueError("the same key is listed twice")
        return result

    @model_validator(mode="after")
    def _some_key(self) -> SshSettings:
        if not self.public_keys and not self.existing_keys:
            raise ValueError(
                "needs at least one key: ssh.publicKeys (uploaded by this program) or "
                "ssh.existingKeys (names or IDs of keys already in the Hetzner project)"
            )
        return self


class DomainSettings(_Model):
    tracker_api: Fqdn
    """REST API name (443)."""
    http_trackers: list[Fqdn] = Field(min_length=1, max_length=8)
    """One to eight HTTP tracker names (443), tracker ports 7070, 7071, ..."""
    grafana: Fqdn
    """Grafana name (the pingoo edge: nginx on 3443, Pingoo redirects 443 there; the nginx edge: 443)."""
    udp_tracker: Fqdn | None = None
    """Name used in UDP announce URLs (unset: the server IPv4)."""

    @model_validator(mode="after")
    def _distinct(self) -> DomainSettings:
        seen: set[str] = set()
        for name in self.edge_names:
            if name in seen:
                raise ValueError(
                    f"'{name}' is used twice; the API, each HTTP tracker and Grafana need their own names "
                    "because the edge routes by host name"
                )
            seen.add(name)
        return self

    @property
    def edge_names(self) -> list[str]:
        """Names the edge serves on 443 (and so obtains certificates for), in routing order."""
        return [self.tracker_api, *self.http_trackers, self.grafana]


class AcmeSettings(_Model):
    email: str
    """ACME account e-mail (Let's Encrypt refuses example.* and special-use domains)."""
    staging: bool = True
    """Let's Encrypt staging for both Pingoo and certbot."""

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        problem = email_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class TrackerSettings(_Model):
    private: bool = False
    """Private tracker (announce URLs need a key)."""
    udp_ports: list[int] = Field(default_factory=lambda: [6969], min_length=1, max_length=8)
    """UDP tracker ports (1024-65535), published on IPv4 and IPv6."""
    database: Literal["sqlite3"] = "sqlite3"
    """Database driver."""
    announce_interval: int = Field(default=300, ge=60, le=7200)
    """Announce interval in seconds (60-7200)."""
    log_level: Literal["error", "warn", "info", "debug", "trace"] = "info"
    """Tracker log threshold."""

    @field_validator("udp_ports")
    @classmethod
    def _ports(cls, values: list[int]) -> list[int]:
        for port in values:
            if not 1024 <= port <= 65535:
                raise ValueError(f"UDP port {port} is out of range; use 1024-65535")
        if len(set(values)) != len(values):
            raise ValueError("a UDP port is listed twice")
        return values


# The public TLS edge (services/edge/): `pingoo` is the evaluation's hybrid (Pingoo on 443 for the
# tracker names, nginx+certbot on 3443 for Grafana); `nginx` puts every name on nginx+certbot's 443,
# over IPv4 and IPv6 (docs/decisions/0014-nginx-edge.md).
EDGE_KINDS = ("pingoo", "nginx")


class NginxEdgeSettings(_Model):
    """Limits of the nginx edge per client address: an IPv4 address, or an IPv6 client's /64."""

    # A client announces each torrent once per tracker.announceInterval (300 s): 10 requests/s from
    # one address is 3000 torrents, or a carrier-grade NAT address shared by many users.
    requests_per_second: int = Field(default=10, ge=1, le=1000)
    """Sustained requests per second per client address (an IPv4 address or an IPv6 /64) to the
    tracker API and HTTP tracker names; more are answered 429."""
    # A client starting up announces all of its torrents at once; libtorrent (qBittorrent, Deluge)
    # runs at most max_concurrent_http_announces of them at a time, 50 by default.
    request_burst: int = Field(default=100, ge=0, le=10000)
    """Requests above that rate served at once (a client announcing all of its torrents at start)."""
    connections_per_address: int = Field(default=64, ge=1, le=4096)
    """Concurrent requests per client address on every name, Grafana included (HTTP/2 streams
    count one each); more are answered 429."""


class EdgeSettings(_Model):
    """The public TLS edge."""

    kind: str = "pingoo"
    """pingoo (the evaluation's hybrid: Pingoo on 443 for the tracker names over IPv4, TLS 1.3 only;
    nginx+certbot on 3443 for Grafana) or nginx (nginx+certbot on 443 for every name, IPv4 and
    IPv6, TLS 1.2 and 1.3; 3443 closed). Switching replaces the edge containers: README 'Choosing
    the edge'."""
    nginx: NginxEdgeSettings = Field(default_factory=NginxEdgeSettings)
    """With kind nginx:"""

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in EDGE_KINDS:
            raise ValueError(
                f"'{value}' is not an edge this program deploys; use 'pingoo' (the default: the "
                "evaluation's hybrid) or 'nginx' (nginx+certbot for every name, IPv4 and IPv6)"
            )
        return value

    @model_validator(mode="after")
    def _nginx_only(self) -> EdgeSettings:
        # Pulumi.yaml declares the defaults and the CLI fills them in for a stack without `edge`, so
        # only a value other than the default can be the operator's own.
        if self.kind != "nginx" and self.nginx != NginxEdgeSettings():
            raise ValueError(
                f"is only used by the nginx edge, and edge.kind is '{self.kind}'"
                f"{FIX_MARK}pulumi config rm --path 'edge.nginx'   (or use the nginx edge: "
                f"pulumi config set --path 'edge.kind' nginx){KEY_MARK}edge.nginx"
            )
        return self


# Torrust tracker releases the program supports: image tag -> the configuration schema that release
# loads (docs/decisions/0008-tracker-version.md). v3.0.0 reads schema 2.0.0 only
# (torrust/torrust-tracker v3.0.0 packages/configuration/src/lib.rs LATEST_VERSION = "2.0.0",
# v2_0_0/mod.rs Configuration::load refuses any other schema_version). Its release workflow
# (.github/workflows/container.yaml, publish_release: semver patterns {{raw}} and {{version}})
# pushes both tags. `develop` moved to schema 3.0.0 and is refused: its schema is not rendered here.
TRACKER_RELEASES = {"v3.0.0": "2.0.0", "3.0.0": "2.0.0"}
TRACKER_IMAGE = "torrust/tracker:v3.0.0"
TRACKER_REPOSITORY = "torrust/tracker"


def tracker_release(image: str) -> str:
    """The tracker release tag of a validated `images.tracker` reference (e.g. 'v3.0.0')."""
    match = _IMAGE_REF.match(image)
    assert match and match.group("tag") in TRACKER_RELEASES, image
    return match.group("tag")


def tracker_schema_version(image: str) -> str:
    """The configuration schema the tracker in `image` loads."""
    return TRACKER_RELEASES[tracker_release(image)]


def _tracker_image(value: str) -> str:
    match = _IMAGE_REF.match(value)
    assert match  # ImageRef ran first
    repo, tag = match.group("repo"), match.group("tag")
    supported = ", ".join(f"'{TRACKER_REPOSITORY}:{tag}'" for tag in TRACKER_RELEASES)
    if repo != TRACKER_REPOSITORY and not repo.endswith("/" + TRACKER_REPOSITORY):
        raise ValueError(f"'{value}' is not the Torrust tracker image; use {supported}")
    if tag is None:
        raise ValueError(
            f"'{value}' has a digest but no release tag, so the configuration schema to render is "
            f"unknown; write both, e.g. '{TRACKER_IMAGE}@{match.group('digest')}'"
        )
    if tag not in TRACKER_RELEASES:
        why = " (develop loads configuration schema 3.0.0 and moves)" if tag == "develop" else ""
        raise ValueError(
            f"'{value}' is not a tracker release this program renders a configuration for{why}; "
            f"use {supported}, optionally pinned by digest ('{TRACKER_IMAGE}@sha256:<digest>')"
        )
    return value


class ImageSettings(_Model):
    pingoo: ImageRef = "pingooio/pingoo:0.14.7"
    """Pingoo image, the pingoo edge only (0.14.9 has an ACME regression, pingoo PR #24; the program
    warns)."""
    nginx_certbot: ImageRef = "jonasal/nginx-certbot:6.2.0-nginx1.31.2"
    """nginx+certbot image."""
    tracker: Annotated[ImageRef, AfterValidator(_tracker_image)] = TRACKER_IMAGE
    """Torrust tracker image: the latest release; only v3.0.0 / 3.0.0 (optionally @sha256:...) are
    accepted, see Pinning images."""
    # Newest patch of a supported line, as stored sources showed them on 2026-11-26 (read that day):
    # Prometheus 3.13 is an LTS line (supported until July 2027; 3.11 is end of life); 3.13.3 of
    # 2026-09-07 is the newest entry of github.com/prometheus/prometheus/releases ([SECURITY] Go
    # dependency bumps, TSDB and scrape fixes). Grafana 12.4 is the last 12.x minor (extended
    # support until May 2027; 13.x saves dashboards as v2 JSON, which our file provisioning is not
    # ready for); its newest patch is 12.4.14 (packaged upstream 2026-11-04, Alpine v3.24 grafana
    # 12.4.14-r0); a Grafana maintainer recommended "at least 12.4.11" on 2026-09-15
    # (grafana/grafana#118510). Release notes: github.com/grafana/grafana/blob/main/CHANGELOG.md.
    prometheus: ImageRef = "prom/prometheus:v3.13.3"
    """Prometheus image (newest patch of the 3.13 LTS line, supported until July 2027, on 2026-11-26)."""
    grafana: ImageRef = "grafana/grafana:12.4.14"
    """Grafana image (newest patch of 12.4, the last 12.x minor, supported until May 2027, on
    2026-11-26; sources in core/settings.py)."""
    # Versions whose source was read for the values we hand them (docs/decisions/0010-alerts-from-inside.md).
    blackbox_exporter: ImageRef = "prom/blackbox-exporter:v0.28.0"
    """Prometheus blackbox exporter image (probes the public endpoints)."""
    node_exporter: ImageRef = "prom/node-exporter:v1.12.1"
    """Prometheus node exporter image (host metrics)."""
    alertmanager: ImageRef = "prom/alertmanager:v0.34.0"
    """Alertmanager image."""
    # Turns the tracker's JSON /api/v1/stats into Prometheus metrics (v3.0.0 has no metrics endpoint).
    json_exporter: ImageRef = "prometheuscommunity/json-exporter:v0.7.0"
    """json_exporter image (turns the tracker's JSON stats into Prometheus metrics)."""

    def mutable(self) -> list[str]:
        """Images pinned by a tag that upstream moves (no digest): worth a warning, not an error."""
        result = []
        for value in self.model_dump().values():
            match = _IMAGE_REF.match(value)
            if match and not match.group("digest") and match.group("tag") in MUTABLE_TAGS:
                result.append(value)
        return result


class DataSettings(_Model):
    """The Hetzner Volume and Primary IPs that outlive the server."""

    volume_size: int = Field(default=20, ge=10, le=10240)
    """Size in GB of the data volume (10-10240; can grow, never shrink)."""
    # Hetzner delete protection and Pulumi `protect` on the volume and the primary IPs. Turn it off
    # only for throwaway stacks that `pulumi destroy` must remove completely.
    delete_protection: bool = True
    """Hetzner delete protection and Pulumi protect on the volume and the primary IPs; false only for
    throwaway stacks that pulumi destroy must remove."""


# Longest suffix components/host.py appends to the server name (SSH keys: -operator-<index>).
DERIVED_NAME_SUFFIX = "-operator-99"

_ON_CALENDAR = re.compile(r"^[A-Za-z0-9*:,./~ -]{1,64}$")


def _on_calendar(value: str) -> str:
    # The characters check keeps the value safe to render into a timer unit; the grammar is
    # systemd's own (core/oncalendar.py).
    example = "a systemd OnCalendar expression such as '*-*-* 03:15:00' or 'daily'"
    if not _ON_CALENDAR.match(value):
        raise ValueError(f"'{value}' is not {example}")
    try:
        check_calendar(value)
    except CalendarError as exc:
        raise ValueError(f"'{value}' is not {example} ({exc})") from None
    return value


OnCalendar = Annotated[str, AfterValidator(_on_calendar)]

# Storage Box locations (Falkenstein, Helsinki); the Hetzner API has the final word.
STORAGE_BOX_LOCATIONS = ("fsn1", "hel1")
_STORAGE_BOX_TYPE = re.compile(r"^bx[0-9]{2}$")
# restic repository locations we document and test (sftp: tested against OpenSSH's sshd).
_RESTIC_REPOSITORY = re.compile(r"^(sftp:|s3:|rest:|b2:|azure:|gs:|swift:|rclone:)\S+$")
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_SECRET_KEY = re.compile(r"^[a-z][A-Za-z0-9]{2,63}$")
# Set by the scripts themselves; a credential must not override them.
_RESERVED_ENV = ("RESTIC_REPOSITORY", "RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND")


class StorageBoxSettings(_Model):
    """A Hetzner Storage Box the program creates (hcloud.StorageBox, api.hetzner.com)."""

    type: str = "bx11"
    """Storage Box type (bx11, bx21, ...)."""
    location: str = "fsn1"
    """Storage Box location (fsn1 or hel1)."""

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if not _STORAGE_BOX_TYPE.match(value):
            raise ValueError(f"'{value}' is not a Storage Box type such as 'bx11' or 'bx21'")
        return value

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        if value not in STORAGE_BOX_LOCATIONS:
            raise ValueError(f"'{value}' has no Storage Boxes; use one of {', '.join(STORAGE_BOX_LOCATIONS)}")
        return value


class OffsiteSettings(_Model):
    """Off-site copies of the local backups with restic (docs/backup-restore.md)."""

    # none: local backups only; storageBox: a Storage Box the program creates; restic: any restic
    # repository the operator already has (`repository` plus `credentials`).
    kind: Literal["none", "storageBox", "restic"] = "none"
    """Off-site copies with restic: none, storageBox (a Hetzner Storage Box the program creates,
    delete-protected) or restic (your own repository)."""
    storage_box: StorageBoxSettings = Field(default_factory=StorageBoxSettings)
    """With kind storageBox:"""
    repository: str | None = None
    """With kind restic: the restic repository (sftp://user@host:port/path, s3:https://..., rest:https://...)."""
    # Environment variable restic reads -> top-level secret config key holding its value, e.g.
    # {AWS_ACCESS_KEY_ID: offsiteAwsAccessKeyId}. Each key must be set with --secret.
    credentials: dict[str, str] = Field(default_factory=dict)
    """With kind restic: environment variable restic reads -> top-level secret config key holding its
    value (set that key with --secret)."""
    keep_daily: int = Field(default=7, ge=1, le=366)
    """Daily snapshots kept by restic forget --prune after every push."""
    keep_weekly: int = Field(default=5, ge=0, le=520)
    """Weekly snapshots kept."""
    keep_monthly: int = Field(default=12, ge=0, le=1200)
    """Monthly snapshots kept."""
    # `restic check --read-data-subset` on its own timer.
    check_schedule: OnCalendar = "Sun *-*-* 05:00:00"
    """systemd OnCalendar expression of the restic check timer (UTC)."""
    check_subset: str = "5%"
    """restic check --read-data-subset value (a percentage or n/t)."""

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is not None and not _RESTIC_REPOSITORY.match(value):
            raise ValueError(
                f"'{value}' is not a restic repository such as 'sftp://user@host:23/torrust', "
                "'s3:https://host/bucket/torrust' or 'rest:https://host:8000/torrust'"
            )
        return value

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, value: dict[str, str]) -> dict[str, str]:
        for env, key in value.items():
            if not _ENV_NAME.match(env) or env in _RESERVED_ENV:
                raise ValueError(
                    f"'{env}' is not an environment variable name restic reads (nor a reserved one)"
                )
            if not _SECRET_KEY.match(key) or key in (
                *SECRET_MIN_LENGTHS,
                *STRUCTURED_KEYS,
                RESTIC_PASSWORD_KEY,
            ):
                raise ValueError(
                    f"'{key}' is not a free top-level config key name such as 'offsiteAwsSecretKey'"
                )
        return value

    @field_validator("check_subset")
    @classmethod
    def _subset(cls, value: str) -> str:
        # restic accepts n/t, a percentage or a size; we allow the percentage and n/t forms.
        if not re.fullmatch(r"(100|[1-9][0-9]?(\.[0-9]+)?)%|[1-9][0-9]*/[1-9][0-9]*", value):
            raise ValueError(f"'{value}' is not a restic --read-data-subset such as '5%' or '1/7'")
        return value

    @model_validator(mode="after")
    def _complete(self) -> OffsiteSettings:
        if self.kind == "restic" and not self.repository:
            raise ValueError("kind 'restic' needs a repository (backup.offsite.repository)")
        if self.kind != "restic" and (self.repository or self.credentials):
            raise ValueError("repository and credentials are only used with kind 'restic'")
        return self

    @property
    def enabled(self) -> bool:
        return self.kind != "none"


class BackupSettings(_Model):
    # systemd OnCalendar expression (see `man systemd.time`), in the server's time zone (UTC).
    schedule: OnCalendar = "*-*-* 03:15:00"
    """systemd OnCalendar expression of the on-server backup, in UTC (checked with systemd-analyze
    calendar where available)."""
    retention_days: int = Field(default=14, ge=1, le=365)
    """Days of backups kept on the volume (1-365)."""
    offsite: OffsiteSettings = Field(default_factory=OffsiteSettings)
    """Off-site backups."""


# Public resolvers the DNS gate asks, as Let's Encrypt resolves from the open internet.
DEFAULT_RESOLVERS = ("1.1.1.1", "8.8.8.8", "9.9.9.9")


class DnsSettings(_Model):
    """DNS as code (an existing Hetzner DNS zone) and the gate that waits for DNS before the edges."""

    # Name of an existing zone in the Hetzner Console (Cloud API zones); unset: DNS stays manual.
    zone: Fqdn | None = None
    """Existing zone in the Hetzner Console (Cloud API zones) holding every public name; unset: DNS
    stays manual."""
    # With a zone: create the A/AAAA/TXT/CAA records (false: the zone only names rDNS/docs).
    manage_records: bool = True
    """With a zone: create the A/AAAA/TXT/CAA records (false: the zone only names rDNS and docs)."""
    ttl: int = Field(default=300, ge=60, le=86400)
    """TTL in seconds of the managed records (60-86400)."""
    # Reverse DNS name of both Primary IPs; default: the UDP tracker name, else the API name.
    reverse_name: Fqdn | None = None
    """Reverse DNS name of both Primary IPs (unset: the UDP tracker name, else the API name)."""
    # The gate before Pingoo and nginx+certbot: how long to wait for DNS, or skip it entirely.
    gate_timeout: int = Field(default=1800, ge=60, le=21600)
    """Seconds the DNS gate waits before Pingoo and nginx+certbot start (60-21600)."""
    skip_gate: bool = False
    """Skip the DNS gate entirely."""
    resolvers: list[str] = Field(default_factory=lambda: list(DEFAULT_RESOLVERS), min_length=1, max_length=5)
    """IP addresses of the public DNS resolvers the gate asks (1-5)."""

    @field_validator("resolvers")
    @classmethod
    def _resolvers(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(
                    f"'{value}' is not an IP address of a DNS resolver such as 1.1.1.1"
                ) from None
        return values

    @property
    def managed(self) -> bool:
        return self.zone is not None and self.manage_records


_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$")


class EmailReceiver(_Model):
    """E-mail over SMTP; the password (if the server wants one) is the secret alertSmtpPassword."""

    to: list[str] = Field(min_length=1)
    """Recipient addresses."""
    sender: str = Field(alias="from")
    """Sender address."""
    smarthost: str
    """SMTP server as host:port."""
    username: str | None = None
    """SMTP user (the password is the secret alertSmtpPassword)."""
    # STARTTLS required (Alertmanager's default); port 465 means implicit TLS to Alertmanager.
    require_tls: bool = True
    """STARTTLS required (port 465 means implicit TLS)."""

    @field_validator("to")
    @classmethod
    def _to(cls, values: list[str]) -> list[str]:
        for value in values:
            _email_address(value)
        return values

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        return _email_address(value)

    @field_validator("smarthost")
    @classmethod
    def _smarthost(cls, value: str) -> str:
        match = _HOST_PORT.match(value)
        if not match or not 1 <= int(match.group("port")) <= 65535:
            raise ValueError(f"'{value}' is not host:port such as 'smtp.example.com:587'")
        return value


def _email_address(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError(f"'{value}' is not an e-mail address")
    return value


class TelegramReceiver(_Model):
    """Telegram bot messages to one chat; the bot token is the secret alertTelegramBotToken."""

    chat_id: int
    """Telegram chat ID (the bot token is the secret alertTelegramBotToken)."""


class SlackReceiver(_Model):
    """Optional channel override for the Slack incoming webhook (secret alertSlackWebhookUrl)."""

    channel: str | None = None
    """Channel override for the incoming webhook (secret alertSlackWebhookUrl)."""


class AlertThresholds(_Model):
    """When an alert fires (the numbers are explained in templates/prometheus/rules/)."""

    cert_warning_days: int = Field(default=14, ge=1, le=60)
    """Warn when a certificate expires within this many days."""
    cert_critical_days: int = Field(default=7, ge=1, le=30)
    """Critical when a certificate expires within this many days (below the warning)."""
    endpoint_down_minutes: int = Field(default=5, ge=1, le=60)
    """Minutes a public endpoint may fail its probe before the alert fires."""
    disk_used_percent: int = Field(default=85, ge=50, le=99)
    """Disk usage (percent) that fires the alert."""
    backup_max_age_hours: int = Field(default=26, ge=2, le=24 * 31)
    """Age in hours of the newest backup that fires the alert; raise it if backup.schedule is less
    than daily."""

    @model_validator(mode="after")
    def _ordered(self) -> AlertThresholds:
        if self.cert_critical_days >= self.cert_warning_days:
            raise ValueError(
                f"certCriticalDays ({self.cert_critical_days}) must be below certWarningDays "
                f"({self.cert_warning_days})"
            )
        return self


class AlertSettings(_Model):
    """Alert receivers (their secrets are top-level --secret keys, ALERT_SECRET_KEYS) and thresholds."""

    email: EmailReceiver | None = None
    """E-mail receiver over SMTP."""
    telegram: TelegramReceiver | None = None
    """Telegram bot receiver."""
    slack: SlackReceiver | None = None
    """Slack incoming-webhook receiver."""
    thresholds: AlertThresholds = Field(default_factory=AlertThresholds)
    """When alerts fire."""


class StackSettings(_Model):
    """Everything the program needs except secrets (which stay Pulumi Outputs)."""

    stack: str
    server: ServerSettings = Field(default_factory=ServerSettings)
    """The Hetzner Cloud server."""
    ssh: SshSettings
    """SSH access for the operator and for Pulumi."""
    domains: DomainSettings
    """Public DNS names (lowercase, under a public TLD)."""
    acme: AcmeSettings
    """Certificates from Let's Encrypt."""
    edge: EdgeSettings = Field(default_factory=EdgeSettings)
    """The public TLS edge: pingoo (the hybrid) or nginx."""
    tracker: TrackerSettings = Field(default_factory=TrackerSettings)
    """The Torrust tracker."""
    images: ImageSettings = Field(default_factory=ImageSettings)
    """Container images, pinned."""
    data: DataSettings = Field(default_factory=DataSettings)
    """The Hetzner Volume and Primary IPs that outlive the server."""
    backup: BackupSettings = Field(default_factory=BackupSettings)
    """Scheduled backups on the server."""
    dns: DnsSettings = Field(default_factory=DnsSettings)
    """DNS records: managed at a provider by this program, or created by hand."""
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    """Alerting: Alertmanager receivers and what is probed."""

    @property
    def server_name(self) -> str:
        return self.server.name or f"torrust-{self.stack}".lower().replace("_", "-")

    @model_validator(mode="after")
    def _pingoo_only(self) -> StackSettings:
        # As for edge.nginx: the CLI fills in Pulumi.yaml's default images, so only a Pingoo image
        # other than the default can be the operator's choice (which the nginx edge would ignore).
        default = ImageSettings().pingoo
        if self.edge.kind != "pingoo" and self.images.pingoo != default:
            raise ValueError(
                f"'{self.images.pingoo}' is only used by the Pingoo edge, and edge.kind is "
                f"'{self.edge.kind}': Pingoo is not deployed"
                f"{FIX_MARK}pulumi config rm --path 'images.pingoo'   (or go back to the hybrid: "
                f"pulumi config set --path 'edge.kind' pingoo){KEY_MARK}images.pingoo"
            )
        return self

    @model_validator(mode="after")
    def _derived_names(self) -> StackSettings:
        # Hetzner names the server after a hostname label (RFC 1123: at most 63 characters), and the
        # other resources after the server (components/host.py: -firewall, -data, -ipv4/-ipv6,
        # -operator-<n>); the longest derived name must fit as well.
        longest = f"{self.server_name}{DERIVED_NAME_SUFFIX}"
        if len(longest) > 63:
            source = "server.name" if self.server.name else f"the stack name '{self.stack}'"
            raise ValueError(
                f"server name '{self.server_name}' (from {source}) is too long: '{longest}' has "
                f"{len(longest)} characters, at most 63 are allowed"
                f"{FIX_MARK}pulumi config set --path 'server.name' torrust-prod   (at most "
                f"{63 - len(DERIVED_NAME_SUFFIX)} characters){KEY_MARK}server.name"
            )
        return self


# Example values used in the "how to fix" line of each error, keyed by top-level key.
_FIX_EXAMPLES: dict[str, str] = {
    # Errors about the type and location together (the pair is checked on `server` as a whole).
    "server": "pulumi config set --path 'server.type' cpx22   (sold in every location; or change"
    " server.location)",
    "server.type": "pulumi config set --path 'server.type' cx23",
    "server.location": "pulumi config set --path 'server.location' nbg1",
    "server.image": "pulumi config set --path 'server.image' docker-ce",
    "server.name": "pulumi config set --path 'server.name' torrust-prod",
    "ssh": "pulumi config set --path 'ssh.publicKeys[0]' \"$(cat ~/.ssh/id_ed25519.pub)\"",
    "ssh.publicKeys": "pulumi config set --path 'ssh.publicKeys[0]' \"$(cat ~/.ssh/id_ed25519.pub)\"",
    "ssh.existingKeys": "pulumi config set --path 'ssh.existingKeys[0]' my-laptop   (a name or ID"
    " from `hcloud ssh-key list`)",
    "ssh.allowedCidrs": "pulumi config set --path 'ssh.allowedCidrs[0]' 198.51.100.7/32",
    "ssh.privateKeyFile": "pulumi config set --path 'ssh.privateKeyFile' ~/.ssh/id_ed25519",
    "ssh.allowFromAnywhere": "pulumi config set --path 'ssh.allowFromAnywhere' false",
    "ssh.user": "pulumi config rm --path 'ssh.user'",
    "domains": "pulumi config set --path 'domains.trackerApi' api.example.com",
    "domains.trackerApi": "pulumi config set --path 'domains.trackerApi' api.example.com",
    "domains.httpTrackers": "pulumi config set --path 'domains.httpTrackers[0]' http1.example.com",
    "domains.grafana": "pulumi config set --path 'domains.grafana' grafana.example.com",
    "domains.udpTracker": "pulumi config set --path 'domains.udpTracker' udp1.example.com",
    "acme": "pulumi config set --path 'acme.email' admin@tracker.example.org",
    "acme.email": "pulumi config set --path 'acme.email' you@your-domain.org",
    "acme.staging": "pulumi config set --path 'acme.staging' true",
    "edge": "pulumi config set --path 'edge.kind' nginx   (or pingoo, the default)",
    "edge.kind": "pulumi config set --path 'edge.kind' nginx   (or pingoo, the default)",
    "edge.nginx.requestsPerSecond": "pulumi config set --path 'edge.nginx.requestsPerSecond' 10",
    "edge.nginx.requestBurst": "pulumi config set --path 'edge.nginx.requestBurst' 100",
    "edge.nginx.connectionsPerAddress": "pulumi config set --path 'edge.nginx.connectionsPerAddress' 64",
    "tracker.private": "pulumi config set --path 'tracker.private' false",
    "tracker.udpPorts": "pulumi config set --path 'tracker.udpPorts[0]' 6969",
    "tracker.database": "pulumi config set --path 'tracker.database' sqlite3",
    "tracker.announceInterval": "pulumi config set --path 'tracker.announceInterval' 300",
    "tracker.logLevel": "pulumi config set --path 'tracker.logLevel' info",
    "server.backups": "pulumi config set --path 'server.backups' true",
    "data.volumeSize": "pulumi config set --path 'data.volumeSize' 20",
    "data.deleteProtection": "pulumi config set --path 'data.deleteProtection' true",
    "backup.schedule": "pulumi config set --path 'backup.schedule' '*-*-* 03:15:00'",
    "backup.retentionDays": "pulumi config set --path 'backup.retentionDays' 14",
    "dns": "pulumi config set --path 'dns.zone' example.com",
    "dns.zone": "pulumi config set --path 'dns.zone' example.com",
    "dns.manageRecords": "pulumi config set --path 'dns.manageRecords' true",
    "dns.ttl": "pulumi config set --path 'dns.ttl' 300",
    "dns.reverseName": "pulumi config set --path 'dns.reverseName' udp1.example.com",
    "dns.gateTimeout": "pulumi config set --path 'dns.gateTimeout' 1800",
    "dns.skipGate": "pulumi config set --path 'dns.skipGate' false",
    "dns.resolvers": "pulumi config set --path 'dns.resolvers[0]' 1.1.1.1",
    "alerts": "pulumi config set --path 'alerts.email.to[0]' ops@example.com",
    "alerts.email": "pulumi config set --path 'alerts.email.smarthost' smtp.example.com:587",
    "alerts.email.to": "pulumi config set --path 'alerts.email.to[0]' ops@example.com",
    "alerts.email.from": "pulumi config set --path 'alerts.email.from' alerts@example.com",
    "alerts.email.smarthost": "pulumi config set --path 'alerts.email.smarthost' smtp.example.com:587",
    "alerts.telegram.chatId": "pulumi config set --path 'alerts.telegram.chatId' -1001234567890",
    "alerts.thresholds.certWarningDays": "pulumi config set --path 'alerts.thresholds.certWarningDays' 14",
    "alerts.thresholds.certCriticalDays": "pulumi config set --path 'alerts.thresholds.certCriticalDays' 7",
    "alerts.thresholds.diskUsedPercent": "pulumi config set --path 'alerts.thresholds.diskUsedPercent' 85",
    "alerts.thresholds.backupMaxAgeHours": (
        "pulumi config set --path 'alerts.thresholds.backupMaxAgeHours' 26"
    ),
    "backup.offsite": "pulumi config set --path 'backup.offsite.kind' storageBox",
    "backup.offsite.kind": "pulumi config set --path 'backup.offsite.kind' storageBox",
    "backup.offsite.storageBox.type": "pulumi config set --path 'backup.offsite.storageBox.type' bx11",
    "backup.offsite.storageBox.location": (
        "pulumi config set --path 'backup.offsite.storageBox.location' fsn1"
    ),
    "backup.offsite.repository": "pulumi config set --path 'backup.offsite.repository' sftp://user@host:23/torrust",
    "backup.offsite.credentials": (
        "pulumi config set --path 'backup.offsite.credentials.AWS_ACCESS_KEY_ID' offsiteAwsAccessKeyId"
    ),
    "backup.offsite.keepDaily": "pulumi config set --path 'backup.offsite.keepDaily' 7",
    "backup.offsite.keepWeekly": "pulumi config set --path 'backup.offsite.keepWeekly' 5",
    "backup.offsite.keepMonthly": "pulumi config set --path 'backup.offsite.keepMonthly' 12",
    "backup.offsite.checkSchedule": (
        "pulumi config set --path 'backup.offsite.checkSchedule' 'Sun *-*-* 05:00:00'"
    ),
    "backup.offsite.checkSubset": "pulumi config set --path 'backup.offsite.checkSubset' 5%",
}

_IMAGE_EXAMPLES = {
    "pingoo": "pingooio/pingoo:0.14.7",
    "nginxCertbot": "jonasal/nginx-certbot:6.2.0-nginx1.31.2",
    "tracker": TRACKER_IMAGE,
    "prometheus": "prom/prometheus:v3.13.3",
    "grafana": "grafana/grafana:12.4.14",
    "blackboxExporter": "prom/blackbox-exporter:v0.28.0",
    "nodeExporter": "prom/node-exporter:v1.12.1",
    "alertmanager": "prom/alertmanager:v0.34.0",
    "jsonExporter": "prometheuscommunity/json-exporter:v0.7.0",
}


def _fix_for(path: str) -> str:
    if path.startswith("images."):
        name = path.split(".", 1)[1]
        return f"pulumi config set --path '{path}' {_IMAGE_EXAMPLES.get(name, '<repository>:<version>')}"
    candidates = [key for key in _FIX_EXAMPLES if path == key or path.startswith(key + ".")]
    if candidates:
        return _FIX_EXAMPLES[max(candidates, key=len)]
    top = path.split(".")[0].split("[")[0]
    if top in _FIX_EXAMPLES:
        return _FIX_EXAMPLES[top]
    return f"pulumi config set --path '{path}' <value>   (or remove it: pulumi config rm --path '{path}')"


def _key_path(loc: tuple[str | int, ...]) -> str:
    # pydantic reports locations by alias, so the parts already are the camelCase config keys.
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else ("." if path else "") + part
    return path


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The settings model class that holds the key at `loc` (by alias), for "did you mean"."""
    model: type[BaseModel] = StackSettings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def known_keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items() if name != "stack"]


def did_you_mean(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        close = [lowered[key.lower()]] if key.lower() in lowered else []
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(candidates)}"


def _format_errors(error: ValidationError) -> str:
    lines = ["Invalid stack configuration:"]
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if part != "stack")
        path = _key_path(loc)
        message = item["msg"].removeprefix("Value error, ")
        if KEY_MARK in message:
            message, path = message.split(KEY_MARK, 1)
        specific_fix = None
        if FIX_MARK in message:
            message, specific_fix = message.split(FIX_MARK, 1)
        if item["type"] == "missing":
            message = "is required but not set"
        elif item["type"] == "extra_forbidden":
            model = _model_at(loc)
            hint = did_you_mean(str(loc[-1]), known_keys(model)) if model else ""
            message = f"is not a known setting{hint}"
        index_free = re.sub(r"\[\d+\]$", "", path)
        fix = _fix_for(index_free)
        if item["type"] == "extra_forbidden":
            fix = f"pulumi config rm --path '{path}'"
        if specific_fix is not None:
            fix = specific_fix.replace("{path}", path)
        lines.append(f"  - {PROJECT}:{path}: {message}\n      fix: {fix}")
    return "\n".join(lines)


ConfigReader = Callable[[str], Any]

# Keys of other namespaces (providers) that hold credentials: they must be Pulumi secrets too.
_SECRET_LIKE = re.compile(r"token|password|passphrase|secret|api_?key|private_?key|credential", re.I)


def check_config_keys(
    keys: Iterable[str], is_secret: Callable[[str], bool], extra_known: Iterable[str] = ()
) -> list[str]:
    """Problems with the set of configured keys (names only: values of other namespaces are never
    read, so whatever they hold cannot take the program down).

    Every key of our namespace must be a known setting (a typo would be silently ignored), and a
    credential of any namespace (`hcloud:token`) must not sit in plain text in the stack file.
    ``extra_known`` are the secret keys the settings name themselves (backup.offsite.credentials).
    """
    known = sorted(
        set(STRUCTURED_KEYS)
        | set(known_keys(StackSettings))
        | set(SECRET_KEYS)
        | set(ALERT_SECRET_KEYS)
        | {RESTIC_PASSWORD_KEY}
        | set(extra_known)
    )
    problems: list[str] = []
    for full_key in sorted(set(keys)):
        namespace, _, name = full_key.partition(":")
        if namespace == PROJECT and name not in known:
            problems.append(
                f"  - {full_key}: is not a known setting{did_you_mean(name, known)}\n"
                f"      fix: pulumi config rm {shlex.quote(name)}"
            )
        elif namespace != PROJECT and _SECRET_LIKE.search(name) and not is_secret(full_key):
            problems.append(
                f"  - {full_key}: is stored in plain text in the stack file\n"
                f"      fix: pulumi config set --secret {full_key} <value>   (then rotate it: it was exposed)"
            )
    return problems


def _plain_value_fix(key: str) -> str:
    """The fix for a top-level key set to a plain value (`pulumi config set edge nginx`): the value
    goes away first, then the setting goes where it belongs."""
    return f"pulumi config rm {key} && {_fix_for(key)}"


def load_settings(stack: str, read_object: ConfigReader) -> StackSettings:
    """Build StackSettings from the structured config keys; raise ConfigError for the operator.

    ``read_object(key)`` returns the parsed value of ``<project>:<key>`` or None when unset
    (``pulumi.Config().get_object`` in the program, a dict lookup in tests and the offline plan).
    """
    raw: dict[str, Any] = {"stack": stack}
    problems: list[str] = []
    for key in STRUCTURED_KEYS:
        try:
            value = read_object(key)
        except Exception as exc:  # pulumi raises ConfigTypeError for a non-object value
            problems.append(
                f"  - {PROJECT}:{key}: must be a structured value ({exc})\n      fix: {_plain_value_fix(key)}"
            )
            continue
        if value is None:
            continue
        if not isinstance(value, Mapping):
            problems.append(
                f"  - {PROJECT}:{key}: must be an object with named settings, got {type(value).__name__}\n"
                f"      fix: {_plain_value_fix(key)}"
            )
            continue
        raw[key] = dict(value)
    if problems:
        raise ConfigError("Invalid stack configuration:\n" + "\n".join(problems))
    try:
        settings = StackSettings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None
    outside = names_outside_zone(settings)
    if outside:
        raise ConfigError("Invalid stack configuration:\n" + "\n".join(outside))
    return settings


def in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def names_outside_zone(settings: StackSettings) -> list[str]:
    """A managed zone can only hold its own names: each stray one is refused with its key."""
    zone = settings.dns.zone
    if zone is None or not settings.dns.manage_records:
        return []
    domains = settings.domains
    keyed = [("domains.trackerApi", domains.tracker_api)]
    keyed += [(f"domains.httpTrackers[{i}]", name) for i, name in enumerate(domains.http_trackers)]
    keyed += [("domains.grafana", domains.grafana)]
    if domains.udp_tracker:
        keyed.append(("domains.udpTracker", domains.udp_tracker))
    problems = []
    for key, name in keyed:
        if not in_zone(name, zone):
            problems.append(
                f"  - {PROJECT}:{key}: '{name}' is outside the DNS zone '{zone}' (dns.zone), so the "
                "program cannot create its records\n"
                f"      fix: pulumi config set --path '{key}' <name>.{zone}"
                f"   (or pulumi config set --path 'dns.manageRecords' false and create it by hand)"
            )
    return problems


def check_secret_value(key: str, value: str | None, *, min_length: int) -> str | None:
    """Validate a configured secret's plaintext without ever putting it in the message.

    An unset secret is fine: the program generates one (components/secrets.py).
    """
    fix = f'pulumi config set --secret {key} "$(openssl rand -hex 24)"   (or rm it to generate one)'
    if value is None:
        return None
    if len(value) < min_length:
        return f"  - {PROJECT}:{key}: is too short (at least {min_length} characters)\n      fix: {fix}"
    if any(ch.isspace() for ch in value) or not value.isprintable():
        return f"  - {PROJECT}:{key}: must not contain whitespace or control characters\n      fix: {fix}"
    if key in URL_SAFE_SECRETS and any(ch in URL_QUERY_SPECIAL for ch in value):
        return (
            f"  - {PROJECT}:{key}: must not contain any of {' '.join(URL_QUERY_SPECIAL)} "
            f"(it is sent in a URL query)\n      fix: {fix}"
        )
    return None


def configured_receivers(settings: StackSettings, secrets: Collection[str]) -> list[str]:
    """Names of the receivers that will get alerts (`secrets`: the alert secret keys that are set)."""
    alerts = settings.alerts
    names = []
    if alerts.email is not None:
        names.append("email")
    if "alertWebhookUrl" in secrets:
        names.append("webhook")
    if "alertDiscordWebhookUrl" in secrets:
        names.append("discord")
    if "alertSlackWebhookUrl" in secrets:
        names.append("slack")
    if "alertTelegramBotToken" in secrets and alerts.telegram is not None:
        names.append("telegram")
    return names
