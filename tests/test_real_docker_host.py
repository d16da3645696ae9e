"""The host as cloud-init renders it, against the real dockerd and sshd (Debian's packages).

- daemon.json for a server image other than docker-ce starts the distribution's dockerd (20.10.24
  here, Debian 12) with ip6tables, and an IPv6 network can be created; the docker-ce daemon.json
  (no `experimental`) does not start on 20.10: that difference is why docker_daemon() adds it.
- The metadata block, run before dockerd like the rendered unit, stops a container from reaching a
  listener on 169.254.169.254 routed through FORWARD (another network namespace standing in for
  Hetzner's metadata service), and keeps doing so after a docker restart; without it the same
  container reads the "user data".
- The rendered sshd drop-in admits a burst of parallel SSH sessions (the Docker provider's
  dial-stdio) that sshd's default MaxStartups drops.

Every daemon runs in its own network namespace with its own data-root, exec-root, pidfile and
socket under the test's temporary directory; every wait is bounded; everything is removed after.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from core import rendering
from core.settings import StackSettings, load_settings
from tests.conftest import dev_config
from tests.realtools import LOOPBACK4, Proc, RenderedPlan, dev_plan, free_port, missing, require_tool, run

__all__ = ["dev_plan"]  # the session fixture, imported so pytest finds it here

METADATA = rendering.METADATA_ADDRESS
USER_DATA = "#cloud-config user data with the host private key\n"


def settings_for(image: str) -> StackSettings:
    return load_settings("dev", {**dev_config(), "server": {"image": image}}.get)


def require_root() -> None:
    if os.geteuid() != 0:
        missing("dockerd and network namespaces need root")


def dockerd_version(dockerd: str) -> tuple[int, int]:
    match = re.search(r"version (\d+)\.(\d+)", run([dockerd, "--version"], check=True).stdout)
    assert match, "cannot read dockerd --version"
    return int(match.group(1)), int(match.group(2))


class Netns:
    """A named network namespace with loopback up, deleted on close."""

    def __init__(self, prefix: str) -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        run(["ip", "netns", "add", self.name], check=True)
        self.exec("ip", "link", "set", "lo", "up")

    def argv(self, *argv: str) -> list[str]:
        # nsenter, not `ip netns exec`: that one remounts /sys and so hides the cgroup mounts
        # dockerd needs ("Devices cgroup isn't mounted").
        return ["nsenter", f"--net=/run/netns/{self.name}", "--", *argv]

    def exec(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run(self.argv(*argv), timeout=timeout, check=True)

    def close(self) -> None:
        run(["ip", "netns", "del", self.name])


@dataclass
class Dockerd:
    """dockerd in `netns`, all of its state below `root`, talking on its own unix socket."""

    netns: Netns
    root: Path
    daemon_json: dict[str, object]
    proc: Proc | None = None

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    def start(self, timeout: float = 60) -> None:
        config = self.root / "daemon.json"
        config.write_text(json.dumps(self.daemon_json, sort_keys=True))
        argv = self.netns.argv(
            require_tool("dockerd"),
            "--config-file", str(config),
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "docker.pid"),
            "-H", f"unix://{self.socket}",
        )  # fmt: skip
        self.proc = Proc(f"dockerd-{len(list(self.root.glob('dockerd*.log')))}", argv, self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.running():
                return  # the caller reads exited() / log()
            if self.socket.exists() and self.docker("info", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"dockerd did not answer within {timeout:.0f}s:\n{self.proc.log()}")

    def exited(self, timeout: float = 30) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(
            [require_tool("docker"), "-H", f"unix://{self.socket}", *args], timeout=timeout, check=check
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.running():
            with contextlib.suppress(Exception):
                ids = self.docker("ps", "-aq", check=False).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False)
        self.proc.stop(timeout=30)
        self.proc = None


@pytest.fixture
def namespaces() -> Iterator[list[Netns]]:
    require_root()
    for tool in ("ip", "nsenter", "iptables", "dockerd", "docker"):
        require_tool(tool)
    created: list[Netns] = []
    yield created
    for netns in reversed(created):
        netns.close()


@contextlib.contextmanager
def dockerd_in(netns: Netns, daemon_json: dict[str, object]) -> Iterator[Dockerd]:
    # A short root: containerd's sockets below exec-root must fit a unix socket path (108 bytes),
    # which pytest's tmp_path does not.
    root = Path(tempfile.mkdtemp(prefix="h8d-", dir="/tmp"))
    daemon = Dockerd(netns, root, daemon_json)
    try:
        yield daemon
    finally:
        daemon.stop()
        # A daemon that died hard may leave its mounts behind; never leave them under /tmp.
        run(["sh", "-c", f"grep -o ' {root}/[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l"])
        shutil.rmtree(root, ignore_errors=True)


# --- daemon.json ---------------------------------------------------------------------------------


def test_distribution_daemon_json_starts_the_real_dockerd_with_ipv6(
    namespaces: list[Netns], tmp_path: Path
) -> None:
    daemon_json = rendering.docker_daemon(settings_for("debian-12"))
    assert daemon_json["ip6tables"] is True and daemon_json["experimental"] is True
    netns = Netns("h8dj")
    namespaces.append(netns)
    with dockerd_in(netns, daemon_json) as daemon:
        daemon.start()
        assert daemon.proc is not None and daemon.proc.running(), daemon.proc and daemon.proc.log()
        created = daemon.docker(
            "network", "create", "--ipv6", "--subnet", "172.31.250.0/24",
            "--subnet", "fd00:7a:1::/64", "torrust-v6-probe",
        )  # fmt: skip
        assert created.returncode == 0
        inspect = json.loads(daemon.docker("network", "inspect", "torrust-v6-probe").stdout)[0]
        assert inspect["EnableIPv6"] is True
        assert "fd00:7a:1::/64" in {config["Subnet"] for config in inspect["IPAM"]["Config"]}
        # ip6tables really is on: dockerd wrote its IPv6 chains.
        assert "DOCKER" in netns.exec("ip6tables", "-S").stdout


def test_docker_ce_daemon_json_needs_docker_27_for_ip6tables(namespaces: list[Netns], tmp_path: Path) -> None:
    """The mutation: the docker-ce daemon.json on the distribution's dockerd (20.10 here)."""
    daemon_json = rendering.docker_daemon(settings_for("docker-ce"))
    assert "experimental" not in daemon_json and daemon_json["ip6tables"] is True
    netns = Netns("h8dc")
    namespaces.append(netns)
    with dockerd_in(netns, daemon_json) as daemon:
        daemon.start()
        assert daemon.proc is not None
        if dockerd_version(require_tool("dockerd")) >= (27, 0):
            assert daemon.proc.running(), daemon.proc.log()
            return
        assert daemon.exited() not in (None, 0), "dockerd < 27 started with ip6tables and no experimental"
        assert "ip6tables rules are only available if experimental features are enabled" in daemon.proc.log()


