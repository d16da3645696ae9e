"""Fixtures: a fresh event loop and a fresh run of __main__.py under mocks for every test."""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import PROJECT
from tests.realtools import real_tools_required
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


# Slow real-engine tiers: `make test` stays fast and skips them with a reason; `make check`
# (REQUIRE_REAL_TOOLS=1) and `make e2e` (E2E=1) run them. The e2e tier skips itself (tests/e2e).
SLOW_TIERS = {
    "test_real_docker_host.py": "starts real dockerd daemons in network namespaces",
    "test_offsite.py": "builds restic and rest-server from the Go module proxy (~6 min cold), real sshd",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    if real_tools_required() or os.environ.get("E2E") == "1":
        return
    for item in items:
        reason = SLOW_TIERS.get(Path(str(item.fspath)).name)
        if reason:
            item.add_marker(
                pytest.mark.skip(reason=f"slow real-engine tier ({reason}): runs in `make check`")
            )
