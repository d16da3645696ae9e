"""Shared harness for the real-tool tier (tests/test_real_*.py). Standard library only.

Rules every real-tool test follows:

- Tools are found on PATH (`shutil.which`), never by absolute path. A missing tool skips the test
  with the reason; with REQUIRE_REAL_TOOLS=1 (set by `make check`) it fails instead.
- Everything is checked against the files `make plan` renders: the dev plan is rendered once per
  session into a temporary directory by `python -m tools.plan` in a subprocess (which keeps the
  Pulumi mock runtime's global state out of the test process).
- Network tests bind 127.0.0.1 / ::1 on free ports only, every wait is bounded, every process the
  harness starts is stopped by the fixture that started it.
- The rendered nginx files are used as they are, except for a precise remap of what cannot work on
  a test machine (privileged ports, Docker network addresses, /etc/letsencrypt, the webroot). Every
  remap rule fails loudly (RemapError) when the directive it expects is missing, so a template
  change can never silently turn into "the harness tested its own copy".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import grp
import hashlib
import http.client
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn

import pytest

from core import layout

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIRE_ENV = "REQUIRE_REAL_TOOLS"
LOOPBACK4 = "127.0.0.1"
LOOPBACK6 = "::1"
# Plan folders (files/<resource>/) of files installed on the host by a remote Command.
HOST_INSTALLS = ("backups-install",)


# --- Tools ---------------------------------------------------------------------------------------


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0", "false", "no")


def real_tools_required() -> bool:
    return _flag(REQUIRE_ENV)


# `make test` is the unit tier (seconds): tests that run real tools, or the shipped tools as
# processes, skip there with this reason. `make check` (REQUIRE_REAL_TOOLS=1) runs them all;
# REAL_TOOLS=1 runs the ones whose tools this machine has (and skips the others, with the reason).
REAL_TOOLS_ENV = "REAL_TOOLS"
REAL_TIER_REASON = "real-tool tier: `make check` runs it (or REAL_TOOLS=1 make test where the tools exist)"


def real_tools_enabled() -> bool:
    return real_tools_required() or _flag(REAL_TOOLS_ENV) or _flag("E2E")


def require_real_tier() -> None:
    """Skip in the unit tier (`make test`); a no-op in `make check`."""
    if not real_tools_enabled():
        pytest.skip(REAL_TIER_REASON)


def missing(reason: str) -> NoReturn:
    """Skip with `reason`, or fail when REQUIRE_REAL_TOOLS=1 turns every skip into a failure."""
    if real_tools_required():
        pytest.fail(f"{reason} (REQUIRE_REAL_TOOLS=1: real-tool tests must not skip)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The tool's path on PATH; skips (or fails under REQUIRE_REAL_TOOLS=1) when it is missing.

    In the unit tier (`make test`) it always skips: a test that runs a real tool is a real-tool test.
    """
    require_real_tier()
    path = shutil.which(name)
    if path is None:
        missing(f"real tool `{name}` is not on PATH (Debian: apt-get install it; see .ci/run)")
    return path


def _can_bind(family: socket.AddressFamily, kind: socket.SocketKind, host: str, port: int) -> bool:
    try:
        with socket.socket(family, kind) as probe:
            probe.bind((host, port))
    except OSError:
        return False
    return True


IPV6_LOOPBACK = _can_bind(socket.AF_INET6, socket.SOCK_STREAM, LOOPBACK6, 0)


def require_ipv6_loopback() -> None:
    if not IPV6_LOOPBACK:
        missing("this machine has no IPv6 loopback (::1)")


_ISSUED_PORTS: set[int] = set()


