"""Harness for the nginx edge (edge.kind nginx) on a real nginx: the files `make plan
STACK=nginx-example` renders, served on loopback (127.0.0.1 and ::1) in front of real backends.

As tests/realtools.py does for the hybrid's nginx, only what cannot work on a test machine is
remapped, each rule failing loudly (RemapError) when its target is missing:
- nginx.conf: `user` (the test user), the pid file, the two log files, the conf.d include (the
  prefix) and the temp paths of a non-root nginx; every other directive (workers, connections,
  timeouts, TLS, limits, the log format) is as rendered;
- every server file: the listen sockets (80, 443, the loopback health port) to free loopback ports
  on 127.0.0.1 and [::1], the upstream addresses (Docker network addresses) to the loopback
  backends, /etc/letsencrypt/live/ to a scratch folder, the webroot.
The site files sit in user_conf.d/ and are linked into conf.d/, as jonasal/nginx-certbot does
(src/scripts/util.sh symlink_user_configs).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from core import layout
from tests.realtools import (
    IPV6_LOOPBACK,
    LOOPBACK4,
    LOOPBACK6,
    Proc,
    RemapError,
    RenderedPlan,
    ScratchCA,
    install_live_cert,
    port_open,
    require_tool,
    run,
    wait_until,
)

RENDERED_LIVE = "/etc/letsencrypt/live/"
EDGE_RESOURCE = layout.NGINX


@dataclass(frozen=True)
class EdgeFiles:
    """The nginx edge's rendered files (container path -> text), possibly mutated by a test."""

    files: dict[str, str]

    @classmethod
    def from_plan(cls, plan: RenderedPlan) -> EdgeFiles:
        root = plan.root / "files" / EDGE_RESOURCE
        files = {
            "/" + str(path.relative_to(root)): path.read_text()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }
        if layout.NGINX_MAIN_FILE not in files:
            raise RemapError(f"the plan rendered no {layout.NGINX_MAIN_FILE}: not the nginx edge")
        return cls(files)

    def copy(self) -> EdgeFiles:
        return EdgeFiles(dict(self.files))

    @property
    def main(self) -> str:
        return self.files[layout.NGINX_MAIN_FILE]

    def sites(self) -> dict[str, str]:
        """user_conf.d/ files (one per name)."""
        return {p: t for p, t in self.files.items() if p.startswith(layout.NGINX_USER_CONF_DIR + "/")}

    def site_for(self, host: str) -> str:
        """The container path of the server file whose server_name is `host`."""
        found = [
            p for p, t in self.sites().items() if re.search(rf"^\s*server_name\s+{re.escape(host)};", t, re.M)
        ]
        assert len(found) == 1, f"{host}: {found}"
        return found[0]

    def mutate(self, path: str, old: str, new: str, count: int | None = None) -> None:
        """Replace `old` (which must occur, `count` times when given) in one rendered file."""
        text = self.files[path]
        found = text.count(old)
        if found < 1 or (count is not None and found != count):
            raise RuntimeError(f"mutation target {old!r} occurs {found} times in {path}")
        self.files[path] = text.replace(old, new)

    def mutate_all(self, old: str, new: str) -> None:
        """Replace `old` in every file that has it (at least one must)."""
        hits = [p for p, t in self.files.items() if old in t]
        if not hits:
            raise RuntimeError(f"mutation target {old!r} is in no rendered file")
        for path in hits:
            self.files[path] = self.files[path].replace(old, new)


@dataclass(frozen=True)
class EdgeRemap:
    http_port: int
    tls_port: int
    health_port: int
    # Rendered upstream host:port -> the loopback address of the real (or stand-in) backend.
    upstreams: Mapping[str, str]
    live_dir: Path  # holds <cert name>/{fullchain,privkey,chain}.pem, like /etc/letsencrypt/live/
    webroot: Path
    ipv6: bool = IPV6_LOOPBACK
    # Where the public listeners (80, 443) bind: loopback, or a test namespace's addresses.
    listen4: str = LOOPBACK4
    listen6: str = LOOPBACK6

    def ports(self) -> dict[int, int]:
        return {layout.HTTP_PORT: self.http_port, layout.HTTPS_PORT: self.tls_port}