# --- The metadata service -----------------------------------------------------------------------


BUSYBOX = "/bin/busybox"


def busybox_image(daemon: Dockerd, tmp_path: Path) -> str:
    """A one-file image (Debian's static busybox): no registry is reachable here."""
    busybox = shutil.which("busybox") or BUSYBOX
    static = Path(busybox).is_file() and run(["ldd", busybox]).returncode != 0  # "not a dynamic executable"
    if not static:
        missing("a static busybox is needed to build a test image (apt-get install busybox-static)")
    archive = tmp_path / "busybox.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
    daemon.docker("import", str(archive), "torrust-probe:busybox")
    return "torrust-probe:busybox"


def host_fetch(host: Netns) -> subprocess.CompletedProcess[str]:
    """The host itself reading the user data (as cloud-init does), with Python's urllib."""
    code = (
        "import sys, urllib.request; "
        "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"
    )
    return run(host.argv(sys.executable, "-c", code, f"http://{METADATA}/userdata"), timeout=30)


def metadata_service(host: Netns, tmp_path: Path, namespaces: list[Netns]) -> Proc:
    """A second namespace owning 169.254.169.254, reached from `host` through a veth (FORWARD)."""
    meta = Netns("h8md")
    namespaces.append(meta)
    run(["ip", "link", "add", "h8veth-h", "netns", host.name, "type", "veth", "peer", "name", "h8veth-m",
         "netns", meta.name], check=True)  # fmt: skip
    host.exec("ip", "addr", "add", "10.253.0.1/30", "dev", "h8veth-h")
    host.exec("ip", "link", "set", "h8veth-h", "up")
    meta.exec("ip", "addr", "add", "10.253.0.2/30", "dev", "h8veth-m")
    meta.exec("ip", "addr", "add", f"{METADATA}/32", "dev", "lo")
    meta.exec("ip", "link", "set", "h8veth-m", "up")
    host.exec("ip", "route", "add", f"{METADATA}/32", "via", "10.253.0.2")
    served = tmp_path / "metadata"
    served.mkdir()
    (served / "userdata").write_text(USER_DATA)
    server = Proc(
        "metadata",
        meta.argv("python3", "-m", "http.server", "80", "--bind", METADATA, "--directory", str(served)),
        tmp_path,
    )
    deadline = time.monotonic() + 15
    while host_fetch(host).stdout != USER_DATA:
        if time.monotonic() > deadline or not server.running():
            server.stop()
            raise AssertionError(f"metadata stand-in not reachable from the host:\n{server.log()}")
        time.sleep(0.2)
    return server


