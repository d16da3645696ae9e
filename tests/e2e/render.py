"""Render the plan for the e2e tier: `make plan`'s code with known test secrets.

`python -m tests.e2e.render OUT` writes OUT/plan.json, OUT/files/, OUT/cloud-init.yaml exactly as
`make plan` does (tools.plan.write_plan: secrets masked as "[secret]"), plus OUT/revealed.json
(mode 0600): the Docker resources' inputs unmasked, from which the replay takes the values at the
"[secret]" places only. Run in a subprocess: the Pulumi mock runtime keeps global state.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from core.settings import PROJECT, SECRET_KEYS
from tools.mocks import reveal
from tools.plan import load_stack_config, write_plan
from tools.program import REPO_ROOT, run_program

# Known test values (never real secrets); the checks use them, the tier never prints them.
TEST_SECRETS = {key: f"e2e-test-{key}-0123456789abcdef0123" for key in SECRET_KEYS}


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    stack = argv[1] if len(argv) > 1 else "dev"
    config, secret_keys, _notes = load_stack_config(REPO_ROOT / f"Pulumi.{stack}.yaml")
    for key, value in TEST_SECRETS.items():
        full = f"{PROJECT}:{key}"
        config[full] = value
        if full not in secret_keys:
            secret_keys.append(full)
    asyncio.set_event_loop(asyncio.new_event_loop())
    run = run_program(stack, config, secret_keys)
    write_plan(stack, run, out, {f"{PROJECT}:{k}": v for k, v in TEST_SECRETS.items()})
    revealed = {r.name: reveal(r.inputs) for r in run.monitor.registrations if r.type.startswith("docker:")}
    target = out / "revealed.json"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(revealed, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
