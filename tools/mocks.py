"""Pulumi mocks shared by the unit tests and the offline plan.

``DeploymentMocks`` answers every computed output the program reads (server IPs, numeric hcloud
IDs, the generated host key, command output) with documentation-range example values.
``RecordingMonitor`` keeps what the engine would receive for every resource: type, name, parent,
inputs exactly as serialized (camelCase keys, secrets still marked) and the resource options.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import pulumi
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import mocks as pulumi_mocks

SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
SECRET_MASK = "[secret]"
# hcloud_server attributes with ForceNew (research/pulumi.md §4.2).
SERVER_REPLACING_INPUTS = ("image", "location", "datacenter", "userData", "sshKeys")
UNKNOWN_MASK = "[unknown]"

EXAMPLE_IPV4 = "203.0.113.10"
EXAMPLE_IPV6 = "2001:db8:10::1"
# Not a usable key: the plan shows where the generated host key goes, never a real one.
EXAMPLE_HOST_PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "PLAN-PLACEHOLDER-generated-by-pulumi-tls-at-up-time\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
EXAMPLE_ZONE_NAMESERVERS = ("hydrogen.ns.hetzner.com.", "oxygen.ns.hetzner.com.", "helium.ns.hetzner.de.")
GENERATED_PASSWORD = "plan-placeholder-generated-by-pulumi-random"
EXAMPLE_EXISTING_PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlanPlaceholderKeyAlreadyInTheProject000"
EXAMPLE_STORAGE_BOX_USER = "u000000"
EXAMPLE_STORAGE_BOX_SERVER = "u000000.your-storagebox.de"
EXAMPLE_HOST_PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlanPlaceholderHostKeyGeneratedAtUpTime0000"


class DeploymentMocks(pulumi.runtime.Mocks):
    """Deterministic outputs for every computed property the program uses."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs: dict[str, Any] = dict(args.inputs)
        # hcloud IDs are integers (the program converts them with int()). Derive them from the name,
        # not from a counter: registration order varies between runs, and an ID that moves would show
        # up in plan diffs as a changed (ForceNew) server input.
        identity = args.name
        if args.typ == "hcloud:index/server:Server":
            # A replaced server gets a new ID, as in Hetzner: derive it from the inputs that force a
            # replacement, so that the plan shows everything that follows from it.
            replacing = [args.inputs.get(key) for key in SERVER_REPLACING_INPUTS]
            identity += json.dumps(replacing, sort_keys=True, default=str)
        resource_id = (
            str(1000 + zlib.crc32(identity.encode()) % 900000)
            if args.typ.startswith("hcloud:")
            else f"{args.name}-id"
        )
        if args.typ == "hcloud:index/server:Server":
            outputs.update(
                ipv4Address=EXAMPLE_IPV4,
                ipv6Address=EXAMPLE_IPV6,
                ipv6Network="2001:db8:10::/64",
                status="running",
            )
        elif args.typ == "hcloud:index/primaryIp:PrimaryIp":
            ipv4 = args.inputs.get("type") == "ipv4"
            outputs.update(ipAddress=EXAMPLE_IPV4 if ipv4 else EXAMPLE_IPV6)
            if not ipv4:
                outputs.update(ipNetwork="2001:db8:10::/64")
        elif args.typ == "tls:index/privateKey:PrivateKey":
            outputs.update(
                privateKeyOpenssh=EXAMPLE_HOST_PRIVATE_KEY,
                publicKeyOpenssh=EXAMPLE_HOST_PUBLIC_KEY + "\n",
                privateKeyPem=EXAMPLE_HOST_PRIVATE_KEY,
                publicKeyFingerprintSha256="SHA256:plan-placeholder",
            )
        elif args.typ == "command:remote:Command":
            outputs.update(stdout="docker 28.2.2 ready", stderr="")
            # A command re-created by its triggers gets a new ID (as pulumi-command does).
            triggers = json.dumps(args.inputs.get("triggers"), sort_keys=True, default=str)
            resource_id = f"{args.name}-{zlib.crc32(triggers.encode()):08x}"
        elif args.typ == "docker:index/remoteImage:RemoteImage":
            outputs.update(
                imageId=f"sha256:{'0' * 64}", repoDigest=f"{args.inputs.get('name')}@sha256:{'0' * 64}"
            )
        elif args.typ == "hcloud:index/storageBox:StorageBox":
            # The Hetzner API assigns the main user and its host (u<id>.your-storagebox.de).
            outputs.update(username=EXAMPLE_STORAGE_BOX_USER, server=EXAMPLE_STORAGE_BOX_SERVER)
        elif args.typ == "random:index/randomPassword:RandomPassword":
            outputs.update(result=GENERATED_PASSWORD)
        return resource_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == "hcloud:index/getSshKey:getSshKey":
            # An SSH key already in the Hetzner project (ssh.existingKeys), as the provider's data
            # source returns it: looked up by `id` or by `name`.
            ref = args.args.get("id") or args.args.get("name")
            key_id = (
                int(ref) if isinstance(ref, (int, float)) else 1000 + zlib.crc32(str(ref).encode()) % 900000
            )
            name = args.args.get("name") or f"existing-key-{key_id}"
            return {
                "id": key_id,
                "name": name,
                "fingerprint": "00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00",
                "publicKey": EXAMPLE_EXISTING_PUBLIC_KEY,
                "labels": {},
            }, []
        if args.token == "hcloud:index/getZone:getZone":
            # An existing primary zone, as the Cloud API describes it (Hetzner's nameservers).
            name = args.args.get("name") or "example.com"
            return {
                "id": 1000 + zlib.crc32(name.encode()) % 900000,
                "name": name,
                "mode": "primary",
                "ttl": 3600,
                "deleteProtection": False,
                "labels": {},
                "registrar": "other",
                "primaryNameservers": [],
                "authoritativeNameservers": {"assigneds": list(EXAMPLE_ZONE_NAMESERVERS)},
            }, []
        return {}, []