def fetch_from_container(daemon: Dockerd, image: str) -> subprocess.CompletedProcess[str]:
    # busybox nc, not wget: the static (glibc) busybox's wget crashes on its service lookup.
    request = (
        f'printf "GET /userdata HTTP/1.0\\r\\nHost: {METADATA}\\r\\n\\r\\n" | {BUSYBOX} nc -w 3 {METADATA} 80'
    )
    return daemon.docker(
        "run", "--rm", "--network", "torrust-probe", image, BUSYBOX, "sh", "-c", request,
        check=False, timeout=60,
    )  # fmt: skip


def test_containers_cannot_read_the_metadata_service(
    namespaces: list[Netns], tmp_path: Path, dev_plan: RenderedPlan
) -> None:
    document = yaml.safe_load(dev_plan.cloud_init.read_text())
    script = next(f for f in document["write_files"] if f["path"] == rendering.METADATA_BLOCK_SCRIPT_PATH)
    script_file = tmp_path / "block-metadata"
    script_file.write_text(script["content"])
    host = Netns("h8dm")
    namespaces.append(host)
    server = metadata_service(host, tmp_path, namespaces)
    # The host itself (cloud-init) still reads it: the rule is for forwarded traffic only.
    host.exec("sh", str(script_file))
    assert host_fetch(host).stdout == USER_DATA
    try:
        with dockerd_in(host, rendering.docker_daemon(settings_for("debian-12"))) as daemon:
            daemon.start()
            assert daemon.proc is not None and daemon.proc.running(), daemon.proc and daemon.proc.log()
            image = busybox_image(daemon, tmp_path)
            daemon.docker("network", "create", "--subnet", "172.31.251.0/24", "torrust-probe")

            blocked = fetch_from_container(daemon, image)
            assert blocked.returncode != 0 and USER_DATA not in blocked.stdout, blocked.stdout
            # Refused by the rule (REJECT), not some other failure of the probe.
            assert "Connection refused" in blocked.stderr, blocked.stderr

            # A docker restart keeps the rule (dockerd never flushes DOCKER-USER).
            daemon.stop()
            daemon.start()
            blocked = fetch_from_container(daemon, image)
            assert blocked.returncode != 0 and USER_DATA not in blocked.stdout, blocked.stdout

            # Mutation: without the rule the very same container reads the user data.
            host.exec("iptables", "-w", "-D", "DOCKER-USER", "-d", f"{METADATA}/32", "-j", "REJECT")
            leaked = fetch_from_container(daemon, image)
            assert USER_DATA in leaked.stdout, leaked.stderr
    finally:
        server.stop()


# --- sshd MaxStartups ---------------------------------------------------------------------------


SSH_BURST = 12  # parallel sessions, as a dozen provider operations dial at once
HELD = 40  # connections kept in pre-authentication while the burst runs


