"""A dockerd of our own inside the server network namespace, with the daemon.json cloud-init renders.

Debian 12's docker.io is 20.10.24; the server runs docker-ce from Docker's repository. Differences
forced by the version are applied here and listed in DAEMON_VERSION_DIFFERENCES (shown in README).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

# key -> (value forced here, why). Anything else in daemon.json is used exactly as rendered.
DAEMON_VERSION_DIFFERENCES: dict[str, tuple[Any, str]] = {
    "experimental": (
        True,
        "dockerd < 27 accepts ip6tables only with experimental enabled (moby v27.0.0 release notes: "
        "ip6tables no longer experimental); docker-ce on the server does not need it",
    ),
}


def rendered_daemon_json(cloud_init: Path) -> dict[str, Any]:
    document = yaml.safe_load(cloud_init.read_text().removeprefix("#cloud-config\n"))
    for entry in document.get("write_files") or []:
        if entry.get("path") == "/etc/docker/daemon.json":
            config: dict[str, Any] = json.loads(entry["content"])
            return config
    raise AssertionError(f"{cloud_init}: no write_files entry for /etc/docker/daemon.json")


class Dockerd:
    def __init__(self, root: Path, netns: str, daemon_json: dict[str, Any], data_root: Path) -> None:
        self.root = root
        self.data_root = data_root
        self.netns = netns
        self.config = dict(daemon_json)
        for key, (value, _why) in DAEMON_VERSION_DIFFERENCES.items():
            self.config[key] = value
        self.socket = root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "dockerd.log"

    def start(self, timeout: float = 60) -> None:
        (self.root / "exec").mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        config_file = self.root / "daemon.json"
        config_file.write_text(json.dumps(self.config))
        tag = self.netns
        argv = [
            # nsenter joins only the network namespace; `ip netns exec` would also remount /sys and
            # hide the cgroup mounts dockerd needs.
            "nsenter", f"--net=/run/netns/{self.netns}",
            "dockerd",
            f"--config-file={config_file}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"-H={self.url}",
            # Its own containerd namespaces: never share state with another daemon on this machine.
            f"--containerd-namespace={tag}",
            f"--containerd-plugins-namespace={tag}-plugins",
            f"--cgroup-parent=/{tag}",
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited ({self.proc.returncode}):\n{self.log_tail()}")
            if self.socket.exists():
                probe = subprocess.run(
                    ["docker", "-H", self.url, "version", "--format", "{{.Server.Version}}"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                if probe.returncode == 0:
                    self.version = probe.stdout.strip()
                    return
            time.sleep(0.2)
        raise TimeoutError(f"dockerd did not answer within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        # Its cgroup parent (one folder per controller) stays behind empty unless removed.
        for folder in sorted(Path("/sys/fs/cgroup").glob(f"*/{self.netns}"), reverse=True):
            for child in sorted(folder.glob("*/"), reverse=True):
                with contextlib.suppress(OSError):
                    child.rmdir()
            with contextlib.suppress(OSError):
                folder.rmdir()
        # The daemon's mounts (overlay, netns, shm) are gone with it; its exec root holds only state.
        shutil.rmtree(self.root / "exec", ignore_errors=True)