def free_port(*, udp: bool = False) -> int:
    """A port free on 127.0.0.1 (and ::1 when present) for TCP, and for UDP too when `udp`.

    Ports handed out once are never handed out again in this session, so two fixtures that ask
    before either binds still get different ports.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((LOOPBACK4, 0))
            port: int = probe.getsockname()[1]
        if port in _ISSUED_PORTS:
            continue
        checks = [(socket.AF_INET, socket.SOCK_STREAM, LOOPBACK4)]
        if IPV6_LOOPBACK:
            checks.append((socket.AF_INET6, socket.SOCK_STREAM, LOOPBACK6))
        if udp:
            checks.append((socket.AF_INET, socket.SOCK_DGRAM, LOOPBACK4))
        if all(_can_bind(family, kind, host, port) for family, kind, host in checks):
            _ISSUED_PORTS.add(port)
            return port
    raise RuntimeError("no free loopback port found")


# --- Processes -----------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def port_open(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


class Proc:
    """A child process in its own process group, output to a log file, stopped with a timeout."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_for_port(self, host: str, port: int, timeout: float = 10.0) -> None:
        def ready() -> bool:
            if not self.running():
                raise AssertionError(
                    f"{self.name} exited with {self.popen.returncode} before listening on {host}:{port}:\n"
                    f"{self.log()}"
                )
            return port_open(host, port)

        try:
            wait_until(ready, timeout, f"{self.name} to listen on {host}:{port}")
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- {self.name} log ---\n{self.log()}") from None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group (this process and the children it forked), then SIGKILL."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        else:
            # The leader is gone; make sure no child it forked (e.g. nginx workers) outlives it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()


