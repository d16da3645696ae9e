"""tools/runner_firewall.py against a stand-in Hetzner Cloud API on 127.0.0.1.

The real API cannot be reached here; the stand-in imitates the endpoints the tool uses, with the
shapes of hetznercloud/hcloud-go v2.44.0 hcloud/schema/{firewall,action}.go: actions start
`running`, a firewall that is still applied answers DELETE with 409 `resource_in_use`, and a
firewall applied by label selector covers every server whose labels match.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import Deploy
from tools import runner_firewall as rf

SERVER = "hcloud:index/server:Server"


class FakeHetzner:
    def __init__(self) -> None:
        self.firewalls: dict[int, dict[str, Any]] = {}
        self.actions: dict[int, int] = {}  # id -> polls left before success
        self.next_id = 100
        self.requests: list[tuple[str, str, Any]] = []
        self.ip = "203.0.113.7"

    def action(self, command: str) -> dict[str, Any]:
        self.next_id += 1
        self.actions[self.next_id] = 2
        return {"id": self.next_id, "command": command, "status": "running"}

    def handle(self, method: str, url: str, body: Any, token: str) -> tuple[int, Any]:
        self.requests.append((method, url, body))
        path = urlparse(url).path
        if path == "/ip":
            return 200, self.ip
        if token != "Bearer test-token":
            return 401, {"error": {"code": "unauthorized", "message": "unable to authenticate"}}
        parts = path.strip("/").split("/")
        if method == "GET" and parts == ["v1", "firewalls"]:
            key, _, value = parse_qs(urlparse(url).query)["label_selector"][0].partition("=")
            found = [f for f in self.firewalls.values() if f["labels"].get(key) == value]
            return 200, {"firewalls": found}
        if method == "POST" and parts == ["v1", "firewalls"]:
            self.next_id += 1
            firewall = {
                "id": self.next_id,
                "name": body["name"],
                "labels": body.get("labels", {}),
                "rules": body.get("rules", []),
                "applied_to": body.get("apply_to", []),
            }
            self.firewalls[self.next_id] = firewall
            actions = [self.action("apply_firewall")] if firewall["applied_to"] else []
            return 201, {"firewall": firewall, "actions": actions}
        if method == "GET" and parts[:2] == ["v1", "actions"]:
            action_id = int(parts[2])
            self.actions[action_id] -= 1
            status = "success" if self.actions[action_id] <= 0 else "running"
            return 200, {"action": {"id": action_id, "command": "x", "status": status}}
        if method == "POST" and parts[3:] == ["actions", "remove_from_resources"]:
            firewall = self.firewalls[int(parts[2])]
            firewall["applied_to"] = [r for r in firewall["applied_to"] if r not in body["remove_from"]]
            return 201, {"actions": [self.action("remove_firewall")]}
        if method == "DELETE" and parts[:2] == ["v1", "firewalls"]:
            firewall = self.firewalls[int(parts[2])]
            if firewall["applied_to"]:
                return 409, {"error": {"code": "resource_in_use", "message": "firewall is still in use"}}
            del self.firewalls[int(parts[2])]
            return 204, None
        return 404, {"error": {"code": "not_found", "message": path}}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHetzner]:
    fake = FakeHetzner()

    class Handler(BaseHTTPRequestHandler):
        def respond(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = fake.handle(method, self.path, body, self.headers.get("Authorization", ""))
            data = (
                b""
                if answer is None
                else (answer if isinstance(answer, str) else json.dumps(answer)).encode()
            )
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self.respond("GET")

        def do_POST(self) -> None:
            self.respond("POST")

        def do_DELETE(self) -> None:
            self.respond("DELETE")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # shutdown() waits up to one poll interval (0.5 s by default) for the loop to notice.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HCLOUD_TOKEN", "test-token")
    monkeypatch.setenv("HCLOUD_ENDPOINT", f"{base}/v1")
    monkeypatch.setenv("RUNNER_IP_LOOKUP", f"{base}/ip")
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    monkeypatch.setattr(time, "sleep", lambda _: None)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_open_admits_the_runner_on_port_22_of_the_stack_server(api: FakeHetzner) -> None:
    assert rf.main(["open", "--stack", "acme/prod"]) == 0
    [firewall] = api.firewalls.values()
    assert firewall["name"] == "deploy-runner-prod-4242"
    assert firewall["labels"] == {"torrust-deploy-runner": "prod", "managed-by": "github-deploy"}
    assert firewall["rules"] == [
        {
            "direction": "in",
            "protocol": "tcp",
            "port": "22",
            "source_ips": ["203.0.113.7/32"],
            "description": "deploy runner (temporary)",
        }
    ]
    assert firewall["applied_to"] == [
        {"type": "label_selector", "label_selector": {"selector": "app=torrust-tracker,stack=prod"}}
    ]
    # It waited for the apply action to succeed before returning (the deploy needs SSH right away).
    assert all(polls <= 0 for polls in api.actions.values())


def test_close_detaches_then_deletes_only_runner_firewalls(api: FakeHetzner) -> None:
    assert rf.main(["open", "--stack", "prod"]) == 0
    [runner_id] = api.firewalls
    other = rf.Hetzner("test-token", os.environ["HCLOUD_ENDPOINT"])
    other.call("POST", "/firewalls", {"name": "operator", "labels": {"app": "torrust-tracker"}})
    assert rf.main(["close", "--stack", "prod"]) == 0
    assert [f["name"] for f in api.firewalls.values()] == ["operator"], "only the runner's firewall goes"
    methods = [(m, u.split("?")[0]) for m, u, _ in api.requests]
    remove = methods.index(("POST", f"/v1/firewalls/{runner_id}/actions/remove_from_resources"))
    assert methods.index(("DELETE", f"/v1/firewalls/{runner_id}")) > remove
    assert rf.main(["close", "--stack", "prod"]) == 0  # idempotent: nothing left to close


def test_open_clears_leftovers_of_a_cancelled_run(api: FakeHetzner) -> None:
    assert rf.main(["open", "--stack", "prod"]) == 0
    assert rf.main(["open", "--stack", "prod", "--ip", "198.51.100.9"]) == 0
    [firewall] = api.firewalls.values()
    assert firewall["rules"][0]["source_ips"] == ["198.51.100.9/32"]


def test_failures_are_reported(api: FakeHetzner, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    api.ip = "2001:db8::1"  # the server is dialled over IPv4: an IPv6 answer is an error
    assert rf.main(["open", "--stack", "prod"]) == 1
    assert "did not answer with an IPv4 address" in capsys.readouterr().err
    assert not api.firewalls
    monkeypatch.setenv("HCLOUD_TOKEN", "wrong")
    assert rf.main(["open", "--stack", "prod", "--ip", "203.0.113.7"]) == 1
    assert "HTTP 401 unauthorized" in capsys.readouterr().err
    monkeypatch.delenv("HCLOUD_TOKEN")
    assert rf.main(["close", "--stack", "prod"]) == 2
    assert "HCLOUD_TOKEN" in capsys.readouterr().err


def test_selector_matches_the_labels_the_program_puts_on_the_server(deploy: Deploy) -> None:
    for stack in ("dev", "prod"):
        [server] = deploy(stack=stack).monitor.by_type(SERVER)
        labels = server.inputs["labels"]
        wanted = dict(item.split("=") for item in rf.server_selector(f"org/{stack}").split(","))
        assert wanted.items() <= labels.items(), (wanted, labels)
