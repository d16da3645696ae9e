"""Offline plan diff: `make plan-diff BASE=<git ref> [STACK=dev]`.

Renders the offline plan (tools/plan.py, mocks, no cloud) of BASE in a temporary `git worktree`,
running that tree's own tools/plan.py with this Python, and of the working tree (or of --head), and
prints Markdown for a pull-request comment: resources added, removed, changed; the changed inputs
(dotted paths, old -> new, truncated, secrets stay "[secret]"); the replacements the providers will
do (docker Container ForceNew fields, hcloud Server image/location/userData/sshKeys, ...,
options.replaceOnChanges, a changed URN); the changes a provider records but never applies (a
container's healthcheck without replaceOnChanges, a volume's format); unified diffs of every
rendered file. `--json` prints a
machine-readable summary instead.

What it cannot see: the value of a secret. plan.json shows secrets as "[secret]" and the rendered
files carry only `<plan-placeholder:KEY>`, so a changed secret value never shows as a changed input.
The tool compares the `secure:` ciphertexts of Pulumi.<stack>.yaml instead and names the files that
embed each changed secret and every resource that has secret inputs. Computed outputs (IDs, IPs)
are fixed mock values: a replaced resource's dependents are listed as "may change as a consequence".
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- torrust-hybrid-tls:plan-diff -->"
SECRET_MASK = "[secret]"  # tools.mocks.SECRET_MASK (not imported: this tool must not need pulumi)
UNKNOWN_MASK = "[unknown]"
RENDERED_FILE = "(rendered file)"
ABSENT = object()
MAX_VALUE_CHARS = 80
MAX_DIFF_LINES = 400
DEFAULT_MAX_CHARS = 60_000  # GitHub comments are limited to 65,536 characters

SERVER_TYPE = "hcloud:index/server:Server"
CONTAINER_TYPE = "docker:index/container:Container"
PLACEHOLDER_RE = re.compile(r"(?:<|\\u003c|&lt;)plan-placeholder:([A-Za-z0-9_.-]+)(?:>|\\u003e|&gt;)")

Json = Any
Path_ = tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Replacement rules, read from the providers' sources (names are the engine's input names:
# camelCase, pluralised lists; top-level only). Each input falls in one class:
#   force_new    the schema says ForceNew / RequiresReplace: a change replaces the resource;
#   in_place     the provider's Update applies it to the real object;
#   provider     a setting of the provider itself (read at Create/Delete/Read time): stored, nothing
#                on the real object changes, nothing needs to;
#   not_applied  neither ForceNew nor handled by Update: the engine records an update, the real object
#                keeps the old value until it is replaced (use replaceOnChanges or `up --replace`).
# A resource without an Update function (`no_update`) fails every non-ForceNew change at `pulumi up`:
# terraform-plugin-sdk v2.40.1 helper/schema/resource.go Apply returns "doesn't support update".
# Sources: kreuzwerker/terraform-provider-docker v4.5.0 (what pulumi-docker wraps; the stored
# pulumi-docker snapshot, Aug 2026, pins it) internal/provider/resource_docker_{container,image,network}.go
# (schema) and resource_docker_container_funcs.go resourceDockerContainerUpdate (restart, max_retry_count,
# cpu_shares, memory, memory_reservation, cpu_set, memory_swap, device_* only; must_run false->true
# starts it); hetznercloud/terraform-provider-hcloud v1.66.1 (pulumi-hcloud provider/go.mod)
# internal/server/resource.go, internal/volume/resource.go (Update: name, server_id, size, labels,
# delete_protection), internal/volume/resource_attachment.go (no Update), internal/primaryip/resource.go,
# internal/sshkey/resource.go (RequiresReplace plan modifiers).


@dataclass(frozen=True)
class Rule:
    force_new: frozenset[str] = frozenset()
    in_place: frozenset[str] = frozenset()
    provider: frozenset[str] = frozenset()
    not_applied: frozenset[str] = frozenset()
    all_force_new: bool = False
    no_update: bool = False
    source: str = ""


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


RULES: dict[str, Rule] = {
    CONTAINER_TYPE: Rule(
        force_new=_names(
            "name image readOnly hostname domainname command entrypoints user dns dnsOpts dnsSearches"
            " publishAllPorts workingDir capabilities securityOpts runtime platform stopSignal stopTimeout"
            " mounts volumes ports hosts ulimits envs privileged devices deviceRequests labels shmSize"
            " logDriver logOpts networkMode networksAdvanced pidMode usernsMode uploads sysctls ipcMode"
            " groupAdds tty stdinOpen storageOpts gpus cpus cgroupnsMode cgroupParent"
        ),
        in_place=_names(
            "restart maxRetryCount cpuShares memory memoryReservation memorySwap cpuSet deviceReadBps"
            " deviceReadIops deviceWriteBps deviceWriteIops mustRun"
        ),
        provider=_names("destroyGraceSeconds removeVolumes containerReadRefreshTimeoutMilliseconds"),
        not_applied=_names("healthcheck init tmpfs cpuPeriod cpuQuota rm start wait waitTimeout attach logs"),
        source="terraform-provider-docker v4.5.0 resource_docker_container{,_funcs}.go",
    ),
    SERVER_TYPE: Rule(
        force_new=_names("image location datacenter userData sshKeys"),
        in_place=_names(
            "serverType backups iso rescue networks firewallIds labels placementGroupId deleteProtection"
            " rebuildProtection name publicNets"
        ),
        provider=_names("shutdownBeforeDeletion keepDisk allowDeprecatedImages ignoreRemoteFirewallIds"),
        source="terraform-provider-hcloud v1.66.1 internal/server/resource.go (ForceNew, Update)",
    ),
    "docker:index/network:Network": Rule(
        all_force_new=True, source="terraform-provider-docker v4.5.0 resource_docker_network.go: no update"
    ),
    "docker:index/remoteImage:RemoteImage": Rule(
        force_new=_names("name pullTriggers triggers build platform"),
        provider=_names("keepLocally forceRemove"),
        source="terraform-provider-docker v4.5.0 resource_docker_image.go (ForceNew)",
    ),
    "hcloud:index/volumeAttachment:VolumeAttachment": Rule(
        force_new=_names("volumeId serverId"),
        not_applied=_names("automount"),
        no_update=True,
        source="terraform-provider-hcloud v1.66.1 internal/volume/resource_attachment.go (no Update)",
    ),
    "hcloud:index/volume:Volume": Rule(
        force_new=_names("location"),
        in_place=_names("name size labels serverId deleteProtection"),
        not_applied=_names("automount format"),
        source="terraform-provider-hcloud v1.66.1 internal/volume/resource.go (resourceVolumeUpdate)",
    ),
    "hcloud:index/primaryIp:PrimaryIp": Rule(
        force_new=_names("type location datacenter"),
        in_place=_names("name labels autoDelete deleteProtection assigneeId assigneeType"),
        source="terraform-provider-hcloud v1.66.1 internal/primaryip/resource.go (RequiresReplace)",
    ),
    "hcloud:index/sshKey:SshKey": Rule(
        force_new=_names("publicKey"),
        in_place=_names("name labels"),
        source="terraform-provider-hcloud v1.66.1 internal/sshkey/resource.go (RequiresReplace)",
    ),
    "hcloud:index/firewall:Firewall": Rule(
        in_place=_names("name labels rules applyTos"), source="terraform-provider-hcloud firewall"
    ),
    "tls:index/privateKey:PrivateKey": Rule(
        all_force_new=True, source="terraform-provider-tls: RequiresReplace"
    ),
    "random:index/randomPassword:RandomPassword": Rule(
        all_force_new=True, source="terraform-provider-random: RequiresReplace"
    ),
    "command:remote:Command": Rule(
        force_new=_names("triggers"),
        in_place=_names("create update delete connection environment stdin logging addPreviousOutputInEnv"),
        source="pulumi-command: triggers replace, the rest re-runs the command",
    ),
}

NOT_APPLIED_NOTE = (
    "not applied: the provider has no update for it and it is not ForceNew, so the real resource keeps"
    " the old value until replaced (add it to replaceOnChanges, or `pulumi up --replace`)"
)
NO_UPDATE_NOTE = (
    'the provider has no update for this resource: `pulumi up` fails ("doesn\'t support update");'
    " replace it (`pulumi up --replace <URN>`)"
)

LIST_KEYS = ("file", "containerPath", "target", "name", "label", "description", "key")


# ---------------------------------------------------------------------------------------------
# Flattening and value formatting


def _list_key(items: list[Json]) -> str | None:
    """A field that identifies every item of a list of objects (uploads by file, networks by name)."""
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    for key in LIST_KEYS:
        values = [item.get(key) for item in items]
        if all(isinstance(v, str | int) and not isinstance(v, bool) for v in values) and len(
            set(values)
        ) == len(values):
            return key
    return None


def flatten(value: Json, prefix: Path_ = ()) -> dict[Path_, Json]:
    """Leaf paths of a JSON value. List items are keyed by an identifying field when there is one."""
    if isinstance(value, dict) and value:
        result: dict[Path_, Json] = {}
        for key, item in value.items():
            result.update(flatten(item, (*prefix, str(key))))
        return result
    if isinstance(value, list) and value:
        key = _list_key(value)
        result = {}
        for index, item in enumerate(value):
            segment = f"[{key}={item[key]}]" if key else f"[{index}]"
            result.update(flatten(item, (*prefix, segment)))
        return result
    return {prefix: value}


def dotted(path: Path_) -> str:
    text = ""
    for segment in path:
        text += segment if segment.startswith("[") or not text else f".{segment}"
    return text or "(root)"


def parse_pattern(pattern: str) -> Path_:
    """`triggers[*]`, `uploads[0].content`, `labels.*` -> path segments."""
    segments: list[str] = []
    for part in re.findall(r"\[[^\]]*\]|[^.\[\]]+", pattern):
        segments.append(part)
    return tuple(segments)


def path_matches(path: Path_, pattern: Path_) -> bool:
    """True when one is a prefix of the other, with `*` / `[*]` matching any segment."""
    for segment, wanted in zip(path, pattern, strict=False):
        if wanted in ("*", "[*]"):
            continue
        if wanted.startswith("[") and segment.startswith("["):
            # "[0]" only matches the index form; keyed segments "[file=...]" match "[*]" only.
            if wanted != segment:
                return False
            continue
        if wanted != segment:
            return False
    return True


def fmt(value: Json) -> str:
    """A short, readable rendering of one value; secrets stay masked."""
    if value is ABSENT:
        return "(absent)"
    if value == SECRET_MASK:
        return SECRET_MASK
    if value == UNKNOWN_MASK:
        return "(known after apply)"
    if value == RENDERED_FILE:
        return RENDERED_FILE
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    lines = text.splitlines()
    if len(lines) > 1:
        first = lines[0][: MAX_VALUE_CHARS - 20]
        return json.dumps(first + " …", ensure_ascii=False) + f" ({len(lines)} lines)"
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 20] + f"… ({len(text)} chars)"
    return json.dumps(text, ensure_ascii=False) if isinstance(value, str) else text


def mask_text(text: str) -> str:
    """Defence in depth for rendered files: hide PEM private key bodies that are not plan placeholders."""
    out: list[str] = []
    inside = False
    for line in text.splitlines(keepends=True):
        if re.match(r"\s*-----BEGIN [A-Z ]*PRIVATE KEY-----", line):
            inside = True
            out.append(line)
            continue
        if inside and re.match(r"\s*-----END [A-Z ]*PRIVATE KEY-----", line):
            inside = False
            out.append(line)
            continue
        if inside and "PLAN-PLACEHOLDER" not in line and "plan-placeholder" not in line:
            out.append(SECRET_MASK + ("\n" if line.endswith("\n") else ""))
            continue
        out.append(line)
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# The diff engine (pure: plans and file maps in, a PlanDiff out)


@dataclass
class Change:
    path: str
    old: Json
    new: Json
    forces_replacement: bool = False
    # "ForceNew", "replaceOnChanges", "in place", "provider setting", "not applied", "no update",
    # "unknown", "ignoreChanges"
    rule: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Json]:
        return {
            "path": self.path,
            "old": None if self.old is ABSENT else self.old,
            "new": None if self.new is ABSENT else self.new,
            "oldAbsent": self.old is ABSENT,
            "newAbsent": self.new is ABSENT,
            "forcesReplacement": self.forces_replacement,
            "rule": self.rule,
            "note": self.note,
        }


@dataclass
class ResourceDiff:
    urn: str
    type: str
    name: str
    action: str  # create | delete | replace | update | options
    reasons: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    option_changes: list[Change] = field(default_factory=list)
    secret_inputs: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    maybe_replace: bool = False
    not_applied: list[str] = field(default_factory=list)  # inputs the provider cannot apply
    delete_before_replace: bool = False
    old_urn: str = ""

    def to_json(self) -> dict[str, Json]:
        return {
            "urn": self.urn,
            "oldUrn": self.old_urn or None,
            "type": self.type,
            "name": self.name,
            "action": self.action,
            "maybeReplace": self.maybe_replace,
            "notApplied": self.not_applied,
            "deleteBeforeReplace": self.delete_before_replace,
            "reasons": self.reasons,
            "changes": [c.to_json() for c in self.changes],
            "optionChanges": [c.to_json() for c in self.option_changes],
            "secretInputs": self.secret_inputs,
            "files": self.files,
        }


@dataclass
class FileDiff:
    path: str  # "files/<resource>/<path>" or "cloud-init.yaml"
    status: str  # added | removed | modified
    resource: str
    diff: str

    def to_json(self) -> dict[str, Json]:
        return {"path": self.path, "status": self.status, "resource": self.resource, "diff": self.diff}


@dataclass
class SecretConfigChange:
    key: str
    status: str  # added | removed | changed
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Json]:
        return {"key": self.key, "status": self.status, "files": self.files}


@dataclass
class PlanDiff:
    stack: str
    base: str
    head: str
    resources: list[ResourceDiff] = field(default_factory=list)
    consequences: list[tuple[str, str, list[str]]] = field(default_factory=list)  # urn, name, because of
    files: list[FileDiff] = field(default_factory=list)
    outputs: list[Change] = field(default_factory=list)
    secret_config: list[SecretConfigChange] = field(default_factory=list)
    secret_consumers: list[tuple[str, list[str]]] = field(default_factory=list)  # name, secret paths
    notes: list[str] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for r in self.resources if r.action == action)

    @property
    def server_replacements(self) -> list[ResourceDiff]:
        return [r for r in self.resources if r.type == SERVER_TYPE and r.action in ("replace", "delete")]

    @property
    def resources_changed(self) -> bool:
        return bool(self.resources or self.files or self.outputs)

    @property
    def changed(self) -> bool:
        return self.resources_changed or bool(self.secret_config)

    def to_json(self) -> dict[str, Json]:
        return {
            "stack": self.stack,
            "base": self.base,
            "head": self.head,
            "changed": self.changed,
            "serverReplaced": bool(self.server_replacements),
            "counts": {a: self.count(a) for a in ("create", "delete", "replace", "update", "options")},
            "resources": [r.to_json() for r in self.resources],
            "consequences": [{"urn": u, "name": n, "because": b} for u, n, b in self.consequences],
            "files": [f.to_json() for f in self.files],
            "outputs": [c.to_json() for c in self.outputs],
            "secretConfig": [s.to_json() for s in self.secret_config],
            "secretConsumers": [{"name": n, "paths": p} for n, p in self.secret_consumers],
            "notes": self.notes,
        }


OPTION_NAMES = (
    "protect",
    "deleteBeforeReplace",
    "retainOnDelete",
    "ignoreChanges",
    "replaceOnChanges",
    "dependsOn",
)


def _classify(rtype: str, path: Path_, options: Mapping[str, Json]) -> tuple[bool, str]:
    """(forces replacement, rule) for one changed input path, before ignoreChanges."""
    for pattern in options.get("replaceOnChanges") or []:
        if path_matches(path, parse_pattern(str(pattern))):
            return True, f"replaceOnChanges `{pattern}`"
    rule = RULES.get(rtype)
    top = path[0] if path else ""
    if rule is None:
        return False, "unknown"
    if rule.all_force_new or top in rule.force_new:
        return True, "ForceNew"
    if rule.no_update and (top in rule.in_place | rule.provider | rule.not_applied):
        return False, "no update"
    if top in rule.in_place:
        return False, "in place"
    if top in rule.provider:
        return False, "provider setting"
    if top in rule.not_applied:
        return False, "not applied"
    return False, "unknown"


def _file_input_path(file_path: str, resource: Mapping[str, Json]) -> Path_ | None:
    """The input path a rendered file comes from: uploads[file=...].content or userData."""
    if file_path == "cloud-init.yaml":
        return ("userData",) if resource.get("type") == SERVER_TYPE else None
    parts = file_path.split("/", 2)
    if len(parts) < 3 or parts[0] != "files":
        return None
    return ("uploads", f"[file=/{parts[2]}]", "content")


def file_owner(file_path: str, resources: Iterable[Mapping[str, Json]]) -> Mapping[str, Json] | None:
    if file_path == "cloud-init.yaml":
        servers = [r for r in resources if r.get("type") == SERVER_TYPE]
        return servers[0] if len(servers) == 1 else None
    parts = file_path.split("/", 2)
    if len(parts) < 3:
        return None
    candidates = [r for r in resources if r.get("name") == parts[1]]
    containers = [r for r in candidates if r.get("type") == CONTAINER_TYPE]
    chosen = containers or candidates
    return chosen[0] if chosen else None


def unified(path: str, old: str | None, new: str | None) -> str:
    old_lines = mask_text(old or "").splitlines(keepends=True)
    new_lines = mask_text(new or "").splitlines(keepends=True)
    lines = list(
        difflib.unified_diff(
            old_lines,
            new_lines,
            fromfile=f"a/{path}" if old is not None else "/dev/null",
            tofile=f"b/{path}" if new is not None else "/dev/null",
        )
    )
    lines = [line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines]
    if len(lines) > MAX_DIFF_LINES:
        omitted = len(lines) - MAX_DIFF_LINES
        lines = [*lines[:MAX_DIFF_LINES], f"… {omitted} more diff lines omitted\n"]
    return "".join(lines)


def _by_urn(plan: Mapping[str, Json]) -> dict[str, Mapping[str, Json]]:
    return {str(r["urn"]): r for r in plan.get("resources") or []}


def _secret_paths(inputs: Json) -> list[str]:
    return [dotted(p) for p, v in flatten(inputs).items() if v == SECRET_MASK]


def _diff_options(old: Mapping[str, Json], new: Mapping[str, Json]) -> list[Change]:
    changes = []
    for name in (*OPTION_NAMES, "provider"):
        before, after = old.get(name, ABSENT), new.get(name, ABSENT)
        if (
            isinstance(before, list)
            and isinstance(after, list)
            and sorted(map(str, before)) == sorted(map(str, after))
        ):
            continue
        if before != after and not (
            before in (ABSENT, None, False, [], "") and after in (ABSENT, None, False, [], "")
        ):
            note = "a different provider can force a replacement" if name == "provider" else ""
            changes.append(Change(path=name, old=before, new=after, rule="option", note=note))
    return changes


def _diff_resource(
    old: Mapping[str, Json],
    new: Mapping[str, Json],
    old_files: Mapping[str, str],
    new_files: Mapping[str, str],
    changed_files: list[str],
) -> ResourceDiff | None:
    rtype = str(new["type"])
    options: Mapping[str, Json] = new.get("options") or {}
    ignored = [parse_pattern(str(p)) for p in options.get("ignoreChanges") or []]
    old_flat, new_flat = flatten(old.get("inputs") or {}), flatten(new.get("inputs") or {})
    changes: list[Change] = []
    seen: set[Path_] = set()
    hidden: list[str] = []

    def add(path: Path_, before: Json, after: Json, note: str = "") -> None:
        seen.add(path)
        if any(path_matches(path, pattern) for pattern in ignored):
            changes.append(
                Change(dotted(path), before, after, rule="ignoreChanges", note="ignored by the engine")
            )
            return
        replace, rule = _classify(rtype, path, options)
        changes.append(Change(dotted(path), before, after, forces_replacement=replace, rule=rule, note=note))

    file_inputs: dict[Path_, str] = {}
    for file_path in changed_files:
        input_path = _file_input_path(file_path, new)
        if input_path is not None:
            file_inputs[input_path] = file_path

    def add_file(path: Path_, file_path: str) -> None:
        secret = old_flat.get(path) == SECRET_MASK or new_flat.get(path) == SECRET_MASK
        label = SECRET_MASK if secret else RENDERED_FILE
        before = ABSENT if old_files.get(file_path) is None else label
        after = ABSENT if new_files.get(file_path) is None else label
        add(path, before, after, note=f"see the diff of `{file_path}` below")

    for path in sorted(set(old_flat) | set(new_flat), key=dotted):
        before, after = old_flat.get(path, ABSENT), new_flat.get(path, ABSENT)
        if path in file_inputs:
            add_file(path, file_inputs[path])
        elif before == after:
            if before == SECRET_MASK:
                hidden.append(dotted(path))
        else:
            add(path, before, after)
    for path, file_path in file_inputs.items():
        if path not in seen:
            add_file(path, file_path)
    files = list(changed_files)

    option_changes = _diff_options(old.get("options") or {}, options)
    effective = [c for c in changes if c.rule != "ignoreChanges"]
    if not effective and not option_changes:
        return None  # nothing, or only paths the engine ignores (ignoreChanges)
    replacing = [c for c in effective if c.forces_replacement]
    unknown = [c for c in effective if c.rule == "unknown"]
    stuck = [c for c in effective if c.rule in ("not applied", "no update")]
    if replacing:
        action = "replace"
    elif effective:
        action = "update"
    else:
        action = "options"
    reasons: list[str] = []
    tops = sorted({c.path.split(".")[0].split("[")[0] for c in replacing})
    if replacing:
        rules = sorted({c.rule for c in replacing})
        reasons.append(f"{', '.join(f'`{t}`' for t in tops)} changed ({'; '.join(rules)})")
    elif applied := [c for c in effective if c not in stuck]:
        reasons.append(
            "in place: " + ", ".join(sorted({f"`{c.path.split('.')[0].split('[')[0]}`" for c in applied}))
        )
    if unknown and not replacing:
        reasons.append(
            "no replacement rule known for "
            + ", ".join(sorted({f"`{c.path.split('.')[0].split('[')[0]}`" for c in unknown}))
            + ": `pulumi preview` decides"
        )
    stuck_tops = sorted({f"`{c.path.split('.')[0].split('[')[0]}`" for c in stuck})
    if stuck and not replacing:
        rule = RULES.get(rtype, Rule())
        reasons.append(
            f"⚠️ {', '.join(stuck_tops)}: " + (NO_UPDATE_NOTE if rule.no_update else NOT_APPLIED_NOTE)
        )
    if option_changes:
        reasons.append("options: " + ", ".join(f"`{c.path}`" for c in option_changes))
    if len(effective) < len(changes):
        reasons.append("some changes are ignored (ignoreChanges)")
    return ResourceDiff(
        urn=str(new["urn"]),
        type=rtype,
        name=str(new["name"]),
        action=action,
        reasons=reasons,
        changes=changes,
        option_changes=option_changes,
        secret_inputs=hidden,
        files=files,
        maybe_replace=bool(unknown) and not replacing,
        not_applied=[] if replacing else [c.path for c in stuck],
        delete_before_replace=bool(options.get("deleteBeforeReplace")),
    )


def _dependents(plan: Mapping[str, Json], roots: set[str]) -> dict[str, list[str]]:
    """urn -> the replaced roots it (transitively) depends on (dependsOn, provider, parent)."""
    edges: dict[str, set[str]] = {}
    for resource in plan.get("resources") or []:
        options = resource.get("options") or {}
        deps = set(options.get("dependsOn") or [])
        if options.get("provider"):
            deps.add(str(options["provider"]))
        edges[str(resource["urn"])] = deps
    result: dict[str, list[str]] = {}
    for urn in edges:
        if urn in roots:
            continue
        found: set[str] = set()
        stack, visited = [urn], set()
        while stack:
            current = stack.pop()
            for dep in edges.get(current, ()):
                if dep in roots:
                    found.add(dep)
                if dep not in visited:
                    visited.add(dep)
                    stack.append(dep)
        if found:
            result[urn] = sorted(found)
    return result


def diff_plans(
    base: Mapping[str, Json],
    head: Mapping[str, Json],
    base_files: Mapping[str, str] | None = None,
    head_files: Mapping[str, str] | None = None,
    *,
    stack: str = "",
    base_label: str = "base",
    head_label: str = "head",
) -> PlanDiff:
    """Compare two plan.json documents (and their rendered files, "files/..." and "cloud-init.yaml")."""
    old_files, new_files = dict(base_files or {}), dict(head_files or {})
    result = PlanDiff(
        stack=stack or str(head.get("stack") or base.get("stack") or ""), base=base_label, head=head_label
    )
    old_by_urn, new_by_urn = _by_urn(base), _by_urn(head)

    # Rendered files first: they are attributed to resources below.
    for path in sorted(set(old_files) | set(new_files)):
        before, after = old_files.get(path), new_files.get(path)
        if before == after:
            continue
        status = "added" if before is None else "removed" if after is None else "modified"
        owner = file_owner(path, new_by_urn.values()) or file_owner(path, old_by_urn.values())
        result.files.append(
            FileDiff(
                path=path,
                status=status,
                resource=str(owner["name"]) if owner else "",
                diff=unified(path, before, after),
            )
        )
    files_by_urn: dict[str, list[str]] = {}
    for file_diff in result.files:
        owner = file_owner(file_diff.path, new_by_urn.values())
        if owner is not None:
            files_by_urn.setdefault(str(owner["urn"]), []).append(file_diff.path)

    # URN moves: same type and name, different URN (parent chain changed) -> delete + create.
    removed = [u for u in old_by_urn if u not in new_by_urn]
    added = [u for u in new_by_urn if u not in old_by_urn]
    moved: dict[str, str] = {}
    for new_urn in added:
        new = new_by_urn[new_urn]
        for old_urn in removed:
            old = old_by_urn[old_urn]
            if old_urn not in moved.values() and (old["type"], old["name"]) == (new["type"], new["name"]):
                moved[new_urn] = old_urn
                break

    for urn, new in new_by_urn.items():
        if urn in old_by_urn:
            diff = _diff_resource(old_by_urn[urn], new, old_files, new_files, files_by_urn.get(urn, []))
            if diff is not None:
                result.resources.append(diff)
        elif urn in moved:
            old_urn = moved[urn]
            inner = _diff_resource(old_by_urn[old_urn], new, old_files, new_files, files_by_urn.get(urn, []))
            result.resources.append(
                ResourceDiff(
                    urn=urn,
                    old_urn=old_urn,
                    type=str(new["type"]),
                    name=str(new["name"]),
                    action="replace",
                    reasons=[
                        "URN changed (parent chain or name): the engine deletes the old resource and creates"
                        " a new one unless an alias maps the old URN"
                    ],
                    changes=inner.changes if inner else [],
                    option_changes=inner.option_changes if inner else [],
                    secret_inputs=inner.secret_inputs if inner else [],
                    files=files_by_urn.get(urn, []),
                    delete_before_replace=bool((new.get("options") or {}).get("deleteBeforeReplace")),
                )
            )
        else:
            result.resources.append(
                ResourceDiff(
                    urn=urn,
                    type=str(new["type"]),
                    name=str(new["name"]),
                    action="create",
                    files=files_by_urn.get(urn, []),
                    secret_inputs=_secret_paths(new.get("inputs") or {}),
                )
            )
    for urn in removed:
        if urn in moved.values():
            continue
        old = old_by_urn[urn]
        protected = bool((old.get("options") or {}).get("protect"))
        result.resources.append(
            ResourceDiff(
                urn=urn,
                type=str(old["type"]),
                name=str(old["name"]),
                action="delete",
                reasons=["protected: `pulumi up` will fail until `protect` is removed"] if protected else [],
            )
        )

    replaced = {r.urn for r in result.resources if r.action in ("replace", "delete")}
    replaced |= {r.old_urn for r in result.resources if r.old_urn}
    direct = {r.urn for r in result.resources}
    names = {u: str(r["name"]) for u, r in {**old_by_urn, **new_by_urn}.items()}
    for urn, because in sorted(_dependents(head, replaced).items(), key=lambda item: names.get(item[0], "")):
        if urn not in direct:
            result.consequences.append((urn, names.get(urn, urn), [names.get(b, b) for b in because]))

    old_outputs, new_outputs = flatten(base.get("outputs") or {}), flatten(head.get("outputs") or {})
    for output_path in sorted(set(old_outputs) | set(new_outputs), key=dotted):
        was, now = old_outputs.get(output_path, ABSENT), new_outputs.get(output_path, ABSENT)
        if was != now:
            result.outputs.append(Change(dotted(output_path), was, now, rule="output"))
    return result


def add_secret_config(
    result: PlanDiff,
    base_config: Mapping[str, str],
    head_config: Mapping[str, str],
    head_plan: Mapping[str, Json],
    head_files: Mapping[str, str],
) -> None:
    """Report `secure:` stack config whose ciphertext changed, and who consumes secrets."""
    for key in sorted(set(base_config) | set(head_config)):
        before, after = base_config.get(key), head_config.get(key)
        if before == after:
            continue
        status = "added" if before is None else "removed" if after is None else "changed"
        short = key.split(":")[-1].split(".")[-1]
        embedding = sorted(
            path
            for path, text in head_files.items()
            if short in {m.group(1) for m in PLACEHOLDER_RE.finditer(text)}
        )
        result.secret_config.append(SecretConfigChange(key=key, status=status, files=embedding))
    if result.secret_config:
        for resource in head_plan.get("resources") or []:
            paths = _secret_paths(resource.get("inputs") or {})
            if paths:
                result.secret_consumers.append((str(resource["name"]), paths))


def secure_values(document: Json, prefix: str = "") -> dict[str, str]:
    """`key -> ciphertext` for every `{secure: ...}` value of a stack config document."""
    found: dict[str, str] = {}
    config = (document or {}).get("config") if not prefix else document
    if not isinstance(config, dict):
        return found
    for key, value in config.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and set(value) == {"secure"}:
            found[full] = str(value["secure"])
        elif isinstance(value, dict):
            found.update(secure_values(value, full))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict) and set(item) == {"secure"}:
                    found[f"{full}[{index}]"] = str(item["secure"])
                elif isinstance(item, dict):
                    found.update(secure_values(item, f"{full}[{index}]"))
    return found


# ---------------------------------------------------------------------------------------------
# Markdown

ICONS = {
    "create": "🆕 create",
    "delete": "🗑️ delete",
    "replace": "🔁 replace",
    "update": "✏️ update",
    "options": "⚙️ options",
}


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _change_line(change: Change) -> str:
    if change.old == change.new == SECRET_MASK:
        text = f"- `{change.path}`: {SECRET_MASK} (secret changed)"
    else:
        text = f"- `{change.path}`: {fmt(change.old)} → {fmt(change.new)}"
    if change.forces_replacement:
        text += f" — **forces replacement** ({change.rule})"
    elif change.rule == "unknown":
        text += " — replacement rule unknown"
    elif change.rule in ("not applied", "no update"):
        text += f" — ⚠️ **{change.rule}** by the provider"
    elif change.rule == "ignoreChanges":
        text += " — ignored (ignoreChanges)"
    if change.note:
        text += f" _({change.note})_"
    return text


def render_markdown(result: PlanDiff, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    head = [MARKER, f"## Plan diff: stack `{result.stack}`, `{result.base}` → `{result.head}`", ""]
    top: list[str] = []
    for server in result.server_replacements:
        verb = "DELETED" if server.action == "delete" else "REPLACED (destroyed and re-created)"
        top += [
            f"### ⚠️ SERVER {verb}: `{server.name}`",
            "",
            "> Every container is re-created on the new server: the services are down until it is"
            " ready. The Primary IPs, the Pulumi-generated SSH host key and the Volume (`/srv/torrust`:"
            " tracker database, certificates, Grafana and Prometheus data) carry over; whatever lives"
            " only on the old server's disk is lost.",
        ]
        forcing = [c for c in server.changes if c.forces_replacement]
        top += (
            [">"]
            + [f"> {_change_line(c)}" for c in forcing]
            + [f"> - {r}" for r in server.reasons if "URN" in r]
            + [""]
        )
    if not result.changed:
        return "\n".join([*head, "No changes.", ""])

    body: list[str] = []
    if result.resources:
        counts = ", ".join(
            f"{result.count(a)} to {a}" for a in ("replace", "update", "create", "delete") if result.count(a)
        )
        options_only = result.count("options")
        if options_only:
            counts += f", {options_only} with option changes only"
        body += [
            f"**{counts}** — predicted offline from the providers' replacement rules;"
            " `pulumi preview` is authoritative.",
            "",
            "| Action | Resource | Type | Why |",
            "|---|---|---|---|",
        ]
        order = {"replace": 0, "delete": 1, "create": 2, "update": 3, "options": 4}
        for r in sorted(result.resources, key=lambda r: (order[r.action], r.name)):
            action = ICONS[r.action] + (" ⚠️ may replace" if r.maybe_replace else "")
            action += " ⚠️ not applied" if r.not_applied else ""
            why = "; ".join(r.reasons).replace("|", "\\|")
            body.append(f"| {action} | `{r.name}` | `{r.type}` | {why} |")
        body.append("")
    else:
        body += ["No changes to resources.", ""]

    detailed = [r for r in result.resources if r.changes or r.option_changes or r.secret_inputs or r.old_urn]
    if detailed:
        body += ["### Changes by resource", ""]
        for r in sorted(detailed, key=lambda r: r.name):
            suffix = (
                " (delete before create: downtime)"
                if r.action == "replace" and r.delete_before_replace
                else ""
            )
            body.append(f"#### {ICONS[r.action]} `{r.name}`{suffix}")
            if r.old_urn:
                body += [f"- URN: `{r.old_urn}` → `{r.urn}`"]
            body += [_change_line(c) for c in r.changes]
            body += [_change_line(c) for c in r.option_changes]
            if r.secret_inputs and r.action != "create":
                body.append(
                    "- secret inputs (values hidden from the plan, a change to them cannot be seen here): "
                    + ", ".join(f"`{p}`" for p in r.secret_inputs)
                )
            body.append("")

    if result.consequences:
        body += [
            "### May change as a consequence",
            "",
            "These depend on a replaced resource; the offline plan uses fixed mock IDs and IPs, so it cannot"
            " show how their inputs change (expect `pulumi preview` to update or replace them).",
            "",
        ]
        body += [
            f"- `{name}` (depends on {', '.join(f'`{b}`' for b in because)})"
            for _, name, because in result.consequences
        ]
        body.append("")

    if result.secret_config:
        body += ["### 🔑 Secret configuration changed (values stay hidden)", ""]
        for s in result.secret_config:
            where = f"; embedded in {', '.join(f'`{f}`' for f in s.files)}" if s.files else ""
            body.append(f"- `{s.key}`: {s.status}{where}")
        body += [
            "",
            "The offline plan renders secrets as placeholders, so it cannot tell which inputs change."
            " Resources with secret inputs (a changed secret in `envs`, `uploads` or `userData` replaces"
            " the resource):",
            "",
        ]
        body += [
            f"- `{name}`: {', '.join(f'`{p}`' for p in paths)}" for name, paths in result.secret_consumers
        ]
        body.append("")

    if result.outputs:
        body += ["### Stack outputs", ""] + [_change_line(c) for c in result.outputs] + [""]

    file_sections: list[list[str]] = []
    for f in result.files:
        owner = f" → `{f.resource}`" if f.resource else ""
        fence = _fence(f.diff)
        file_sections.append(
            [
                f"<details><summary><code>{f.path}</code> ({f.status}){owner}</summary>",
                "",
                f"{fence}diff",
                f.diff.rstrip("\n"),
                fence,
                "",
                "</details>",
                "",
            ]
        )

    notes = [
        "<sub>Offline plan (`make plan`, mocks): secrets are `[secret]` / placeholders, computed values are"
        " mock values. Reproduce with `make plan-diff BASE=<ref>`.</sub>",
        "",
    ]
    if result.notes:
        notes = [f"- {n}" for n in result.notes] + [""] + notes

    def assemble(sections: list[list[str]]) -> str:
        files_part: list[str] = ["### Rendered files", ""] if sections else []
        for section in sections:
            files_part += section
        return "\n".join([*head, *top, *body, *files_part, *notes])

    text = assemble(file_sections)
    # Too long for a PR comment: drop file diffs from the largest down, keep the list of files.
    while len(text) > max_chars and any(len(s) > 3 for s in file_sections):
        index = max(range(len(file_sections)), key=lambda i: sum(len(line) for line in file_sections[i]))
        summary_line = file_sections[index][0].replace("<details><summary>", "- ").replace("</summary>", "")
        file_sections[index] = [
            summary_line + " — diff omitted (too long for a comment; run `make plan-diff`)",
            "",
        ]
        text = assemble(file_sections)
    if len(text) > max_chars:
        text = text[: max_chars - 80] + "\n\n… truncated; run `make plan-diff` locally for the full output.\n"
    return text


# ---------------------------------------------------------------------------------------------
# Rendering plans from git trees


class PlanDiffError(Exception):
    pass


def git(repo: Path, *args: str) -> str:
    completed = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise PlanDiffError(f"git {' '.join(args)} failed: {completed.stderr.strip()}")
    return completed.stdout


def resolve(repo: Path, ref: str) -> str:
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
    except PlanDiffError:
        raise PlanDiffError(
            f"{ref!r} is not a commit in {repo} (fetch it first, e.g. `git fetch origin main`)"
        ) from None


@contextmanager
def worktree(repo: Path, commit: str, parent: Path, name: str) -> Iterator[Path]:
    path = parent / name
    git(repo, "worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield path
    finally:
        try:
            git(repo, "worktree", "remove", "--force", str(path))
        except PlanDiffError:
            shutil.rmtree(path, ignore_errors=True)
            subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True, check=False)


@dataclass
class Rendered:
    plan: dict[str, Json]
    files: dict[str, str]
    secure: dict[str, str]
    note: str = ""


def read_rendered(out_dir: Path) -> tuple[dict[str, Json], dict[str, str]]:
    plan: dict[str, Json] = json.loads((out_dir / "plan.json").read_text())
    files: dict[str, str] = {}
    for path in sorted(out_dir.rglob("*")):
        relative = path.relative_to(out_dir).as_posix()
        if path.is_file() and (relative.startswith("files/") or relative == "cloud-init.yaml"):
            files[relative] = path.read_text(errors="replace")
    return plan, files


def start_plan(tree: Path, stack: str, out_dir: Path) -> subprocess.Popen[str] | None:
    """Start `python -m tools.plan` of that tree (its own code, this interpreter)."""
    if not (tree / f"Pulumi.{stack}.yaml").is_file():
        return None
    if not (tree / "tools" / "plan.py").is_file():
        raise PlanDiffError(f"{tree} has no tools/plan.py: that revision predates the offline plan")
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "tools.plan", "--stack", stack, "--out", str(out_dir)]
    return subprocess.Popen(
        command, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_plan(
    process: subprocess.Popen[str] | None, tree: Path, stack: str, out_dir: Path, label: str
) -> Rendered:
    stack_file = tree / f"Pulumi.{stack}.yaml"
    if process is None:
        return Rendered(
            plan={"stack": stack, "resources": [], "outputs": {}},
            files={},
            secure={},
            note=f"{label} has no Pulumi.{stack}.yaml: compared against an empty stack",
        )
    _, stderr = process.communicate()
    if process.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise PlanDiffError(f"the offline plan of {label} failed (exit {process.returncode}):\n{tail}")
    plan, files = read_rendered(out_dir)
    secure = secure_values(yaml.safe_load(stack_file.read_text()) or {})
    return Rendered(plan=plan, files=files, secure=secure)


def render_both(
    repo: Path, base_ref: str, head_ref: str | None, stack: str
) -> tuple[PlanDiff, Rendered, Rendered]:
    base_commit = resolve(repo, base_ref)
    head_commit = resolve(repo, head_ref) if head_ref else None
    base_label = f"{base_ref} ({base_commit[:10]})" if base_ref != base_commit else base_commit[:10]
    head_label = (
        (f"{head_ref} ({head_commit[:10]})" if head_ref != head_commit else head_commit[:10])
        if (head_ref and head_commit)
        else "working tree"
    )
    with tempfile.TemporaryDirectory(prefix="plan-diff-") as temp, ExitStack() as trees:
        scratch = Path(temp)
        base_tree = trees.enter_context(worktree(repo, base_commit, scratch, "base"))
        head_tree = trees.enter_context(worktree(repo, head_commit, scratch, "head")) if head_commit else repo
        base_proc = start_plan(base_tree, stack, scratch / "plan-base")
        head_proc = start_plan(head_tree, stack, scratch / "plan-head")
        base = finish_plan(base_proc, base_tree, stack, scratch / "plan-base", f"base {base_label}")
        head = finish_plan(head_proc, head_tree, stack, scratch / "plan-head", head_label)
    result = diff_plans(
        base.plan,
        head.plan,
        base.files,
        head.files,
        stack=stack,
        base_label=base_label,
        head_label=head_label,
    )
    add_secret_config(result, base.secure, head.secure, head.plan, head.files)
    result.notes += [n for n in (base.note, head.note) if n]
    return result, base, head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="git ref to compare against (e.g. origin/main)")
    parser.add_argument("--head", help="git ref to compare (default: the working tree)")
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="repository (default: this one)")
    parser.add_argument("--json", action="store_true", help="print the machine-readable summary instead")
    parser.add_argument("--markdown-file", type=Path, help="also write the Markdown here")
    parser.add_argument("--json-file", type=Path, help="also write the JSON summary here")
    parser.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS, help="Markdown size limit")
    args = parser.parse_args(argv)
    try:
        result, _, _ = render_both(args.repo.resolve(), args.base, args.head, args.stack)
    except PlanDiffError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    markdown = render_markdown(result, args.max_chars)
    summary = json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n"
    if args.markdown_file:
        args.markdown_file.write_text(markdown)
    if args.json_file:
        args.json_file.write_text(summary)
    sys.stdout.write(summary if args.json else markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
