"""Session fixture of the e2e tier: namespaces, our dockerd, images, pebble, the replayed plan.

Everything is created once per session and removed in `finally`, whatever fails: containers and
networks (removed through the daemon), the daemon (SIGTERM, then SIGKILL), pebble, the namespaces
(their links, addresses, routes and iptables rules vanish with them) and the scratch folders.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import images, replay
from tests.e2e.daemon import Dockerd, rendered_daemon_json
from tests.e2e.netns import NetnsPair, in_netns
from tests.e2e.render import TEST_SECRETS
from tests.realtools import REPO_ROOT, Proc, ScratchCA, make_test_ca, missing, real_tools_required

STACK = os.environ.get("E2E_STACK", "dev")
TOOLS = (
    "dockerd",
    "docker",
    "ip",
    "nsenter",
    "mmdebstrap",
    "pebble",
    "pebble-challtestsrv",
    "sqlite3",
    "openssl",
)
PEBBLE_PORT, PEBBLE_MGMT_PORT, DNS_PORT = 14000, 15000, 8053
SESSION_REPORT: list[str] = []  # printed in the terminal summary (timings, forced differences)


def log(message: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Stack:
    """The running deployment and what the checks need to reach it."""

    plan: dict[str, Any]
    inputs: dict[str, dict[str, Any]]  # container name -> replayed inputs (secrets included)
    networks: dict[str, dict[str, Any]]
    files: Path  # rendered files/ of the plan
    net: NetnsPair
    dockerd: Dockerd
    client: Any  # docker.DockerClient
    replay: replay.Replay
    scratch: Path
    pingoo_ca: ScratchCA
    pebble_ca: ScratchCA
    secrets: dict[str, str]
    logs: Path = Path("/nonexistent")  # logs of the processes the tier runs outside Docker (pebble)
    timings: dict[str, float] = field(default_factory=dict)
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def container(self, name: str) -> Any:
        return self.client.containers.get(name)

    def client_ns(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) in the client namespace ("the internet")."""
        return in_netns(self.net.client, lambda: fn(*args))

    def server_ns(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) in the server namespace (the host of the containers)."""
        return in_netns(self.net.server, lambda: fn(*args))

    def recreate(self, name: str, inputs: dict[str, Any] | None = None) -> None:
        """Remove and re-create a container from (possibly mutated) plan inputs, then start it."""
        with contextlib.suppress(Exception):
            self.container(name).remove(force=True)
        container_id = self.replay.create(inputs or self.inputs[name], self.extra_env.get(name))
        self.client.api.start(container_id)


def require_environment() -> None:
    if os.geteuid() != 0:
        missing("the e2e tier needs root (network namespaces, its own dockerd)")
    for tool in TOOLS:
        if shutil.which(tool) is None:
            missing(f"real tool `{tool}` is not on PATH (see .ci/run)")
    try:
        import docker  # noqa: F401
    except ImportError:
        missing("the `docker` PyPI package is missing (pip install -r requirements-dev.txt)")
    for binary in ("torrust-tracker", "http_health_check"):
        if not (images.TRACKER_BIN / binary).is_file():
            missing(
                f"{images.TRACKER_BIN / binary} is missing: run tests/e2e/build_tracker.sh (cargo, 20-30 min)"
            )


def run_cloud_init_dirs(cloud_init: Path, scratch: Path) -> None:
    """Replay cloud-init's `install -d` of the data volume's folders under the scratch folder."""
    document = yaml.safe_load(cloud_init.read_text())
    for command in document.get("runcmd") or []:
        if isinstance(command, list) and command[:2] == ["install", "-d"]:
            path = command[-1]
            assert path.startswith(replay.DATA_VOLUME), command
            target = scratch / path[len(replay.DATA_VOLUME) :].lstrip("/")
            subprocess.run([*command[:-1], str(target)], check=True, timeout=10)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except Exception as error:  # retried until the deadline; the last error is reported
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def tcp_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    require_environment()
    import docker

    started = time.monotonic()
    timings: dict[str, float] = {}
    differences: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="te2e-", dir="/tmp"))
    cleanup: list[Callable[[], None]] = [lambda: shutil.rmtree(work, ignore_errors=True)]
    try:
        # 1. The plan, rendered by `make plan`'s code with known test secrets.
        rendered = work / "plan"
        subprocess.run(
            [sys.executable, "-m", "tests.e2e.render", str(rendered), STACK],
            cwd=REPO_ROOT, check=True, timeout=300, capture_output=True,
        )  # fmt: skip
        plan = json.loads((rendered / "plan.json").read_text())
        revealed = json.loads((rendered / "revealed.json").read_text())
        resources = replay.docker_resources(plan, revealed)
        secrets = dict(TEST_SECRETS)

        # 2. Namespaces: server (dockerd) and client ("the internet").
        outputs = plan["outputs"]
        net = NetnsPair.create(str(os.getpid()), outputs["serverIpv4"], outputs["serverIpv6"])
        cleanup.append(net.destroy)

        # 3. Our dockerd. Its data root is cached (imported base + built images), one user at a time.
        data_cache = images.cache_dir("e2e-docker")
        lock = (data_cache / "lock").open("w")
        cleanup.append(lock.close)
        deadline = time.monotonic() + 1800
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another e2e run holds {data_cache / 'lock'}") from None
                time.sleep(2)
        daemon_root = work / "d"
        daemon_root.mkdir()
        daemon_json = rendered_daemon_json(rendered / "cloud-init.yaml")
        dockerd = Dockerd(daemon_root, net.server, daemon_json, data_cache / "data")
        t = time.monotonic()
        dockerd.start()
        cleanup.append(dockerd.stop)
        timings["dockerd start"] = time.monotonic() - t
        client = docker.DockerClient(base_url=dockerd.url, timeout=300)
        cleanup.append(client.close)
        # Leftovers of a killed run (the data root is reused): remove before replaying.
        for leftover in client.containers.list(all=True):
            leftover.remove(force=True)
        for network in client.networks.list():
            if network.name not in ("bridge", "host", "none"):
                network.remove()

        def remove_all() -> None:
            for container in client.containers.list(all=True):
                with contextlib.suppress(Exception):
                    container.remove(force=True)
            for network in client.networks.list():
                if network.name not in ("bridge", "host", "none"):
                    with contextlib.suppress(Exception):
                        network.remove()

        cleanup.append(remove_all)

        # 4. Images (cold: base rootfs + builds; warm: nothing to do).
        t = time.monotonic()
        names = [inputs["name"] for kind, _n, inputs in resources if kind in replay.IMAGE_TYPES]
        images.ensure_images(client, names, log)
        timings["images"] = time.monotonic() - t

        # 5. The data volume's folders (cloud-init's runcmd), the edge certificate, pebble.
        # The server's `/` (for host mounts) with the data volume's folder at srv/torrust, as on the server.
        host_root = work / "host-root"
        scratch = host_root / replay.DATA_VOLUME.lstrip("/")
        (host_root / "var/lib/node_exporter/textfile_collector").mkdir(parents=True)
        run_cloud_init_dirs(rendered / "cloud-init.yaml", scratch)
        inputs = {i["name"]: i for kind, _n, i in resources if kind == replay.CONTAINER_TYPE}
        networks = {i["name"]: i for kind, _n, i in resources if kind == replay.NETWORK_TYPE}
        pingoo_ca = make_test_ca(work / "pingoo-ca", "e2e edge CA (stands for Pingoo's ACME certificate)")
        names_on_443 = sorted({r["name"] for r in outputs["dnsRecords"] if r["type"] in ("A", "AAAA")})
        cert, key = pingoo_ca.issue(work / "pingoo-leaf", names_on_443)
        shutil.copy(cert, scratch / "pingoo/tls/standin.pem")
        shutil.copy(key, scratch / "pingoo/tls/standin.key")

        pebble_ca = make_test_ca(work / "pebble-ca", "pebble API test CA")
        api_cert, api_key = pebble_ca.issue(work / "pebble-api", ["pebble"], (net.client_v4,))
        logs = work / "logs"
        logs.mkdir()
        enter_client = ["nsenter", f"--net=/run/netns/{net.client}"]
        challtest = Proc(
            "pebble-challtestsrv",
            [
                *enter_client, "pebble-challtestsrv",
                "-dns01", f"{net.client_v4}:{DNS_PORT}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                "-management", f"{net.client_v4}:{DNS_PORT + 1}",
                "-defaultIPv4", net.server_v4, "-defaultIPv6", net.server_v6,
            ],
            logs,
        )  # fmt: skip
        cleanup.append(challtest.stop)
        in_netns(
            net.client, lambda: wait_for(lambda: tcp_open(net.client_v4, DNS_PORT + 1), 20, "challtestsrv")
        )
        config = work / "pebble.json"
        config.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"{net.client_v4}:{PEBBLE_PORT}",
                        "managementListenAddress": f"{net.client_v4}:{PEBBLE_MGMT_PORT}",
                        "certificate": str(api_cert),
                        "privateKey": str(api_key),
                        "httpPort": 80,
                        "tlsPort": 443,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                }
            )
        )
        pebble = Proc(
            "pebble",
            [*enter_client, "pebble", "-config", str(config), "-dnsserver", f"{net.client_v4}:{DNS_PORT}"],
            logs,
            dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0"),
        )
        cleanup.append(pebble.stop)
        in_netns(net.client, lambda: wait_for(lambda: tcp_open(net.client_v4, PEBBLE_PORT), 20, "pebble"))
        shutil.copy(pebble_ca.cert, scratch / "letsencrypt/e2e-pebble-api-ca.pem")
        # Test-only additions (README: "What the tier adds"): certbot's ACME server is pebble, whose
        # API certificate it must trust. CERTBOT_STAGING_URL is the image's documented override.
        extra_env = {
            "nginx-certbot": {
                "CERTBOT_STAGING_URL": f"https://{net.client_v4}:{PEBBLE_PORT}/dir",
                "REQUESTS_CA_BUNDLE": "/etc/letsencrypt/e2e-pebble-api-ca.pem",
            }
        }

        # 6. Replay: networks, then containers (created, uploads, connected, started) in plan order.
        t = time.monotonic()
        # Public DNS is not here: the probing container resolves every public name to the server's
        # IPv4, as the internet does, and reaches it through the host's hairpin NAT like on a server.
        public_names = sorted({r["name"] for r in outputs["dnsRecords"] if r["type"] == "A"})
        extra_hosts = {"blackbox-exporter": {name: outputs["serverIpv4"] for name in public_names}}
        rep = replay.Replay(client, scratch, log, differences, host_root, extra_hosts)
        for kind, _name, item in resources:
            if kind == replay.NETWORK_TYPE:
                rep.network(item)
        for kind, _name, item in resources:
            if kind == replay.CONTAINER_TYPE:
                container_id = rep.create(item, extra_env.get(item["name"]))
                client.api.start(container_id)
        timings["replay"] = time.monotonic() - t
        timings["setup total"] = time.monotonic() - started
        result = Stack(
            plan=plan, inputs=inputs, networks=networks, files=rendered / "files", net=net, dockerd=dockerd,
            client=client, replay=rep, scratch=scratch, pingoo_ca=pingoo_ca, pebble_ca=pebble_ca,
            secrets=secrets, logs=logs, timings=timings, extra_env=extra_env,
        )  # fmt: skip
        yield result
    finally:
        for step in reversed(cleanup):
            try:
                step()
            except Exception as error:  # every cleanup step runs
                log(f"cleanup step failed: {error!r}")
        timings["session total"] = time.monotonic() - started
        SESSION_REPORT.extend(f"difference forced by this machine: {note}" for note in differences)
        SESSION_REPORT.append("e2e timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
        for line in SESSION_REPORT:
            log(line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    if real_tools_required() or os.environ.get("E2E") == "1":
        return
    skip = pytest.mark.skip(reason="e2e tier (real dockerd): runs in `make e2e` / `make check`")
    for item in items:
        if str(item.fspath).endswith("tests/e2e/test_e2e.py"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in SESSION_REPORT:
        terminalreporter.write_line(line)
