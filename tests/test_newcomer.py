"""A newcomer's two commands (`make plan STACK=dev`, `make test`) and what they read in plan.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("plan") / "dev"
    result = subprocess.run(
        [sys.executable, "-m", "tools.plan", "--stack", "dev", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads((out / "plan.json").read_text())
    return loaded


def numbers(value: Any) -> list[int | float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers(item)]
    return []


def test_plan_json_shows_integers_as_integers(plan: dict[str, Any]) -> None:
    pingoo = next(r for r in plan["resources"] if r["name"] == "pingoo" and r["type"].endswith("Container"))
    port = pingoo["inputs"]["ports"][0]
    assert (port["internal"], port["external"]) == (443, 443)
    assert type(pingoo["inputs"]["ports"][0]["internal"]) is int
    assert type(pingoo["inputs"]["memory"]) is int and type(pingoo["inputs"]["stopTimeout"]) is int
    floats = [n for r in plan["resources"] for n in numbers(r["inputs"]) if isinstance(n, float)]
    assert floats == [], f"whole numbers shown as floats in plan.json: {floats[:5]}"


# --- make creates and refreshes the virtualenv itself ----------------------------------------------

FAKE_BOOTSTRAP = """#!/bin/sh
echo "bootstrap $(basename "$0") $*" >> "$FAKE_LOG"
case "$1" in
  -c) exit "${FAKE_OLD:-0}" ;;
  -m) if [ "$2" = venv ]; then mkdir -p "$3/bin" && cp "$FAKE_VENV_PYTHON" "$3/bin/python"; fi ;;
esac
"""
FAKE_VENV_PYTHON = """#!/bin/sh
echo "venv $*" >> "$FAKE_LOG"
"""


class Checkout:
    """A copy of the Makefile and requirements with stand-in interpreters first on PATH.

    The stand-ins log how they are called, so the Makefile's own logic (which interpreter creates
    the virtualenv, when pip runs) is tested without downloading anything.
    """

    def __init__(self, root: Path, old_python: bool = False) -> None:
        self.root = root
        for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
            shutil.copy(REPO_ROOT / name, root / name)
        bin_dir = root / "fakebin"
        bin_dir.mkdir()
        for name in ("python3.13", "python3.12", "python3.11", "python3"):
            (bin_dir / name).write_text(FAKE_BOOTSTRAP)
            (bin_dir / name).chmod(0o755)
        (root / "venv-python").write_text(FAKE_VENV_PYTHON)
        (root / "venv-python").chmod(0o755)
        self.log = root / "calls.log"
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_LOG": str(self.log),
            "FAKE_VENV_PYTHON": str(root / "venv-python"),
            "FAKE_OLD": "1" if old_python else "0",
        }
        self.env.pop("MAKEFLAGS", None)

    def make(self, *args: str) -> subprocess.CompletedProcess[str]:
        if self.log.exists():
            self.log.unlink()
        return subprocess.run(
            ["make", "--no-print-directory", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


MAKE_TEST = "venv -m pytest -q -n auto --dist loadfile"


def require_make() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")


@pytest.mark.parametrize("command", [["plan", "STACK=dev"], ["test"]])
def test_each_readme_command_creates_the_virtualenv(tmp_path: Path, command: list[str]) -> None:
    require_make()
    checkout = Checkout(tmp_path)
    result = checkout.make(*command)
    assert result.returncode == 0, result.stderr
    calls = checkout.calls()
    # The first interpreter that is 3.11+ creates venv/, then the venv's pip installs, then it runs.
    assert calls[0] == "bootstrap python3.13 -c import sys; sys.exit(sys.version_info < (3, 11))"
    assert "bootstrap python3.13 -m venv venv" in calls
    assert "venv -m pip install -q --disable-pip-version-check -r requirements-dev.txt" in calls
    expected = "venv -m tools.plan --stack dev" if command[0] == "plan" else MAKE_TEST
    assert calls[-1] == expected
    assert (tmp_path / "venv/.requirements.stamp").is_file()


def test_a_fresh_virtualenv_is_reused_and_a_stale_one_reinstalled(tmp_path: Path) -> None:
    require_make()
    checkout = Checkout(tmp_path)
    assert checkout.make("test").returncode == 0
    result = checkout.make("test")
    assert result.returncode == 0, result.stderr
    assert checkout.calls() == [MAKE_TEST]  # nothing created, nothing installed
    # A requirements change (e.g. a pull) makes the stamp stale: pip runs again, venv is kept.
    stamp = (tmp_path / "venv/.requirements.stamp").stat().st_mtime
    os.utime(tmp_path / "requirements.txt", (stamp + 10, stamp + 10))
    assert checkout.make("test").returncode == 0
    calls = checkout.calls()
    assert not any("-m venv" in call for call in calls)
    assert "venv -m pip install -q --disable-pip-version-check -r requirements-dev.txt" in calls


def test_make_refuses_python_older_than_3_11(tmp_path: Path) -> None:
    require_make()
    checkout = Checkout(tmp_path, old_python=True)
    result = checkout.make("plan", "STACK=dev")
    assert result.returncode != 0
    assert "Python 3.11 or newer is needed" in result.stderr
    assert "BOOTSTRAP_PYTHON=" in result.stderr
    assert not (tmp_path / "venv").exists()
    assert not any("-m venv" in call for call in checkout.calls())


# --- targets that need a tool say which, and how to get it --------------------------------------


def without(checkout: Checkout, tool: str) -> None:
    """PATH of the fake bin folder plus a folder of links to every tool of PATH but `tool`."""
    tools = checkout.root / "tools-without"
    tools.mkdir(exist_ok=True)
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for entry in os.listdir(folder):
            link = tools / entry
            if entry != tool and not link.exists() and os.access(os.path.join(folder, entry), os.X_OK):
                link.symlink_to(os.path.join(folder, entry))
    checkout.env["PATH"] = f"{checkout.root / 'fakebin'}:{tools}"


def test_doctor_without_the_pulumi_cli_says_how_to_get_it(tmp_path: Path) -> None:
    require_make()
    checkout = Checkout(tmp_path)
    without(checkout, "pulumi")
    result = checkout.make("doctor", "STACK=dev")
    assert result.returncode != 0
    assert "make doctor needs pulumi on PATH" in result.stderr
    assert "pulumi.com/docs/iac/download-install" in result.stderr and "OUTPUTS=" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any("tools.doctor" in call for call in checkout.calls())
    # With OUTPUTS the CLI is not needed: the doctor runs.
    result = checkout.make("doctor", "OUTPUTS=outputs.json")
    assert checkout.calls()[-1] == "venv -m tools.doctor --outputs outputs.json"


def test_plan_diff_without_git_says_how_to_get_it(tmp_path: Path) -> None:
    require_make()
    checkout = Checkout(tmp_path)
    without(checkout, "git")
    result = checkout.make("plan-diff", "BASE=HEAD~1")
    assert result.returncode != 0
    assert "make plan-diff needs git on PATH" in result.stderr and "apt-get install git" in result.stderr
    assert not any("tools.plan_diff" in call for call in checkout.calls())