def run(
    argv: list[str], timeout: float = 60.0, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion (bounded); output captured as text."""
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{shlex.join(argv)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


# --- The rendered dev plan -----------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedPlan:
    """The directory `make plan STACK=dev` writes, rendered into a temporary directory."""

    root: Path

    def file(self, resource: str, container_path: str) -> Path:
        path = self.root / "files" / resource / container_path.lstrip("/")
        assert path.is_file(), f"the plan did not render {container_path} for {resource} ({path})"
        return path

    @property
    def redirector_conf(self) -> Path:
        return self.file(layout.NGINX, layout.NGINX_REDIRECTOR_FILE)

    @property
    def grafana_conf(self) -> Path:
        return self.file(layout.NGINX, layout.NGINX_GRAFANA_FILE)

    @property
    def tracker_toml(self) -> Path:
        return self.file(layout.TRACKER, layout.TRACKER_CONFIG_FILE)

    @property
    def prometheus_yml(self) -> Path:
        return self.file(layout.PROMETHEUS, layout.PROMETHEUS_CONFIG_FILE)

    @property
    def pingoo_yml(self) -> Path:
        return self.file(layout.PINGOO, layout.PINGOO_CONFIG_FILE)

    @property
    def cloud_init(self) -> Path:
        path = self.root / "cloud-init.yaml"
        assert path.is_file(), f"the plan did not write {path}"
        return path

    def uploaded_files(self) -> dict[str, Path]:
        """'<resource>:<path inside the container>' -> rendered file, for every container upload."""
        files_dir = self.root / "files"
        result: dict[str, Path] = {}
        for path in sorted(files_dir.rglob("*")):
            if path.is_file():
                resource, *inner = path.relative_to(files_dir).parts
                if resource in HOST_INSTALLS:
                    continue  # host files a remote command installs, not container uploads
                result[f"{resource}:/{'/'.join(inner)}"] = path
        return result

    def grafana_host(self) -> str:
        """The Grafana name, read from the rendered grafana.conf (server_name)."""
        match = re.search(r"^\s*server_name\s+(\S+);", self.grafana_conf.read_text(), re.MULTILINE)
        assert match, "the rendered grafana.conf has no server_name"
        return match.group(1)


_PLANS: dict[str, RenderedPlan] = {}


def render_plan(out_dir: Path, stack: str = "dev") -> RenderedPlan:
    result = subprocess.run(
        [sys.executable, "-m", "tools.plan", "--stack", stack, "--out", str(out_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"`make plan STACK={stack}` failed ({result.returncode}):\n{result.stderr}")
    return RenderedPlan(out_dir)


def render_dev_plan(out_dir: Path) -> RenderedPlan:
    return render_plan(out_dir, "dev")


def session_plan(tmp_path_factory: pytest.TempPathFactory, stack: str) -> RenderedPlan:
    """A stack's plan, rendered ONCE per session however many modules ask for it."""
    if stack not in _PLANS:
        _PLANS[stack] = render_plan(tmp_path_factory.mktemp("plan") / stack, stack)
    return _PLANS[stack]


@pytest.fixture(scope="session")
def dev_plan(tmp_path_factory: pytest.TempPathFactory) -> RenderedPlan:
    """The dev plan (the pingoo edge), rendered once per session."""
    return session_plan(tmp_path_factory, "dev")


@pytest.fixture(scope="session")
def nginx_plan(tmp_path_factory: pytest.TempPathFactory) -> RenderedPlan:
    """The nginx-example plan (the nginx edge, Pulumi.nginx-example.yaml), rendered once per session."""
    return session_plan(tmp_path_factory, "nginx-example")


# --- Remapping the rendered nginx files ----------------------------------------------------------


class RemapError(RuntimeError):
    """The rendered nginx file does not contain a directive the harness must remap.

    Deliberately not an AssertionError: a mutation test expecting an assertion to fail must never
    pass because the harness could not even set up the configuration.
    """


@dataclass(frozen=True)
class NginxRemap:
    """Where the harness moves what the rendered files bind and read."""

    http_port: int  # rendered: layout.HTTP_PORT (80)
    tls_port: int  # rendered: layout.GRAFANA_TLS_PORT (3443)
    redirect_port: int  # rendered: layout.NGINX_REDIRECT_PORT (8080)
    upstream: str  # host:port of the stand-in Grafana, rendered: GRAFANA_BACKEND_IP:GRAFANA_PORT
    live_dir: Path  # rendered: /etc/letsencrypt/live/<GRAFANA_CERT_NAME>
    webroot: Path  # rendered: layout.NGINX_WEBROOT
    ipv6: bool = IPV6_LOOPBACK

    def port_map(self) -> dict[int, int]:
        return {
            layout.HTTP_PORT: self.http_port,
            layout.GRAFANA_TLS_PORT: self.tls_port,
            layout.NGINX_REDIRECT_PORT: self.redirect_port,
        }


RENDERED_UPSTREAM = f"{layout.GRAFANA_BACKEND_IP}:{layout.GRAFANA_PORT}"
RENDERED_LIVE_DIR = f"/etc/letsencrypt/live/{layout.GRAFANA_CERT_NAME}"
_LISTEN = re.compile(
    r"^(?P<head>[ \t]*listen[ \t]+)(?P<addr>\[::\]:)?(?P<port>\d+)(?P<tail>(?:[ \t][^;\n]*)?;)", re.M
)
_ANY_LISTEN = re.compile(r"^[ \t]*listen[ \t]+(?P<value>[^;\n]*);", re.M)


def _substitute(
    text: str, pattern: str, repl: str | Callable[[re.Match[str]], str], what: str, count: int
) -> str:
    """re.subn that insists on exactly `count` matches (count=-1: at least one)."""
    new, found = re.subn(pattern, repl, text, flags=re.M)
    if (count == -1 and found == 0) or (count != -1 and found != count):
        expected = "at least one" if count == -1 else str(count)
        raise RemapError(f"expected {expected} {what}, found {found}")
    return new


def remap_listens(text: str, remap: NginxRemap, file_name: str) -> str:
    ports = remap.port_map()

    def replace(match: re.Match[str]) -> str:
        port = int(match["port"])
        if port not in ports:
            raise RemapError(f"{file_name}: `listen` on port {port}, which the harness does not know")
        if match["addr"]:
            if not remap.ipv6:
                return f"# [harness: no IPv6 loopback] {match.group(0).strip()}"
            return f"{match['head']}[{LOOPBACK6}]:{ports[port]}{match['tail']}"
        return f"{match['head']}{LOOPBACK4}:{ports[port]}{match['tail']}"

    text = _LISTEN.sub(replace, text)
    for listen in _ANY_LISTEN.finditer(text):
        value = listen["value"]
        if not value.startswith((f"{LOOPBACK4}:", f"[{LOOPBACK6}]:")):
            raise RemapError(f"{file_name}: `listen {value};` has a form the harness cannot remap")
    return text


def remap_redirector(text: str, remap: NginxRemap) -> str:
    """conf.d/redirector.conf: ports 80 and 8080 (+ [::]) and the ACME webroot."""
    if f"listen {layout.HTTP_PORT}" not in text:
        raise RemapError(f"redirector.conf: no `listen {layout.HTTP_PORT}` (the ACME/redirect server)")
    if f"listen {layout.NGINX_REDIRECT_PORT}" not in text:
        raise RemapError(
            f"redirector.conf: no `listen {layout.NGINX_REDIRECT_PORT}` (Pingoo's redirect target)"
        )
    text = remap_listens(text, remap, "redirector.conf")
    occurrences = text.count(layout.NGINX_WEBROOT)
    return _substitute(
        text,
        rf"^([ \t]*root[ \t]+){re.escape(layout.NGINX_WEBROOT)}([ \t]*;)",
        lambda m: f"{m.group(1)}{remap.webroot}{m.group(2)}",
        f"`root {layout.NGINX_WEBROOT};` (every mention of the webroot must be a root directive)",
        occurrences if occurrences else -1,
    )


def remap_grafana(text: str, remap: NginxRemap) -> str:
    """user_conf.d/grafana.conf: port 3443 (+ [::]), the upstream address, the certificate paths."""
    if f"listen {layout.GRAFANA_TLS_PORT}" not in text:
        raise RemapError(f"grafana.conf: no `listen {layout.GRAFANA_TLS_PORT}`")
    text = remap_listens(text, remap, "grafana.conf")
    text = _substitute(
        text,
        rf"^([ \t]*server[ \t]+){re.escape(RENDERED_UPSTREAM)}(\b[^;\n]*;)",
        lambda m: f"{m.group(1)}{remap.upstream}{m.group(2)}",
        f"`server {RENDERED_UPSTREAM};` in the grafana upstream",
        1,
    )
    for directive, name in (
        ("ssl_certificate", "fullchain.pem"),
        ("ssl_certificate_key", "privkey.pem"),
        ("ssl_trusted_certificate", "chain.pem"),
    ):
        target = f"{remap.live_dir}/{name}"
        text = _substitute(
            text,
            rf"^([ \t]*{directive}[ \t]+){re.escape(RENDERED_LIVE_DIR)}/{re.escape(name)}([ \t]*;)",
            rf"\g<1>{target}\g<2>",
            f"`{directive} {RENDERED_LIVE_DIR}/{name};`",
            1,
        )
    if "/etc/letsencrypt" in text:
        raise RemapError("grafana.conf: a /etc/letsencrypt path the harness does not remap")
    return text


# --- Certificates (openssl CLI) ------------------------------------------------------------------


@dataclass(frozen=True)
class ScratchCA:
    cert: Path
    key: Path

    def issue(self, out_dir: Path, names: list[str], ips: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """A leaf for `names`/`ips` signed by this CA: (cert.pem, key.pem)."""
        openssl = require_tool("openssl")
        out_dir.mkdir(parents=True, exist_ok=True)
        key, csr, cert, ext = (out_dir / n for n in ("key.pem", "req.csr", "cert.pem", "ext.cnf"))
        sans = ",".join([f"DNS:{n}" for n in names] + [f"IP:{i}" for i in ips])
        ext.write_text(
            f"subjectAltName={sans}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        )
        run(
            [
                openssl,
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(csr),
                "-subj",
                f"/CN={(names or ips)[0]}",
            ],
            check=True,
        )
        run(
            [
                openssl,
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(self.cert),
                "-CAkey",
                str(self.key),
                "-CAcreateserial",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                str(ext),
                "-out",
                str(cert),
            ],
            check=True,
        )
        return cert, key


def make_test_ca(out_dir: Path, name: str) -> ScratchCA:
    openssl = require_tool("openssl")
    out_dir.mkdir(parents=True, exist_ok=True)
    cert, key = out_dir / "ca.pem", out_dir / "ca.key"
    run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-sha256",
            "-subj",
            f"/CN={name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
        ],
        check=True,
    )
    return ScratchCA(cert, key)


def install_live_cert(live_dir: Path, ca: ScratchCA, cert: Path, key: Path) -> None:
    """The layout certbot gives nginx: live/<name>/{fullchain,privkey,chain}.pem."""
    live_dir.mkdir(parents=True, exist_ok=True)
    (live_dir / "fullchain.pem").write_text(cert.read_text())
    (live_dir / "privkey.pem").write_text(key.read_text())
    (live_dir / "chain.pem").write_text(ca.cert.read_text())


# --- nginx ---------------------------------------------------------------------------------------


@dataclass
class NginxFiles:
    """The two rendered nginx files (text), possibly mutated by a test before the remap."""

    redirector: str
    grafana: str

    @classmethod
    def from_plan(cls, plan: RenderedPlan) -> NginxFiles:
        return cls(plan.redirector_conf.read_text(), plan.grafana_conf.read_text())


class Nginx:
    """A non-root nginx (-p prefix -c conf) serving the remapped rendered files."""

    def __init__(self, prefix: Path, files: NginxFiles, remap: NginxRemap) -> None:
        self.binary = require_tool("nginx")
        self.prefix = prefix
        self.remap = remap
        for sub in ("conf.d", "user_conf.d", "logs", "temp"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        # Same relative layout as the image: /etc/nginx/conf.d/ and /etc/nginx/user_conf.d/.
        self.redirector_path = prefix / "conf.d" / Path(layout.NGINX_REDIRECTOR_FILE).name
        self.grafana_path = prefix / "user_conf.d" / Path(layout.NGINX_GRAFANA_FILE).name
        self.redirector_path.write_text(remap_redirector(files.redirector, remap))
        self.grafana_path.write_text(remap_grafana(files.grafana, remap))
        self.error_log = prefix / "logs" / "error.log"
        self.access_log = prefix / "logs" / "access.log"
        self.conf = write_main_conf(prefix, [self.redirector_path, self.grafana_path])
        self.proc: Proc | None = None

    def argv(self, *extra: str) -> list[str]:
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(self.conf), "-e", str(self.error_log), *extra]

    def test_config(self) -> subprocess.CompletedProcess[str]:
        return run(self.argv("-t"), timeout=30)

    def start(self, timeout: float = 10.0) -> None:
        checked = self.test_config()
        if checked.returncode != 0:
            raise AssertionError(f"nginx -t failed on the remapped rendered files:\n{checked.stderr}")
        self.proc = Proc("nginx", self.argv(), self.prefix / "logs")
        for port in (self.remap.http_port, self.remap.tls_port, self.remap.redirect_port):
            try:
                self.proc.wait_for_port(LOOPBACK4, port, timeout)
            except AssertionError as error:
                raise AssertionError(f"{error}\n--- error.log ---\n{self.error_log_text()}") from None

    def reload_command(self) -> str:
        return shlex.join(self.argv("-s", "reload"))

    def workers(self) -> set[int]:
        """PIDs of the master's children (Linux /proc): the workers currently serving."""
        assert self.proc is not None and self.proc.running(), "nginx is not running"
        master = self.proc.popen.pid
        children: set[int] = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == master:
                children.add(int(stat.parent.name))
        return children

    def wait_for_reload(self, old_workers: set[int], timeout: float = 15.0) -> None:
        """After a reload: the old workers (which still hold the listeners for a moment and serve
        the old certificate) are gone and new ones run, so every new connection sees the reload."""
        wait_until(
            lambda: bool(self.workers()) and not (self.workers() & old_workers),
            timeout,
            f"nginx's old workers {sorted(old_workers)} to exit after a reload",
        )

    def reload(self) -> None:
        old = self.workers()
        run(self.argv("-s", "reload"), timeout=30, check=True)
        self.wait_for_reload(old)

    def error_log_text(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


def write_main_conf(prefix: Path, includes: list[Path]) -> Path:
    """The harness's own nginx.conf: non-root paths, then the rendered files inside `http {}`.

    The image's main nginx.conf includes conf.d/ and user_conf.d/ in the http context the same way.
    """
    user = ""
    if os.geteuid() == 0:
        # As root, workers would switch to `nobody`, who cannot read pytest's 0700 temp dirs.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
    temp = prefix / "temp"
    body = "\n".join(f"    include {path};" for path in includes)
    conf = prefix / "nginx.conf"
    conf.write_text(
        "# Test harness wrapper (tests/realtools.py): non-root paths around the rendered files.\n"
        f"{user}daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/logs/error.log info;\n"
        "events {\n    worker_connections 256;\n}\n"
        "http {\n"
        f"    access_log {prefix}/logs/access.log;\n"
        f"    client_body_temp_path {temp}/client_body;\n    proxy_temp_path {temp}/proxy;\n"
        f"    fastcgi_temp_path {temp}/fastcgi;\n    uwsgi_temp_path {temp}/uwsgi;\n"
        f"    scgi_temp_path {temp}/scgi;\n"
        "    default_type application/octet-stream;\n"
        f"{body}\n"
        "}\n"
    )
    return conf


# --- HTTP / TLS / WebSocket clients --------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def connect(
    host: str,
    port: int,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = 5,
) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    if tls is None:
        return sock
    try:
        return tls.wrap_socket(sock, server_hostname=server_hostname)
    except BaseException:
        sock.close()
        raise


def http_request(
    host: str,
    port: int,
    target: str,
    headers: dict[str, str],
    *,
    method: str = "GET",
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = 5,
) -> Response:
    """One HTTP/1.1 request on a fresh connection (Connection: close); redirects are not followed."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close"]
    with connect(host, port, tls, server_hostname, timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        return Response(response.status, response.getheaders(), body)


def client_context(cafile: Path | None = None, cadata: str | None = None) -> ssl.SSLContext:
    """Verifying client context that trusts ONLY the given CA (no system store)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(cafile) if cafile else None, cadata=cadata)
    return context


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_frame(opcode: int, payload: bytes, mask: bool) -> bytes:
    head = bytes([0x80 | opcode])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class BufferedSocket:
    """Exact-length reads on a (TLS) socket, for the client side of the WebSocket checks."""

    def __init__(self, sock: socket.socket, initial: bytes = b"") -> None:
        self.sock = sock
        self.buffer = initial

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed while reading {size} bytes")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_until(self, marker: bytes, limit: int = 65536) -> bytes:
        while marker not in self.buffer:
            if len(self.buffer) > limit:
                raise ConnectionError("response head too large")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed before {marker!r}; got {self.buffer!r}")
            self.buffer += chunk
        index = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:index], self.buffer[index:]
        return data

    def read_frame(self) -> tuple[int, bytes]:
        first, second = self.read_exact(2)
        opcode, masked, length = first & 0x0F, second & 0x80, second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self.read_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self.read_exact(8))
        key = self.read_exact(4) if masked else b""
        payload = self.read_exact(length)
        if masked:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return opcode, payload


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return lines[0], headers


