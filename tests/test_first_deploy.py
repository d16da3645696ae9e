"""What a real first `pulumi up` needs beyond what the mocks accept (issue 8): Hetzner, the Docker
provider over SSH, the data volume and the metadata service."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.docker_host import RELEASE_VOLUME_SCRIPT
from core import rendering
from core.settings import ConfigError, load_settings
from tests.conftest import Deploy, dev_config
from tests.realtools import require_tool, run
from tools.mocks import reveal
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
# The example stack's key: a real public key (the program parses the key blob).
OPERATOR_KEY = dev_config()["ssh"]["publicKeys"][0]


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


# --- The host: cloud-init, the readiness step's delete ----------------------------------------------


def cloud_init(run: ProgramRun) -> dict[str, Any]:
    server = run.monitor.by_type(SERVER)[0]
    document: dict[str, Any] = yaml.safe_load(reveal(server.inputs["userData"]))
    return document


def written(document: dict[str, Any], path: str) -> str:
    content: str = next(f for f in document["write_files"] if f["path"] == path)["content"]
    return content


@pytest.mark.parametrize(
    ("image", "experimental"),
    [("docker-ce", False), ("debian-12", True), ("ubuntu-24.04", True), ("debian-13", True)],
)
def test_distribution_docker_gets_experimental_for_ip6tables(
    deploy: Deploy, image: str, experimental: bool
) -> None:
    document = cloud_init(deploy({"server": {"image": image}}))
    daemon = json.loads(written(document, "/etc/docker/daemon.json"))
    assert daemon["ip6tables"] is True
    assert daemon.get("experimental", False) is experimental
    assert ("docker.io" in document["packages"]) is experimental


def test_sshd_admits_the_providers_parallel_dials(deploy: Deploy) -> None:
    drop_in = written(cloud_init(deploy()), "/etc/ssh/sshd_config.d/10-torrust.conf")
    assert f"MaxStartups {rendering.SSHD_MAX_STARTUPS}\n" in drop_in
    begin = int(rendering.SSHD_MAX_STARTUPS.split(":")[0])
    assert begin >= 64  # every network, image and container dial of one `up` at once, with margin


def test_containers_cannot_reach_the_metadata_service(deploy: Deploy) -> None:
    document = cloud_init(deploy())
    script = written(document, rendering.METADATA_BLOCK_SCRIPT_PATH)
    assert "iptables -w -I DOCKER-USER 1 -d 169.254.169.254/32 -j REJECT" in script
    assert "iptables -w -I FORWARD 1 -j DOCKER-USER" in script
    unit = written(document, f"/etc/systemd/system/{rendering.METADATA_BLOCK_UNIT}")
    assert f"ExecStart={rendering.METADATA_BLOCK_SCRIPT_PATH}" in unit
    # Before dockerd starts containers, and re-run with every docker restart.
    assert "Before=docker.service" in unit and "PartOf=docker.service" in unit
    assert "WantedBy=docker.service" in unit
    runcmd = document["runcmd"]
    enable = ["systemctl", "enable", "--now", rendering.METADATA_BLOCK_UNIT]
    assert enable in runcmd
    assert runcmd.index(enable) < runcmd.index(["systemctl", "enable", "--now", "docker"])


def test_readiness_delete_releases_the_volume_before_the_detach(deploy: Deploy) -> None:
    run = deploy()
    ready = run.monitor.one("command:remote:Command", "docker-ready")
    attachment = run.monitor.by_type("hcloud:index/volumeAttachment:VolumeAttachment")[0]
    # Pulumi deletes dependents first: every container and the backup job before `ready`, and
    # `ready` (its delete script) before the VolumeAttachment it depends on.
    assert attachment.urn in ready.options["dependsOn"]
    assert ready.inputs["delete"] == RELEASE_VOLUME_SCRIPT
    assert ready.options["deleteBeforeReplace"] is True
    for name in CONTAINERS:
        assert ready.urn in run.monitor.one(CONTAINER, name).options["dependsOn"]
    assert ready.urn in run.monitor.one("command:remote:Command", "backups-install").options["dependsOn"]
    script = RELEASE_VOLUME_SCRIPT
    stop_docker = script.index("systemctl stop docker.socket docker.service")
    assert script.index("docker stop --time 30") < stop_docker < script.index("umount /srv/torrust")
    assert "exit 1" in script  # a volume that stays mounted stops the detach


def test_host_scripts_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    scripts = {
        "release-volume.sh": "#!/bin/sh\n" + RELEASE_VOLUME_SCRIPT + "\n",
        "block-metadata.sh": rendering.metadata_block_script(),
    }
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
        result = run([shellcheck, "--shell=sh", "--severity=style", str(tmp_path / name)])
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"
