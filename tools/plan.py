"""Offline plan: `make plan STACK=<stack>`.

Runs the program under mocks with Pulumi.<stack>.yaml (secure values replaced by placeholders), no
Pulumi CLI, no cloud, no Docker, and writes build/plan/<stack>/:
  plan.json                       resources in registration order with inputs and options, outputs
  files/<resource>/<path>         every file uploaded into a container or installed by a remote
                                  command (the backup script and its systemd units)
  cloud-init.yaml                 the server's user data
Secret values appear as "[secret]" in plan.json; files only ever contain placeholders.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from core.examples import documentation_values
from core.settings import PROJECT, SECRET_KEYS, ConfigError, load_settings
from tools.mocks import EXAMPLE_IPV4, EXAMPLE_IPV6, Registration, masked, reveal
from tools.program import REPO_ROOT, ProgramRun, run_program

PLACEHOLDER = "<plan-placeholder:{key}>"
MOCK_ADDRESSES_NOTE = (
    f"{EXAMPLE_IPV4} and {EXAMPLE_IPV6} are mock addresses (documentation ranges) from the offline "
    "plan; Hetzner assigns the real ones at `pulumi up` (pulumi stack output serverIpv4 / serverIpv6)"
)
# Values of other namespaces are never parsed by the program; the plan passes this instead of them.
NOT_READ = "<plan: value of another namespace, not read>"


class PlanError(Exception):
    pass


def placeholder(key: str) -> str:
    return PLACEHOLDER.format(key=key.split(":")[-1])


def _replace_secure(key: str, value: Any, secret_keys: list[str], full_key: str) -> Any:
    if isinstance(value, dict) and set(value) == {"secure"}:
        if full_key not in secret_keys:
            secret_keys.append(full_key)
        return placeholder(key)
    if isinstance(value, dict):
        return {k: _replace_secure(k, v, secret_keys, full_key) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_secure(key, v, secret_keys, full_key) for v in value]
    return value


class _StackFileLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, as the Pulumi CLI does (its YAML
    library, go-yaml v3, fails with 'mapping key ... already defined'); PyYAML keeps the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise PlanError(
                    f"line {key_node.start_mark.line + 1}: key '{key}' is given twice in the same "
                    f"mapping (first on line {seen[key]}); the Pulumi CLI refuses the file"
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_stack_document(text: str, name: str) -> dict[str, Any]:
    try:
        document = yaml.load(text, Loader=_StackFileLoader) or {}  # a SafeLoader
    except yaml.YAMLError as exc:
        raise PlanError(f"{name} is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise PlanError(f"{name}: the stack file must be a mapping with a `config:` key")
    return document


def load_stack_config(stack_file: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """Config map, secret keys, and notes about placeholders the plan had to add."""
    if not stack_file.is_file():
        raise PlanError(
            f"{stack_file} does not exist; create it with `pulumi stack init` and `pulumi config set`"
        )
    document = read_stack_document(stack_file.read_text(), stack_file.name)
    raw = document.get("config") or {}
    if not isinstance(raw, dict):
        raise PlanError(f"{stack_file}: `config:` must be a mapping")
    secret_keys: list[str] = []
    config: dict[str, Any] = {}
    for key, value in raw.items():
        if not str(key).startswith(PROJECT + ":"):
            # Only our namespace is walked: another namespace's value (a YAML alias bomb, say) is
            # neither expanded nor serialised. Its secure-ness still counts (plain-text secrets).
            if isinstance(value, dict) and set(value) == {"secure"}:
                secret_keys.append(key)
                config[key] = placeholder(key)
            else:
                config[key] = value if isinstance(value, str | int | float | bool) else NOT_READ
            continue
        config[key] = _replace_secure(key, value, secret_keys, key)
    notes = [
        f"{PROJECT}:{key} is not set in {stack_file.name}: the program generates it (pulumi-random)"
        for key in SECRET_KEYS
        if f"{PROJECT}:{key}" not in config
    ]
    return config, secret_keys, notes


def resource_record(registration: Registration) -> dict[str, Any]:
    return {
        "urn": registration.urn,
        "type": registration.type,
        "name": registration.name,
        "parent": registration.parent,
        "inputs": masked(registration.inputs),
        "options": registration.options,
    }


def uploaded_files(registrations: list[Registration]) -> dict[str, dict[str, str]]:
    """resource name -> {path inside the container: content} for every container upload."""
    files: dict[str, dict[str, str]] = {}
    for registration in registrations:
        if registration.type != "docker:index/container:Container":
            continue
        for upload in reveal(registration.inputs.get("uploads") or []):
            files.setdefault(registration.name, {})[upload["file"]] = upload.get("content", "")
    return files


# What services/backups/backup.py's _heredoc_install writes: install ... /dev/stdin <path> <<'<delimiter>'
_HEREDOC_INSTALL = re.compile(
    r"^install -m [0-7]+ -o root -g root /dev/stdin (?P<path>\S+) <<'(?P<delim>[A-Z0-9_]+)'\n"
    r"(?P<body>.*?)^(?P=delim)\n",
    re.MULTILINE | re.DOTALL,
)


def installed_files(registrations: list[Registration]) -> dict[str, dict[str, str]]:
    """resource name -> {path on the host: content} for files a remote Command installs."""
    files: dict[str, dict[str, str]] = {}
    for registration in registrations:
        if registration.type != "command:remote:Command":
            continue
        script = reveal(registration.inputs.get("create") or "")
        if not isinstance(script, str):
            continue
        for match in _HEREDOC_INSTALL.finditer(script):
            files.setdefault(registration.name, {})[match.group("path")] = match.group("body")
    return files


def cloud_init(registrations: list[Registration]) -> str:
    servers = [r for r in registrations if r.type == "hcloud:index/server:Server"]
    if len(servers) != 1:
        raise PlanError(f"expected one server, found {len(servers)}")
    user_data: str = reveal(servers[0].inputs.get("userData", ""))
    return user_data


def mask_secret_values(text: str, secrets: Mapping[str, str]) -> str:
    """Replace every configured secret value in a rendered file by its placeholder.

    The plan normally runs on placeholders already (no-op then); this is the second line of
    defence for a run that was handed real values.
    """
    for key, value in sorted(secrets.items(), key=lambda item: -len(item[1])):
        if value:
            text = text.replace(value, placeholder(key))
    return text


def write_plan(
    stack: str, run: ProgramRun, out_dir: Path, secrets: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Write plan.json, the uploaded files and cloud-init; `secrets` (key -> value) are masked."""
    secrets = secrets or {}
    registrations = run.monitor.registrations
    plan = {
        "stack": stack,
        "project": PROJECT,
        "resources": [resource_record(r) for r in registrations],
        "outputs": masked(run.outputs),
        "notes": {"mockAddresses": MOCK_ADDRESSES_NOTE},
    }
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "plan.json").write_text(json.dumps(plan, indent=2, sort_keys=False) + "\n")
    rendered = uploaded_files(registrations)
    for resource, installed in installed_files(registrations).items():
        rendered.setdefault(resource, {}).update(installed)
    for resource, files in rendered.items():
        for path, content in files.items():
            target = out_dir / "files" / resource / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(mask_secret_values(content, secrets))
    (out_dir / "cloud-init.yaml").write_text(mask_secret_values(cloud_init(registrations), secrets))
    return plan


