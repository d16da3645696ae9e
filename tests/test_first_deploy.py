"""What a real first `pulumi up` needs beyond what the mocks accept (issue 8): Hetzner, the Docker
provider over SSH, the data volume and the metadata service."""

from __future__ import annotations

import re
from typing import Any

import pytest

from core.settings import ConfigError, load_settings
from tests.conftest import Deploy, dev_config
from tools.program import ProgramRun

CONTAINER = "docker:index/container:Container"
CONTAINERS = ("pingoo", "nginx-certbot", "tracker", "prometheus", "grafana")


def container_inputs(run: ProgramRun, name: str) -> dict[str, Any]:
    return run.monitor.one(CONTAINER, name).inputs


@pytest.mark.parametrize("name", CONTAINERS)
def test_containers_are_stopped_not_killed_on_delete(deploy: Deploy, name: str) -> None:
    inputs = container_inputs(deploy(), name)
    # kreuzwerker's Delete stops with timeout 0 unless destroy_grace_seconds is set.
    assert isinstance(inputs.get("stopTimeout"), (int, float)) and inputs["stopTimeout"] >= 10
    assert inputs.get("destroyGraceSeconds") == inputs["stopTimeout"]


@pytest.mark.parametrize("name", CONTAINERS)
def test_no_swap_so_memory_swap_reads_back_unchanged(deploy: Deploy, name: str) -> None:
    inputs = container_inputs(deploy(), name)
    assert inputs["memorySwap"] == inputs["memory"]


@pytest.mark.parametrize("name", CONTAINERS)
def test_an_edited_health_check_replaces_the_container(deploy: Deploy, name: str) -> None:
    options = deploy().monitor.one(CONTAINER, name).options
    assert "healthcheck" in options["replaceOnChanges"]


def test_docker_context_in_the_environment_is_refused(
    deploy: Deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONTEXT", "laptop")
    with pytest.raises(Exception, match="DOCKER_CONTEXT") as error:
        deploy()
    assert type(error.value).__name__ == "RunError"  # before any resource is registered
    assert "unset DOCKER_CONTEXT" in str(error.value)
    assert "laptop" in str(error.value)


SERVER = "hcloud:index/server:Server"
SSH_KEY = "hcloud:index/sshKey:SshKey"
OPERATOR_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleOperatorKeyReplaceWithYourOwn00000 operator@example.com"
)


def ssh_config(**keys: Any) -> dict[str, Any]:
    return {"ssh": {"allowedCidrs": ["198.51.100.7/32"], **keys}}


def test_keys_already_in_the_project_are_looked_up_not_uploaded(deploy: Deploy) -> None:
    run = deploy(ssh_config(existingKeys=["laptop", 4711]))
    assert run.monitor.by_type(SSH_KEY) == []  # nothing uploaded: no uniqueness_error
    server_keys = run.monitor.by_type(SERVER)[0].inputs["sshKeys"]
    assert "4711" in server_keys  # a numeric ID is looked up by ID
    assert len(server_keys) == 2 and all(key.isdigit() for key in server_keys)


def test_uploaded_and_existing_keys_both_reach_the_server(deploy: Deploy) -> None:
    run = deploy(ssh_config(publicKeys=[OPERATOR_KEY], existingKeys=["4711"]))
    uploaded = run.monitor.by_type(SSH_KEY)
    assert [key.inputs["publicKey"] for key in uploaded] == [OPERATOR_KEY]
    uploaded_id = run.monitor.resources[uploaded[0].urn].id
    assert sorted(run.monitor.by_type(SERVER)[0].inputs["sshKeys"]) == sorted([uploaded_id, "4711"])


def test_at_least_one_ssh_key_is_required(deploy: Deploy) -> None:
    with pytest.raises(Exception, match=r"torrust-hybrid-tls:ssh: needs at least one key") as error:
        deploy(ssh_config())
    assert "ssh.publicKeys" in str(error.value) and "ssh.existingKeys" in str(error.value)


@pytest.mark.parametrize("bad", ["", "  ", True, 1.5, "laptop\nkey"])
def test_existing_key_refs_are_names_or_ids(bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"ssh\.existingKeys\[0\]") as error:
        load_settings("dev", {**dev_config(), **ssh_config(existingKeys=[bad])}.get)
    assert "pulumi config set --path 'ssh.existingKeys[0]'" in str(error.value)


# (type, location, accepted): Hetzner sells CX/CAX in Germany and Finland only; CPX and CCX
# everywhere (core/settings.py SERVER_TYPE_LOCATIONS cites the sources).
SERVER_PAIRS = [
    ("cx23", "nbg1", True),
    ("cx23", "fsn1", True),
    ("cx33", "hel1", True),
    ("cax11", "hel1", True),
    ("cx23", "ash", False),
    ("cx23", "hil", False),
    ("cx23", "sin", False),
    ("cax21", "ash", False),
    ("cax11", "sin", False),
    ("cpx22", "ash", True),
    ("cpx22", "hil", True),
    ("cpx32", "sin", True),
    ("ccx13", "sin", True),
    ("cpx22", "nbg1", True),
]


@pytest.mark.parametrize(("server_type", "location", "accepted"), SERVER_PAIRS)
def test_server_type_must_be_sold_in_the_location(server_type: str, location: str, accepted: bool) -> None:
    config = {**dev_config(), "server": {"type": server_type, "location": location}}
    if accepted:
        settings = load_settings("dev", config.get)
        assert (settings.server.type, settings.server.location) == (server_type, location)
        return
    with pytest.raises(ConfigError) as error:
        load_settings("dev", config.get)
    message = str(error.value)
    assert f"server.type '{server_type}'" in message and f"server.location '{location}'" in message
    valid = re.search(r"choose e\.g\. server\.type '([a-z0-9]+)'", message)
    assert valid, message
    # The suggestion is itself accepted for that location.
    load_settings("dev", {**dev_config(), "server": {"type": valid.group(1), "location": location}}.get)
    assert "fix: pulumi config set --path 'server.type'" in message
