"""Open SSH (22/tcp) to this machine's public IPv4 for one deploy, then close it again.

`deploy.yml` runs `pulumi up` on a GitHub-hosted runner, whose address changes every run and is not
in `ssh.allowedCidrs`; without this, the readiness step and the Docker provider (both SSH) stall.

    python -m tools.runner_firewall open --stack prod     # prints the firewall ID
    python -m tools.runner_firewall close --stack prod    # always, even after a failed `up`

`open` creates a separate, temporary Hetzner Cloud Firewall (one rule: tcp 22 from <runner IPv4>/32)
applied by label selector to the stack's server (`app=torrust-tracker,stack=<stack>`, the labels
components/host.py puts on it), so it also covers a server this deploy creates or replaces. The
firewall Pulumi manages is never touched: an update of its rules by this `up` cannot drop the
runner's access, and there is no drift in Pulumi's state. `close` removes every such firewall of the
stack (also leftovers of a cancelled run). The Hetzner API applies all firewalls of a server
together, so the server admits SSH from the operator's CIDRs and, during the deploy, the runner.

API shapes: hetznercloud/hcloud-go v2.44.0 hcloud/schema/firewall.go (FirewallCreateRequest with
`apply_to` of type `label_selector`, FirewallActionRemoveFromResourcesRequest `remove_from`),
hcloud/firewall.go (`/firewalls`, `/firewalls/{id}/actions/remove_from_resources`), schema/action.go
(`status` running|success|error). A firewall still applied cannot be deleted (`resource_in_use`).
The address comes from https://api.ipify.org (an IPv4-only endpoint): the Docker provider and the
readiness step dial the server's IPv4.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

API = "https://api.hetzner.cloud/v1"
IP_LOOKUP = "https://api.ipify.org"
RUNNER_LABEL = "torrust-deploy-runner"  # value: the stack label; marks firewalls this tool owns
ACTION_TIMEOUT = 120.0
HTTP_TIMEOUT = 30.0

Json = Any


class FirewallError(Exception):
    pass


def stack_label(stack: str) -> str:
    """`org/project/prod` or `org/prod` (Pulumi Cloud) -> `prod`: the program labels with get_stack()."""
    return stack.rsplit("/", 1)[-1]


def server_selector(stack: str) -> str:
    return f"app=torrust-tracker,stack={stack_label(stack)}"


class Hetzner:
    def __init__(self, token: str, endpoint: str = API) -> None:
        self.token = token
        self.endpoint = endpoint.rstrip("/")

    def call(self, method: str, path: str, body: Json = None) -> Json:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.endpoint + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:
                code = json.loads(detail)["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = ""
            raise FirewallError(f"{method} {path}: HTTP {error.code} {code} {detail[:300]}") from None
        return json.loads(text) if text.strip() else {}

    def wait(self, actions: list[Json], timeout: float = ACTION_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for action in actions:
            status = action.get("status")
            while status == "running":
                if time.monotonic() > deadline:
                    raise FirewallError(f"action {action['id']} ({action.get('command')}) still running")
                time.sleep(1)
                status = self.call("GET", f"/actions/{action['id']}")["action"]["status"]
            if status != "success":
                raise FirewallError(f"action {action['id']} ({action.get('command')}) ended {status}")


def runner_ipv4(lookup: str = IP_LOOKUP) -> str:
    with urllib.request.urlopen(lookup, timeout=HTTP_TIMEOUT) as response:
        text = response.read().decode().strip()
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise FirewallError(f"{lookup} did not answer with an IPv4 address: {text[:60]!r}") from None


def owned(api: Hetzner, stack: str) -> list[Json]:
    firewalls: list[Json] = api.call(
        "GET", f"/firewalls?label_selector={RUNNER_LABEL}%3D{stack_label(stack)}"
    )["firewalls"]
    return firewalls


def close(api: Hetzner, stack: str) -> list[int]:
    """Remove and delete every runner firewall of the stack; returns their IDs."""
    removed = []
    for firewall in owned(api, stack):
        selectors = [r for r in firewall.get("applied_to") or [] if r.get("type") == "label_selector"]
        if selectors:
            body = {
                "remove_from": [
                    {"type": "label_selector", "label_selector": r["label_selector"]} for r in selectors
                ]
            }
            api.wait(
                api.call("POST", f"/firewalls/{firewall['id']}/actions/remove_from_resources", body)[
                    "actions"
                ]
            )
        deadline = time.monotonic() + ACTION_TIMEOUT
        while True:
            try:
                api.call("DELETE", f"/firewalls/{firewall['id']}")
                break
            except FirewallError as error:  # resource_in_use until the removal reached every server
                if "resource_in_use" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(2)
        removed.append(int(firewall["id"]))
    return removed


def open_(api: Hetzner, stack: str, ip: str, name: str) -> int:
    close(api, stack)  # leftovers of a cancelled run
    body = {
        "name": name,
        "labels": {RUNNER_LABEL: stack_label(stack), "managed-by": "github-deploy"},
        "rules": [
            {
                "direction": "in",
                "protocol": "tcp",
                "port": "22",
                "source_ips": [f"{ipaddress.IPv4Address(ip)}/32"],
                "description": "deploy runner (temporary)",
            }
        ],
        "apply_to": [{"type": "label_selector", "label_selector": {"selector": server_selector(stack)}}],
    }
    created = api.call("POST", "/firewalls", body)
    api.wait(created.get("actions") or [])
    return int(created["firewall"]["id"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("open", "close"))
    parser.add_argument("--stack", required=True, help="Pulumi stack (org/ prefixes are dropped)")
    parser.add_argument("--ip", help="IPv4 to admit (default: looked up at api.ipify.org)")
    parser.add_argument("--name", help="firewall name (default: deploy-runner-<stack>-<run id>)")
    args = parser.parse_args(argv)
    token = os.environ.get("HCLOUD_TOKEN", "")
    if not token:
        print("error: HCLOUD_TOKEN is not set (a read & write Hetzner Cloud API token)", file=sys.stderr)
        return 2
    api = Hetzner(token, os.environ.get("HCLOUD_ENDPOINT", API))
    try:
        if args.command == "close":
            removed = close(api, args.stack)
            print(f"removed runner firewalls: {removed or 'none'}")
            return 0
        ip = args.ip or runner_ipv4(os.environ.get("RUNNER_IP_LOOKUP", IP_LOOKUP))
        run = os.environ.get("GITHUB_RUN_ID", str(int(time.time())))
        name = args.name or f"deploy-runner-{stack_label(args.stack)}-{run}"
        firewall_id = open_(api, args.stack, ip, name)
    except (FirewallError, urllib.error.URLError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"SSH open for {ip}/32 on servers matching {server_selector(args.stack)} (firewall {firewall_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
