"""Run __main__.py under mocks with a given configuration (used by the offline plan and the tests)."""

from __future__ import annotations

import json
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import settings as pulumi_settings

from core.settings import PROJECT
from tools.mocks import SECRET_MASK, DeploymentMocks, RecordingMonitor

REPO_ROOT = Path(__file__).resolve().parent.parent
MAIN = REPO_ROOT / "__main__.py"


def configure(
    stack: str, config: dict[str, Any], secret_keys: list[str], *, preview: bool = True
) -> RecordingMonitor:
    """Fresh settings, root stack, config and mocks. Call before running the program.

    `preview=True` (the default, like `pulumi preview` and the offline plan) lets the example
    stack's documentation-only values through; `preview=False` is `pulumi up`, which refuses them.
    """
    # reset_options clears the root Stack so that every run starts from a new one.
    pulumi_settings.reset_options(project=PROJECT, stack=stack)
    flat = {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}
    pulumi.runtime.set_all_config(flat, secret_keys)
    mocks = DeploymentMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    return monitor


def run_main() -> dict[str, Any]:
    """Execute the program; return its stack outputs (as Outputs)."""
    runpy.run_path(str(MAIN))
    root = pulumi.runtime.get_root_resource()
    assert root is not None
    outputs: dict[str, Any] = root.outputs  # type: ignore[attr-defined]
    return outputs


async def resolve_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    """Await every stack output; secret ones become "[secret]"."""
    result: dict[str, Any] = {}
    for key, value in outputs.items():
        output = pulumi.Output.from_input(value)
        resolved = await output.future()
        result[key] = SECRET_MASK if await output.is_secret() else resolved
    return result


@dataclass
class ProgramRun:
    monitor: RecordingMonitor
    outputs: dict[str, Any]


def run_program(
    stack: str, config: dict[str, Any], secret_keys: list[str], *, preview: bool = True
) -> ProgramRun:
    """Configure, run and wait for the whole program (outside of any test framework)."""
    monitor = configure(stack, config, secret_keys, preview=preview)
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def execute() -> pulumi.Output[None]:
        outputs = run_main()

        async def collect() -> None:
            holder.update(await resolve_outputs(outputs))

        return pulumi.Output.from_input(collect())

    execute()
    return ProgramRun(monitor=monitor, outputs=holder)
