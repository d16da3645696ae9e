"""The pinned restic (services.backups.backup.RESTIC_VERSION) and rest-server for the real-tool tests,
built once into the cache.

`python -m tests.restic_build` builds it (CI calls the same code through the `restic` fixture);
later runs find it in ${TORRUST_CACHE:-/var/cache/torrust-hybrid-tls}/restic-<version>/bin/restic.
The build is `go install github.com/restic/restic/cmd/restic@v<version>` from the Go module proxy
(the server installs the release binary of the same version instead, services.backups.backup._restic_install).
restic 0.19.1's go.mod needs Go >= 1.25; when the `go` on PATH is missing or older (Debian 12 ships
1.19), the Go toolchain itself comes from the module proxy too (module golang.org/toolchain, the
archive the go command fetches for GOTOOLCHAIN), checked against a pinned sha256.
Timings on the 2-core development machine: restic cold (module download + build) 6m24s, with the
module cache warm but no build cache 3m34s (using the toolchain fetched from the proxy), cache hit
0s; rest-server 13s.
Idempotent and safe with a missing or half-written cache: builds go to a temp folder and are renamed
into place under a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

from services.backups.backup import RESTIC_VERSION

RESTIC_MODULE = "github.com/restic/restic/cmd/restic"
GO_MIN = (1, 25)
GO_TOOLCHAIN = "1.26.8"
GO_TOOLCHAIN_URL = f"https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go{GO_TOOLCHAIN}.linux-amd64.zip"
# sha256 of the archive above as served by proxy.golang.org on 2026-11-26.
GO_TOOLCHAIN_SHA256 = "30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7"
BUILD_TIMEOUT = 40 * 60


class BuildError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("TORRUST_CACHE", "/var/cache/torrust-hybrid-tls"))


def restic_path() -> Path:
    return cache_root() / f"restic-{RESTIC_VERSION}" / "bin" / "restic"


def _version_output(binary: Path, flag: str) -> str:
    """What `binary <flag>` prints, or "" when it cannot run."""
    try:
        return subprocess.run(
            [str(binary), flag], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return ""


def _version_ok(binary: Path) -> bool:
    return _version_output(binary, "version").startswith(f"restic {RESTIC_VERSION} ")


def _go_version(go: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except OSError:
        return None
    match = re.match(r"go(\d+)\.(\d+)", out.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _locked(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def go_binary() -> str:
    """A go >= GO_MIN: the one on PATH, or the pinned toolchain from the module proxy (cached)."""
    on_path = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if on_path and (_go_version(on_path) or (0, 0)) >= GO_MIN:
        return on_path
    return fetch_go_toolchain()


def fetch_go_toolchain() -> str:
    """The pinned Go toolchain (golang.org/toolchain from the module proxy), unpacked in the cache."""
    root = cache_root() / f"go-{GO_TOOLCHAIN}"
    go = root / "bin" / "go"
    if go.exists():
        return str(go)
    fd = _locked(cache_root() / f"go-{GO_TOOLCHAIN}.lock")
    try:
        if go.exists():
            return str(go)
        with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
            archive = Path(tmp) / "go.zip"
            with urllib.request.urlopen(GO_TOOLCHAIN_URL, timeout=600) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
            digest = hashlib.sha256(archive.read_bytes()).hexdigest()
            if digest != GO_TOOLCHAIN_SHA256:
                raise BuildError(f"{GO_TOOLCHAIN_URL}: sha256 {digest}, expected {GO_TOOLCHAIN_SHA256}")
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(tmp)
                # golang.org/toolchain@<version>/bin/go ...
                [go_entry] = [name for name in zipped.namelist() if name.endswith("/bin/go")]
            unpacked = Path(tmp) / go_entry.removesuffix("/bin/go")
            for binary in (unpacked / "bin").iterdir():
                binary.chmod(0o755)
            for tool in (unpacked / "pkg" / "tool").rglob("*"):
                if tool.is_file():
                    tool.chmod(0o755)
            unpacked.rename(root)
    finally:
        os.close(fd)
    return str(go)


def restic_cached() -> bool:
    return _version_ok(restic_path())


def build_restic() -> Path:
    """The pinned restic binary, built into the cache unless it is there already."""
    target = restic_path()
    if _version_ok(target):
        return target
    fd = _locked(target.parent.parent.with_suffix(".lock"))
    try:
        if _version_ok(target):
            return target
        go = go_binary()
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as gobin:
            env = {
                **os.environ,
                "GOBIN": gobin,
                "CGO_ENABLED": "0",
                "GOFLAGS": "-buildvcs=false",
                "GOTOOLCHAIN": "local",
            }
            result = subprocess.run(
                [go, "install", f"{RESTIC_MODULE}@v{RESTIC_VERSION}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
            if result.returncode != 0:
                raise BuildError(
                    f"go install {RESTIC_MODULE}@v{RESTIC_VERSION} failed:\n{result.stderr[-4000:]}"
                )
            os.replace(Path(gobin) / "restic", target)
    finally:
        os.close(fd)
    if not _version_ok(target):
        raise BuildError(f"{target} does not report restic {RESTIC_VERSION}")
    return target


REST_SERVER_VERSION = "0.14.0"
REST_SERVER_MODULE = "github.com/restic/rest-server"


def rest_server_path() -> Path:
    return cache_root() / f"rest-server-{REST_SERVER_VERSION}" / "bin" / "rest-server"


def _rest_server_ok(binary: Path) -> bool:
    return f"rest-server {REST_SERVER_VERSION} " in _version_output(binary, "--version")


def rest_server_cached() -> bool:
    return _rest_server_ok(rest_server_path())


def build_rest_server() -> Path:
    """restic's rest-server, pinned, built from the Go module proxy into the cache.

    Built inside a throw-away module (`go get` + `go build`): `go install module@version` also reads
    the module's version list for deprecations, which proxy.golang.org refuses for rest-server (403).
    """
    target = rest_server_path()
    if _rest_server_ok(target):
        return target
    fd = _locked(target.parent.parent.with_suffix(".lock"))
    try:
        if _rest_server_ok(target):
            return target
        go = go_binary()
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}
            steps = [
                [go, "mod", "init", "torrust-rest-server-build"],
                [go, "get", f"{REST_SERVER_MODULE}/cmd/rest-server@v{REST_SERVER_VERSION}"],
                [go, "build", "-o", str(Path(work) / "rest-server"), f"{REST_SERVER_MODULE}/cmd/rest-server"],
            ]
            for step in steps:
                result = subprocess.run(
                    step,
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=BUILD_TIMEOUT,
                    check=False,
                )
                if result.returncode != 0:
                    raise BuildError(f"{' '.join(step[1:])} failed:\n{result.stderr[-4000:]}")
            os.replace(Path(work) / "rest-server", target)
    finally:
        os.close(fd)
    if not _rest_server_ok(target):
        raise BuildError(f"{target} does not report rest-server {REST_SERVER_VERSION}")
    return target


def main() -> int:
    started = time.monotonic()
    path = build_restic()
    print(f"{path} (restic {RESTIC_VERSION}) ready in {time.monotonic() - started:.0f}s")
    started = time.monotonic()
    path = build_rest_server()
    print(f"{path} (rest-server {REST_SERVER_VERSION}) ready in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