def start_sshd(tmp_path: Path, drop_in: str, name: str) -> tuple[Proc, int, Path]:
    sshd = require_tool("sshd")
    keygen = require_tool("ssh-keygen")
    host_key = tmp_path / f"{name}_host_ed25519"
    client_key = tmp_path / f"{name}_client_ed25519"
    for key in (host_key, client_key):
        run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = tmp_path / f"{name}_authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    # The rendered drop-in as it is, except the host key path (fails loudly if it moved).
    marker = "HostKey /etc/ssh/ssh_host_ed25519_key"
    assert marker in drop_in, "the rendered sshd drop-in no longer sets the host key"
    (tmp_path / f"{name}-10-torrust.conf").write_text(drop_in.replace(marker, f"HostKey {host_key}"))
    port = free_port()
    config = tmp_path / f"{name}_sshd_config"
    config.write_text(
        f"Include {tmp_path}/{name}-10-torrust.conf\n"
        f"ListenAddress {LOOPBACK4}:{port}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "StrictModes no\nUsePAM no\nPidFile none\nLoginGraceTime 60\n"
    )
    run([sshd, "-t", "-f", str(config)], check=True)
    proc = Proc(f"sshd-{name}", [sshd, "-D", "-e", "-f", str(config)], tmp_path)
    proc.wait_for_port(LOOPBACK4, port)
    return proc, port, client_key


def ssh_burst(port: int, client_key: Path) -> list[subprocess.CompletedProcess[str]]:
    ssh = require_tool("ssh")
    argv = [
        ssh, "-p", str(port), "-i", str(client_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=10", f"root@{LOOPBACK4}", "echo", "dial-stdio-ok",
    ]  # fmt: skip
    held: list[socket.socket] = []
    try:
        # Unauthenticated connections that count towards MaxStartups (each got its banner).
        for _ in range(HELD):
            conn = socket.create_connection((LOOPBACK4, port), timeout=5)
            held.append(conn)
            with contextlib.suppress(OSError):
                conn.recv(64)
        barrier = threading.Barrier(SSH_BURST)

        def one(_: int) -> subprocess.CompletedProcess[str]:
            barrier.wait(10)
            return run(argv, timeout=60)

        with ThreadPoolExecutor(SSH_BURST) as pool:
            return list(pool.map(one, range(SSH_BURST)))
    finally:
        for conn in held:
            conn.close()


def sshd_drop_in(plan: RenderedPlan) -> str:
    document = yaml.safe_load(plan.cloud_init.read_text())
    content: str = next(
        f for f in document["write_files"] if f["path"] == "/etc/ssh/sshd_config.d/10-torrust.conf"
    )["content"]
    return content


def test_rendered_sshd_admits_parallel_dials(tmp_path: Path, dev_plan: RenderedPlan) -> None:
    require_root()
    drop_in = sshd_drop_in(dev_plan)
    assert "MaxStartups" in drop_in
    proc, port, key = start_sshd(tmp_path, drop_in, "rendered")
    try:
        results = ssh_burst(port, key)
    finally:
        proc.stop()
    failed = [r.stderr.strip() for r in results if r.returncode != 0 or "dial-stdio-ok" not in r.stdout]
    log = proc.log_path.read_text(errors="replace")
    assert failed == [], f"{len(failed)} of {SSH_BURST} sessions failed: {failed[:3]}\n{log[-2000:]}"


def test_default_max_startups_drops_parallel_dials(tmp_path: Path, dev_plan: RenderedPlan) -> None:
    """The mutation: the same drop-in without our MaxStartups line (sshd's 10:30:100)."""
    require_root()
    drop_in = "\n".join(line for line in sshd_drop_in(dev_plan).splitlines() if "MaxStartups" not in line)
    proc, port, key = start_sshd(tmp_path, drop_in + "\n", "default")
    try:
        results = ssh_burst(port, key)
    finally:
        proc.stop()
    failed = [r for r in results if r.returncode != 0]
    log = proc.log_path.read_text(errors="replace")
    # With 40+ unauthenticated connections each new one is dropped with p >= 53%: all twelve
    # getting through has a chance below 1e-3.
    assert failed, f"all {SSH_BURST} sessions got through sshd's default MaxStartups:\n{log[-2000:]}"
    assert "past MaxStartups" in log, log[-2000:]