# --- Stand-in Grafana ----------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    request_line: str
    headers: list[tuple[str, str]]
    peer: str

    @property
    def method(self) -> str:
        return self.request_line.split(" ")[0]

    @property
    def target(self) -> str:
        return self.request_line.split(" ")[1]

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(values) <= 1, f"header {name} sent {len(values)} times: {values}"
        return values[0] if values else None


STANDIN_GREETING = b"grafana-live stand-in: server push"


@dataclass
class StandInGrafana:
    """A tiny HTTP/1.1 + RFC 6455 WebSocket server that records what nginx sends it.

    HTTP: answers 200 with a JSON echo (keep-alive aware, as nginx's upstream keepalive needs).
    /slow/<seconds> answers after that delay (at most 10 s).
    WebSocket (/api/live/...): like Grafana, demands `Upgrade: websocket`, a `Connection` header with
    the `upgrade` token, a key and version 13, else answers 400; after 101 it pushes one text frame,
    then echoes every data frame back and records it.
    """

    host: str = LOOPBACK4
    port: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    ws_received: list[bytes] = field(default_factory=list)
    # Served as text/html for /login when set: Grafana's login page is its index.html, whose
    # <title> is the app title "Grafana" (grafana/grafana public/views/index.html).
    login_page: bytes | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, timeout: float = 5.0) -> StandInGrafana:
        started = threading.Event()
        errors: list[BaseException] = []

        async def serve() -> None:
            server = await asyncio.start_server(self._handle, self.host, self.port or None)
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            async with server:
                await server.serve_forever()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(serve())
            except asyncio.CancelledError:
                pass
            except BaseException as error:  # reported to start()
                errors.append(error)
                started.set()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name="stand-in-grafana", daemon=True)
        self._thread.start()
        if not started.wait(timeout) or errors:
            raise AssertionError(f"stand-in Grafana did not start: {errors}")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():

            def cancel_all() -> None:
                for task in asyncio.all_tasks(loop):
                    task.cancel()

            loop.call_soon_threadsafe(cancel_all)
            thread.join(5)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def recorded(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def last_request(self, target_prefix: str) -> RecordedRequest:
        matching = [r for r in self.recorded() if r.target.startswith(target_prefix)]
        assert matching, f"the stand-in Grafana received no request for {target_prefix}: {self.recorded()}"
        return matching[-1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "{}:{}".format(*writer.get_extra_info("peername")[:2])
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                    return
                request_line, headers = parse_head(head)
                request = RecordedRequest(request_line, headers, peer)
                with self._lock:
                    self.requests.append(request)
                length = int(request.header("Content-Length") or 0)
                if length:
                    await reader.readexactly(length)
                if request.target.startswith("/api/live/"):
                    await self._websocket(request, reader, writer)
                    return
                if request.target.startswith("/slow/"):
                    # A slow backend (/slow/<seconds>): holds a request so that concurrency shows.
                    await asyncio.sleep(min(float(request.target.split("/")[2]), 10.0))
                body = json.dumps({"target": request.target, "headers": headers}).encode()
                content_type = b"application/json"
                if self.login_page is not None and request.target.startswith("/login"):
                    body, content_type = self.login_page, b"text/html; charset=UTF-8"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: "
                    + content_type
                    + b"\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                if (request.header("Connection") or "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _websocket(
        self, request: RecordedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        upgrade = (request.header("Upgrade") or "").lower()
        connection = {t.strip().lower() for t in (request.header("Connection") or "").split(",")}
        key = request.header("Sec-WebSocket-Key")
        if upgrade != "websocket" or "upgrade" not in connection or not key:
            body = b"websocket: the client is not using the websocket protocol\n"
            writer.write(
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            return
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {ws_accept(key)}\r\n\r\n".encode()
        )
        writer.write(ws_frame(0x1, STANDIN_GREETING, mask=False))
        await writer.drain()
        while True:
            first, second = await reader.readexactly(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            mask = await reader.readexactly(4) if second & 0x80 else b""
            payload = await reader.readexactly(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                writer.write(ws_frame(0x8, payload[:2], mask=False))
                await writer.drain()
                return
            if opcode == 0x9:
                writer.write(ws_frame(0xA, payload, mask=False))
            elif opcode in (0x1, 0x2):
                with self._lock:
                    self.ws_received.append(payload)
                writer.write(ws_frame(opcode, payload, mask=False))
            await writer.drain()


# --- A DNS server with an API: pebble-challtestsrv -----------------------------------------------


class ChallTestSrv:
    """pebble-challtestsrv as an authoritative-looking DNS server on loopback (UDP+TCP), with its
    management API (letsencrypt/pebble cmd/pebble-challtestsrv/README.md: /add-a, /add-aaaa,
    /add-caa, /set-txt, /clear-a ...). No default answers: a name without data is empty."""

    def __init__(self, log_dir: Path) -> None:
        binary = require_tool("pebble-challtestsrv")
        self.dns_port = free_port(udp=True)
        self.api_port = free_port()
        self.proc = Proc(
            "challtestsrv",
            [
                binary,
                "-dns01", f"{LOOPBACK4}:{self.dns_port}",
                "-management", f"{LOOPBACK4}:{self.api_port}",
                "-http01", "", "-https01", "", "-tlsalpn01", "",
                "-defaultIPv4", "", "-defaultIPv6", "",
            ],
            log_dir,
        )  # fmt: skip
        self.proc.wait_for_port(LOOPBACK4, self.api_port)
        self.proc.wait_for_port(LOOPBACK4, self.dns_port)

    def _post(self, path: str, body: dict[str, object]) -> None:
        import urllib.request

        request = urllib.request.Request(
            f"http://{LOOPBACK4}:{self.api_port}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200, f"challtestsrv {path}: {response.status}"

    def set_record(self, name: str, type_: str, value: str) -> None:
        host = name.rstrip(".") + "."
        if type_ == "A":
            self._post("/add-a", {"host": host, "addresses": [value]})
        elif type_ == "AAAA":
            self._post("/add-aaaa", {"host": host, "addresses": [value]})
        elif type_ == "TXT":
            self._post("/set-txt", {"host": host, "value": value.strip('"')})
        elif type_ == "CAA":
            _flag, tag, rest = value.split(" ", 2)
            self._post("/add-caa", {"host": host, "policies": [{"tag": tag, "value": rest.strip('"')}]})
        else:
            raise ValueError(type_)

    def clear(self, name: str, type_: str) -> None:
        host = name.rstrip(".") + "."
        paths = {"A": "/clear-a", "AAAA": "/clear-aaaa", "TXT": "/clear-txt", "CAA": "/clear-caa"}
        self._post(paths[type_], {"host": host})

    def stop(self) -> None:
        self.proc.stop()