def _exactly(
    text: str, pattern: str, repl: str | Callable[[re.Match[str]], str], what: str, count: int
) -> str:
    new, found = re.subn(pattern, repl, text, flags=re.M)
    if found != count:
        raise RemapError(f"expected {count} {what}, found {found}")
    return new


_EDGE_LISTEN = re.compile(
    r"^(?P<head>[ \t]*listen[ \t]+)(?P<addr>\[::\]:|127\.0\.0\.1:)?(?P<port>\d+)(?P<tail>(?:[ \t][^;\n]*)?;)",
    re.M,
)


def remap_edge_listens(text: str, remap: EdgeRemap, file_name: str) -> str:
    def replace(match: re.Match[str]) -> str:
        port, addr = int(match["port"]), match["addr"]
        if addr == "127.0.0.1:":
            if port != layout.NGINX_REDIRECT_PORT:
                raise RemapError(
                    f"{file_name}: loopback listener on {port}, the harness knows only the health port"
                )
            return f"{match['head']}{LOOPBACK4}:{remap.health_port}{match['tail']}"
        if port not in remap.ports():
            raise RemapError(f"{file_name}: `listen` on port {port}, which the harness does not know")
        if addr:
            if not remap.ipv6:
                return f"# [harness: no IPv6 loopback] {match.group(0).strip()}"
            return f"{match['head']}[{remap.listen6}]:{remap.ports()[port]}{match['tail']}"
        return f"{match['head']}{remap.listen4}:{remap.ports()[port]}{match['tail']}"

    text = _EDGE_LISTEN.sub(replace, text)
    for listen in re.finditer(r"^[ \t]*listen[ \t]+(?P<value>[^;\n]*);", text, re.M):
        if not listen["value"].startswith((f"{LOOPBACK4}:", f"{remap.listen4}:", f"[{remap.listen6}]:")):
            raise RemapError(f"{file_name}: `listen {listen['value']};` has a form the harness cannot remap")
    return text


def remap_edge_server_file(text: str, remap: EdgeRemap, file_name: str) -> str:
    text = remap_edge_listens(text, remap, file_name)
    for upstream in re.findall(r"^[ \t]*server[ \t]+([^\s;{]+);", text, re.M):
        if upstream not in remap.upstreams:
            raise RemapError(f"{file_name}: upstream {upstream}, which the harness does not map")
    for rendered, local in remap.upstreams.items():
        if re.search(rf"^[ \t]*server[ \t]+{re.escape(rendered)}\b", text, re.M):
            text = _exactly(
                text,
                rf"^([ \t]*server[ \t]+){re.escape(rendered)}\b",
                rf"\g<1>{local}",
                f"upstream {rendered}",
                1,
            )
    mentions = text.count(RENDERED_LIVE)
    text = _exactly(
        text,
        rf"^([ \t]*ssl_(?:certificate|certificate_key|trusted_certificate)[ \t]+){re.escape(RENDERED_LIVE)}",
        rf"\g<1>{remap.live_dir}/",
        f"{RENDERED_LIVE} path in an ssl_* directive (every mention must be one)",
        mentions,
    )
    webroots = text.count(layout.NGINX_WEBROOT)
    text = _exactly(
        text,
        rf"^([ \t]*root[ \t]+){re.escape(layout.NGINX_WEBROOT)}([ \t]*;)",
        rf"\g<1>{remap.webroot}\g<2>",
        f"`root {layout.NGINX_WEBROOT};` (every mention of the webroot must be a root directive)",
        webroots,
    )
    if "/etc/" in re.sub(r"^\s*#.*$", "", text, flags=re.M):
        raise RemapError(f"{file_name}: an /etc path the harness does not remap")
    return text