@dataclass
class Registration:
    """One resource as the engine would receive it."""

    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


def _integral(value: Any) -> Any:
    """Whole floats as ints, everywhere in a decoded Struct.

    The engine receives inputs as a protobuf Struct, whose only number type is a double, so a port
    of 443 arrives as 443.0; the provider converts it back to its schema's integer. The plan shows
    what the program meant: an integral number is an int (a fractional one stays a float).
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


def struct_to_python(value: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = _integral(json_format.MessageToDict(value))
    return result


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG_KEY) == SECRET_SIG


def reveal(value: Any) -> Any:
    """The value with every secret marker removed (for files written from placeholders)."""
    if is_secret(value):
        return reveal(value.get("value"))
    if isinstance(value, dict):
        return {key: reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [reveal(item) for item in value]
    return value


def masked(value: Any) -> Any:
    """The value with every secret replaced by "[secret]" and unknowns by "[unknown]"."""
    if is_secret(value):
        return SECRET_MASK
    if value == UNKNOWN:
        return UNKNOWN_MASK
    if isinstance(value, dict):
        return {key: masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item) for item in value]
    return value


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A MockMonitor that also records every registration with its options."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # The engine does not put the root stack's type into its children's URNs; the stock mock
        # does (`pulumi:pulumi:Stack$torrust:index:Host`). Match the engine, so that URNs in the plan
        # are the ones `pulumi preview` shows.
        if parent and parent.split("::")[2] == "pulumi:pulumi:Stack":
            parent = ""
        urn: str = super().make_urn(parent, type_, name)
        return urn

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                Registration(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    custom=bool(request.custom),
                    inputs=struct_to_python(request.object),
                    options={
                        "protect": bool(request.protect) if request.HasField("protect") else False,
                        "deleteBeforeReplace": bool(request.deleteBeforeReplace),
                        "ignoreChanges": list(request.ignoreChanges),
                        "replaceOnChanges": list(request.replaceOnChanges),
                        "retainOnDelete": bool(request.retainOnDelete)
                        if request.HasField("retainOnDelete")
                        else False,
                        "dependsOn": sorted(set(request.dependencies)),
                        # The engine sends "<provider urn>::<provider id>".
                        "provider": request.provider.rsplit("::", 1)[0] if request.provider else "",
                        "additionalSecretOutputs": list(request.additionalSecretOutputs),
                    },
                )
            )
        return response

    def by_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def one(self, type_: str, name: str) -> Registration:
        matches = [r for r in self.registrations if r.type == type_ and r.name == name]
        if len(matches) != 1:
            raise LookupError(f"expected one {type_} named {name}, found {len(matches)}")
        return matches[0]
