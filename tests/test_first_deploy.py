"""What a real first `pulumi up` needs beyond what the mocks accept (issue 8): Hetzner, the Docker
provider over SSH, the data volume and the metadata service."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Deploy
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