def remap_edge_main(text: str, prefix: Path) -> str:
    user = ""
    if os.geteuid() == 0:
        # As root, workers would switch to `nginx` (absent here) or `nobody`, who cannot read pytest's
        # 0700 temp dirs.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    text = _exactly(
        text, r"^user[ \t]+nginx;", user or "# [harness: not root] user nginx;", "`user nginx;`", 1
    )
    text = _exactly(
        text,
        r"^error_log[ \t]+/dev/stderr[ \t]+notice;",
        f"error_log {prefix}/logs/error.log info;",
        "error_log",
        1,
    )
    text = _exactly(text, r"^pid[ \t]+/run/nginx\.pid;", f"pid {prefix}/nginx.pid;", "pid", 1)
    text = _exactly(
        text,
        r"^([ \t]*)access_log[ \t]+/dev/stdout[ \t]+edge;",
        rf"\g<1>access_log {prefix}/logs/access.log edge;",
        "access_log",
        1,
    )
    text = _exactly(
        text,
        r"^([ \t]*)include[ \t]+/etc/nginx/conf\.d/\*\.conf;",
        rf"\g<1>include {prefix}/conf.d/*.conf;",
        "the conf.d include",
        1,
    )
    temp = prefix / "temp"
    temp_paths = "".join(
        f"    {name}_temp_path {temp}/{name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return _exactly(text, r"^http \{\n", f"http {{\n{temp_paths}", "`http {`", 1)


@dataclass
class NginxEdge:
    """A real nginx (-p prefix) serving the remapped nginx edge files; start() runs `nginx -t` first."""

    prefix: Path
    files: EdgeFiles
    remap: EdgeRemap
    proc: Proc | None = None
    binary: str = field(default_factory=lambda: require_tool("nginx"))
    # Run inside this network namespace (`ip netns exec`), reached from there too.
    netns: EdgeNetns | None = None
    # False: start as jonasal/nginx-certbot does before the first issuance, with every site file
    # (their certificates are missing) disabled; enable_sites() links them once they exist.
    sites_enabled: bool = True

    def __post_init__(self) -> None:
        for sub in ("conf.d", "user_conf.d", "logs", "temp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(remap_edge_main(self.files.main, self.prefix))
        for path, text in self.files.files.items():
            if path == layout.NGINX_MAIN_FILE:
                continue
            name = Path(path).name
            remapped = remap_edge_server_file(text, self.remap, name)
            if path.startswith(layout.NGINX_USER_CONF_DIR + "/"):
                (self.prefix / "user_conf.d" / name).write_text(remapped)
            elif path.startswith("/etc/nginx/conf.d/"):
                (self.prefix / "conf.d" / name).write_text(remapped)
            else:
                raise RemapError(f"{path}: a file the harness does not place")
        if self.sites_enabled:
            self.link_sites()

    def link_sites(self) -> None:
        """user_conf.d/*.conf linked into conf.d/ (util.sh symlink_user_configs)."""
        for target in sorted((self.prefix / "user_conf.d").glob("*.conf")):
            link = self.prefix / "conf.d" / target.name
            if not link.is_symlink():
                link.symlink_to(target)

    def enable_sites(self) -> None:
        self.link_sites()
        self.reload()

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    def argv(self, *extra: str) -> list[str]:
        argv = [self.binary, "-p", f"{self.prefix}/", "-c", str(self.conf), "-e", str(self.error_log), *extra]
        return self.netns.exec(argv) if self.netns else argv

    def test_config(self) -> subprocess.CompletedProcess[str]:
        return run(self.argv("-t"), timeout=30)

    def start(self, timeout: float = 10.0) -> NginxEdge:
        checked = self.test_config()
        if checked.returncode != 0:
            raise AssertionError(f"nginx -t failed on the remapped rendered files:\n{checked.stderr}")
        self.proc = Proc("nginx", self.argv("-g", "daemon off;"), self.prefix / "logs")
        proc = self.proc
        for host, port in (
            (self.remap.listen4, self.remap.http_port),
            (self.remap.listen4, self.remap.tls_port),
            (LOOPBACK4, self.remap.health_port),
        ):

            def up(host: str = host, port: int = port) -> bool:
                if not proc.running():
                    raise AssertionError(f"nginx exited ({proc.popen.returncode}):\n{self.error_log_text()}")
                return self.netns.call(port_open, host, port) if self.netns else port_open(host, port)

            try:
                wait_until(up, timeout, f"nginx to listen on {host}:{port}")
            except AssertionError as error:
                raise AssertionError(f"{error}\n--- error.log ---\n{self.error_log_text()}") from None
        return self

    def reload(self) -> None:
        assert self.proc is not None
        before = self.workers()
        run(self.argv("-s", "reload"), timeout=30, check=True)
        wait_until(
            lambda: bool(self.workers()) and not (self.workers() & before),
            15,
            "nginx's old workers to exit after a reload",
        )

    def reload_command(self) -> str:
        return shlex.join(self.argv("-s", "reload"))

    def master_pid(self) -> int:
        """The nginx master's pid (under `ip netns exec` the Proc is nginx itself: exec replaces it)."""
        assert self.proc is not None and self.proc.running(), "nginx is not running"
        return self.proc.popen.pid

    def workers(self) -> set[int]:
        master = self.master_pid()
        children: set[int] = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == master:
                children.add(int(stat.parent.name))
        return children

    def error_log_text(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def access_log_text(self) -> str:
        return self.access_log.read_text(errors="replace") if self.access_log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


def cert_names(files: EdgeFiles) -> dict[str, list[str]]:
    """certificate name -> its domains, read from the rendered files the way jonasal/nginx-certbot
    does (src/scripts/util.sh parse_config_file: per file, the live/<name>/ of every
    `ssl_certificate_key` line gets every `server_name` of the same file; files without such a line,
    and `_`, are skipped)."""
    result: dict[str, list[str]] = {}
    for path, text in files.files.items():
        if not path.startswith("/etc/nginx/conf.d/") and not path.startswith(
            layout.NGINX_USER_CONF_DIR + "/"
        ):
            continue
        names = re.findall(r"^\s*ssl_certificate_key\s+/etc/letsencrypt/live/(.*)/privkey\.pem;", text, re.M)
        domains = [
            d
            for line in re.findall(r"^\s*server_name\s+([^;]*);", text, re.M)
            for d in line.split()
            if d != "_"
        ]
        for name in dict.fromkeys(names):
            result.setdefault(name, [])
            result[name] += [d for d in domains if d not in result[name]]
    return result


def install_scratch_certs(live_dir: Path, ca: ScratchCA, names: Mapping[str, list[str]], work: Path) -> None:
    """A scratch-CA certificate for every certificate name, where certbot would put it."""
    for cert_name, domains in names.items():
        cert, key = ca.issue(work / f"leaf-{cert_name}", domains)
        install_live_cert(live_dir / cert_name, ca, cert, key)


T = TypeVar("T")


@dataclass
class EdgeNetns:
    """A network namespace of our own with documentation addresses: the edge listens on
    SERVER4/SERVER6 (on the namespace's lo), clients connect from their own addresses, so nginx sees
    real client addresses
    (the tracker rewrites loopback peers to its external_ip: torrust-tracker v3.0.0 src/core/mod.rs
    assign_ip_address_to_peer, so loopback cannot show whose address was recorded)."""

    name: str
    SERVER4 = "192.0.2.10"
    SERVER6 = "2001:db8:10::10"
    # Two IPv4 clients; three IPv6 ones, two in one /64 (a limit per /64 covers both) and one apart.
    CLIENTS4 = ("192.0.2.21", "192.0.2.22")
    CLIENTS6 = ("2001:db8:21::1", "2001:db8:21::2", "2001:db8:22::1")

    @classmethod
    def create(cls, tag: str) -> EdgeNetns:
        if os.geteuid() != 0:
            from tests.realtools import missing

            missing("the nginx edge tier needs root for its network namespace (client addresses)")
        require_tool("ip")
        ns = cls(f"tedge-{tag}")
        try:
            _ip("netns", "add", ns.name)
            ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0"])
            _ip("-n", ns.name, "link", "set", "lo", "up")
            # The namespace's own loopback device carries them (no dummy driver needed): still not
            # loopback addresses, so the tracker records them as they are.
            for address in (cls.SERVER4, *cls.CLIENTS4):
                _ip("-n", ns.name, "addr", "add", f"{address}/32", "dev", "lo")
            for address in (cls.SERVER6, *cls.CLIENTS6):
                _ip("-n", ns.name, "addr", "add", f"{address}/128", "dev", "lo", "nodad")
        except BaseException:
            ns.destroy()
            raise
        return ns

    def exec(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return run(self.exec(argv), timeout=30, check=True)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a thread inside the namespace (its sockets are the namespace's)."""
        from tests.e2e.netns import in_netns

        return in_netns(self.name, lambda: fn(*args))

    def destroy(self) -> None:
        # Its links, addresses and routes go with it.
        _ip("netns", "delete", self.name, check=False)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", *args], timeout=30, check=check)
