"""Fixtures: a fresh event loop and a fresh run of __main__.py under mocks for every test."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import PROJECT
from tests.realtools import REAL_TIER_REASON, real_tools_enabled
from tools.program import ProgramRun, run_program

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_STACK = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())["config"]

TOKEN = "test-admin-token-0123456789abcdef"
PASSWORD = "test-grafana-password-0123"


def dev_config() -> dict[str, Any]:
    """The example stack's structured config (a deep copy tests may change)."""
    return {key.split(":", 1)[1]: copy.deepcopy(value) for key, value in DEV_STACK.items()}


@pytest.fixture(autouse=True)
def event_loop_per_test() -> Iterator[None]:
    # One loop per test: nothing leaks between program runs (pulumi/pulumi#24338).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


Deploy = Callable[..., ProgramRun]


@pytest.fixture
def deploy() -> Deploy:
    """Run the program once with the dev stack config, changed by `changes` (key -> value or None).

    `preview=False` runs it as `pulumi up` (documentation-only values are refused then).
    """

    def run(
        changes: dict[str, Any] | None = None,
        secrets: dict[str, str | None] | None = None,
        stack: str = "dev",
        preview: bool = True,
        extra: dict[str, Any] | None = None,
        extra_secret_keys: list[str] | None = None,
    ) -> ProgramRun:
        config = dev_config()
        for key, value in (changes or {}).items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        secret_values: dict[str, str | None] = {"trackerAdminToken": TOKEN, "grafanaAdminPassword": PASSWORD}
        secret_values.update(secrets or {})
        flat: dict[str, Any] = {f"{PROJECT}:{key}": value for key, value in config.items()}
        secret_keys = []
        for key, value in secret_values.items():
            if value is not None:
                flat[f"{PROJECT}:{key}"] = value
                secret_keys.append(f"{PROJECT}:{key}")
        # Keys of any namespace, as the CLI passes them (full key -> string value).
        flat.update(extra or {})
        secret_keys += extra_secret_keys or []
        return run_program(stack, flat, secret_keys, preview=preview)

    return run


# The unit tier (`make test`, seconds) skips, with the reason, every test that runs real tools or
# the shipped tools as processes: whole files here, single tests with @pytest.mark.real, and any
# test that asks for a tool (tests.realtools.require_tool). `make check` (REQUIRE_REAL_TOOLS=1) runs
# them all; REAL_TOOLS=1 runs them where the tools exist. The e2e and engine tiers skip themselves.
REAL_TIER_FILES = {
    "test_real_docker_host.py": "starts real dockerd daemons in network namespaces",
    "test_offsite.py": "builds restic and rest-server from the Go module proxy (~6 min cold), real sshd",
    "test_newcomer.py": "runs `make` in scratch checkouts",
    "test_plan.py": "runs `make plan`'s tool (python -m tools.plan) as a process",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real: runs real tools or the shipped tools as processes (make check, not make test)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    if real_tools_enabled():
        return
    for item in items:
        name = Path(str(item.fspath)).name
        reason = REAL_TIER_FILES.get(name)
        if reason is None and (name.startswith("test_real_") or item.get_closest_marker("real")):
            reason = "real tools"
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"{REAL_TIER_REASON}: {reason}"))