def resource_tree(plan: dict[str, Any]) -> list[str]:
    children: dict[str, list[dict[str, Any]]] = {}
    for resource in plan["resources"]:
        children.setdefault(resource["parent"], []).append(resource)
    top_parents = [p for p in children if not any(r["urn"] == p for r in plan["resources"])]
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for resource in children.get(parent, []):
            flags = [name for name in ("protect", "deleteBeforeReplace") if resource["options"].get(name)]
            suffix = f"  [{', '.join(flags)}]" if flags else ""
            lines.append(f"{'  ' * depth}{resource['type']}  {resource['name']}{suffix}")
            walk(resource["urn"], depth + 1)

    for parent in top_parents:
        walk(parent, 0)
    return lines


def summary(plan: dict[str, Any], out_dir: Path) -> str:
    lines = [f"Plan for stack '{plan['stack']}': {len(plan['resources'])} resources -> {out_dir}", ""]
    lines += resource_tree(plan)
    lines += ["", "Endpoints:"]
    endpoints = plan["outputs"].get("endpoints", {})
    lines.append(json.dumps(endpoints, indent=2))
    lines += ["", f"Note: {MOCK_ADDRESSES_NOTE}."]
    lines += ["", "DNS records to create (mock addresses):"]
    for record in plan["outputs"].get("dnsRecords", []):
        lines.append(f"  {record['name']:<40} {record['type']:<5} {record['value']}")
    lines += ["", "Off-site backups:"]
    offsite = plan["outputs"].get("offsite")
    if offsite:
        lines.append(json.dumps(offsite, indent=2))
    else:
        lines.append(
            "  none (backup.offsite.kind is 'none'): backups stay on the data volume only, and losing"
            " the volume loses them too; see docs/backup-restore.md"
        )
    return "\n".join(lines)


def documentation_notes(stack: str, config: Mapping[str, Any]) -> list[str]:
    """The example stack's documentation-only values, which `pulumi up` refuses (core/examples.py)."""
    try:
        settings = load_settings(stack, lambda key: config.get(f"{PROJECT}:{key}"))
    except ConfigError:
        return []
    found = documentation_values(settings)
    if not found:
        return []
    keys = ", ".join(path for path, _ in found)
    return [
        f"documentation-only values (fine for this plan and `pulumi preview`, refused by `pulumi up`): {keys}"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--stack-file", type=Path, help="default: Pulumi.<stack>.yaml in the repository")
    parser.add_argument("--out", type=Path, help="default: build/plan/<stack>")
    args = parser.parse_args(argv)
    stack_file = args.stack_file or REPO_ROOT / f"Pulumi.{args.stack}.yaml"
    out_dir = args.out or REPO_ROOT / "build" / "plan" / args.stack
    try:
        config, secret_keys, notes = load_stack_config(stack_file)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        asyncio.set_event_loop(asyncio.new_event_loop())
        run = run_program(args.stack, config, secret_keys)
        secret_values = {key: str(config[key]) for key in secret_keys if isinstance(config.get(key), str)}
        plan = write_plan(args.stack, run, out_dir, secret_values)
        for note in documentation_notes(args.stack, config):
            print(f"note: {note}", file=sys.stderr)
    except PlanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the program's own RunError carries the operator-facing message
        if type(error).__name__ == "RunError":
            print(str(error), file=sys.stderr)
            return 2
        raise
    print(summary(plan, out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
