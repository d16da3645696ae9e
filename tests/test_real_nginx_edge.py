"""The nginx edge (edge.kind nginx), live: the files `make plan STACK=nginx-example` renders, served by
a real nginx in front of the real torrust-tracker v3.0.0 binary and a stand-in Grafana, over IPv4
and IPv6, checked from clients with their own addresses.

Everything runs in a network namespace of its own (tests/nginx_edge.py EdgeNetns): nginx listens on
192.0.2.10 / 2001:db8:10::10, clients connect from 192.0.2.21/.22 and from 2001:db8:21::1/::2 (one
/64) and 2001:db8:22::1 (another). Loopback would not do: the tracker rewrites a loopback peer to
its external_ip (torrust-tracker v3.0.0 src/core/mod.rs assign_ip_address_to_peer), so it could
not show whose address it recorded. Certificates come from a scratch CA, one per certificate name
as jonasal/nginx-certbot derives them from the rendered files; tests/test_real_acme_edge.py gets
them from real certbot and pebble instead.

Each check is an assertion helper that the mutation tests at the end run against a copy of the
rendered files broken the way a template regression would break them: every helper is shown to fail.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core import layout
from services.edge.render import NGINX_EDGE_TIMEOUTS, THROTTLED_REASON, bencoded_failure
from tests.nginx_edge import EdgeFiles, EdgeNetns, EdgeRemap, NginxEdge, cert_names, install_scratch_certs
from tests.realtools import (
    LOOPBACK4,
    STANDIN_GREETING,
    BufferedSocket,
    Proc,
    RenderedPlan,
    ScratchCA,
    StandInGrafana,
    free_port,
    make_test_ca,
    nginx_plan,  # noqa: F401  (session fixture: the plan is rendered once)
    parse_head,
    port_open,
    require_tool,
    wait_until,
    ws_accept,
    ws_frame,
)
from tests.test_real_nginx import legacy_client
from tests.test_real_tracker import adapt_tracker_toml, new_ports, plan_token, tracker_bin_dir
from tools.doctor import bdecode

SERVER4, SERVER6 = EdgeNetns.SERVER4, EdgeNetns.SERVER6
A4, B4 = EdgeNetns.CLIENTS4
A6, A6_SAME64, B6 = EdgeNetns.CLIENTS6
FORGED = "203.0.113.99"  # what a client puts into its own X-Forwarded-For


# --- Clients with their own addresses ---------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def open_socket(source: str, server: str, port: int, timeout: float = 5) -> socket.socket:
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.bind((source, 0))
        sock.connect((server, port))
    except BaseException:
        sock.close()
        raise
    return sock


def tls_socket(
    source: str, server: str, port: int, context: ssl.SSLContext, host: str, timeout: float = 5
) -> ssl.SSLSocket:
    raw = open_socket(source, server, port, timeout)
    try:
        return context.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


def read_reply(sock: socket.socket) -> Reply:
    reader = BufferedSocket(sock)
    status_line, headers = parse_head(reader.read_until(b"\r\n\r\n"))
    fields = {k.lower(): v for k, v in headers}
    length = int(fields.get("content-length", "0"))
    body = reader.read_exact(length) if length else b""
    if "chunked" in fields.get("transfer-encoding", ""):
        body = b""
        while True:
            size = int(reader.read_until(b"\r\n").strip(), 16)
            chunk = reader.read_exact(size + 2)[:-2]
            if size == 0:
                break
            body += chunk
    return Reply(int(status_line.split(" ")[1]), fields, body)


def send_request(
    sock: socket.socket, host: str, target: str, headers: list[tuple[str, str]], close: bool
) -> None:
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        "User-Agent: edge-test",
        *(f"{k}: {v}" for k, v in headers),
    ]
    if close:
        lines.append("Connection: close")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())


# --- The deployment under test ------------------------------------------------------------------------


@dataclass
class Env:
    ns: EdgeNetns
    files: EdgeFiles
    ca: ScratchCA
    work: Path
    tracker_ports: Any
    token: str
    grafana: StandInGrafana
    nginx: NginxEdge
    hosts: dict[str, str] = field(default_factory=dict)  # kind -> name

    def context(self, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=str(self.ca.cert))
        if version is not None:
            context.minimum_version = context.maximum_version = version
        return context

    def get(
        self,
        host: str,
        target: str,
        *,
        source: str = A4,
        headers: list[tuple[str, str]] | None = None,
        nginx: NginxEdge | None = None,
    ) -> Reply:
        server = SERVER6 if ":" in source else SERVER4
        port = (nginx or self.nginx).remap.tls_port

        def fetch() -> Reply:
            with tls_socket(source, server, port, self.context(), host) as sock:
                send_request(sock, host, target, headers or [], close=True)
                return read_reply(sock)

        return self.ns.call(fetch)

    def plain(self, host: str, target: str, *, source: str = A4, nginx: NginxEdge | None = None) -> Reply:
        server = SERVER6 if ":" in source else SERVER4
        port = (nginx or self.nginx).remap.http_port

        def fetch() -> Reply:
            with open_socket(source, server, port) as sock:
                send_request(sock, host, target, [], close=True)
                return read_reply(sock)

        return self.ns.call(fetch)

    def api(self, path: str) -> Any:
        reply = self.get(self.hosts["api"], f"/api/v1/{path}?token={self.token}")
        assert reply.status == 200, (reply.status, reply.body[:300])
        return json.loads(reply.body)

    @contextmanager
    def serve(self, files: EdgeFiles, name: str) -> Iterator[NginxEdge]:
        """Another nginx (fresh ports) with `files`, in front of the same backends."""
        nginx = start_edge(self, files, self.work / name)
        try:
            yield nginx
        finally:
            nginx.stop()


def start_edge(env: Env, files: EdgeFiles, prefix: Path) -> NginxEdge:
    webroot = prefix / "webroot"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True, exist_ok=True)
    remap = EdgeRemap(
        http_port=free_port(),
        tls_port=free_port(),
        health_port=free_port(),
        upstreams={
            f"{layout.TRACKER_BACKEND_IP}:{layout.TRACKER_API_PORT}": f"{LOOPBACK4}:{env.tracker_ports.api}",
            f"{layout.TRACKER_BACKEND_IP}:{layout.http_tracker_port(0)}": (
                f"{LOOPBACK4}:{env.tracker_ports.http}"
            ),
            f"{layout.GRAFANA_BACKEND_IP}:{layout.GRAFANA_PORT}": env.grafana.address,
        },
        live_dir=env.work / "live",
        webroot=webroot,
        ipv6=True,
        listen4=SERVER4,
        listen6=SERVER6,
    )
    return NginxEdge(prefix, files, remap, netns=env.ns).start()


@pytest.fixture(scope="module")
def env(nginx_plan: RenderedPlan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:  # noqa: F811
    require_tool("nginx")
    bin_dir = tracker_bin_dir()
    work = tmp_path_factory.mktemp("edge")
    ns = EdgeNetns.create(str(os.getpid()))
    procs: list[Proc] = []
    grafana: StandInGrafana | None = None
    nginx: NginxEdge | None = None
    try:
        files = EdgeFiles.from_plan(nginx_plan)
        ca = make_test_ca(work / "ca", "nginx edge test CA")
        install_scratch_certs(work / "live", ca, cert_names(files), work)
        # The real tracker, with the rendered tracker.toml (bind addresses to the namespace's loopback).
        (work / "database").mkdir()
        ports = new_ports()
        config = work / "tracker.toml"
        config.write_text(
            adapt_tracker_toml(nginx_plan.tracker_toml.read_text(), ports, work / "database" / "sqlite3.db")
        )
        token = plan_token(nginx_plan.prometheus_yml.read_text())
        tracker_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TORRUST_TRACKER_CONFIG_TOML_PATH": str(config),
            "TORRUST_TRACKER_CONFIG_OVERRIDE_CORE__DATABASE__DRIVER": "sqlite3",
            "TORRUST_TRACKER_CONFIG_OVERRIDE_HTTP_API__ACCESS_TOKENS__ADMIN": token,
        }
        tracker = Proc(
            "torrust-tracker", ns.exec([str(bin_dir / "torrust-tracker")]), work, env=tracker_env, cwd=work
        )
        procs.append(tracker)
        for port in (ports.api, ports.http):

            def listening(port: int = port) -> bool:
                return ns.call(port_open, LOOPBACK4, port)

            wait_until(listening, 30, f"the tracker on {port}")
        grafana = ns.call(lambda: StandInGrafana().start())
        env = Env(ns, files, ca, work, ports, token, grafana, nginx=None)  # type: ignore[arg-type]
        for site in files.sites().values():
            kind = "api" if "tracker-api" in site else "grafana" if "live/grafana/" in site else "http"
            env.hosts[kind] = re.search(r"^\s*server_name\s+(\S+);", site, re.M).group(1)  # type: ignore[union-attr]
        nginx = start_edge(env, files, work / "nginx")
        env.nginx = nginx
        yield env
    finally:
        if nginx is not None:
            nginx.stop()
        for proc in procs:
            proc.stop(timeout=10)
        if grafana is not None:
            grafana.stop()
        ns.destroy()


# --- Assertion helpers (the mutation tests run them against broken files) ------------------------------


def announce_target(info_hash: bytes, peer_id: bytes, port: int = 6881) -> str:
    # Percent-encoding every byte (quote, not urlencode's default quote_plus): the tracker does not
    # read `+` as a space, so a random info hash with a 0x20 byte would be another torrent.
    query = urllib.parse.urlencode(
        {"info_hash": info_hash, "peer_id": peer_id, "port": port, "uploaded": 0, "downloaded": 0,
         "left": 0, "event": "started", "compact": 0},
        quote_via=urllib.parse.quote,
    )  # fmt: skip
    return f"/announce?{query}"


def recorded_addresses(env: Env, info_hash: bytes) -> set[str]:
    peers = env.api(f"torrent/{info_hash.hex()}")["peers"]
    return {peer["peer_addr"].rsplit(":", 1)[0].strip("[]") for peer in peers}


def assert_announce_records_client_address(env: Env, nginx: NginxEdge | None = None) -> None:
    """Announces through nginx from an IPv4 and an IPv6 client, each sending its own (forged)
    X-Forwarded-For, once as one header and once as two header lines: the tracker records the
    address of the TCP connection, never the forged one."""
    host = env.hosts["http"]
    for source in (A4, A6):
        for forged in (
            [("X-Forwarded-For", FORGED)],
            [("X-Forwarded-For", "10.1.1.1"), ("X-Forwarded-For", FORGED)],
        ):
            info_hash = secrets.token_bytes(20)
            peer_id = b"-ET0001-" + secrets.token_hex(6).encode()
            reply = env.get(host, announce_target(info_hash, peer_id),
                            source=source, headers=forged, nginx=nginx)  # fmt: skip
            assert reply.status == 200, (reply.status, reply.body[:200])
            answer = bdecode(reply.body)
            assert b"failure reason" not in answer, answer
            recorded = recorded_addresses(env, info_hash)
            assert recorded == {source}, (
                f"announce from {source} with {forged} recorded {recorded}: the tracker took the client's "
                "own X-Forwarded-For"
            )


def assert_only_tracker_paths(env: Env, nginx: NginxEdge | None = None) -> None:
    """The tracker's routes answer; every other path gets nginx's own 404, never reaching a backend."""
    http, api = env.hosts["http"], env.hosts["api"]
    ok = {
        (http, "/health_check"): 200,
        (http, "/scrape?info_hash=" + urllib.parse.quote_from_bytes(secrets.token_bytes(20))): 200,
        (api, "/api/health_check"): 200,
    }
    for (host, target), status in ok.items():
        reply = env.get(host, target, nginx=nginx)
        assert reply.status == status, (host, target, reply.status, reply.body[:200])
    for host, target in (
        (http, "/"), (http, "/api/v1/stats"), (http, "/announcex"), (http, "/metrics"), (http, "/.env"),
        (api, "/"), (api, "/announce"), (api, "/health_check"), (api, "/apix"),
    ):  # fmt: skip
        reply = env.get(host, target, nginx=nginx)
        assert reply.status == 404 and b"<center>nginx</center>" in reply.body, (
            f"https://{host}{target} answered {reply.status} {reply.body[:120]!r}, not nginx's own 404: "
            "a path that is not the tracker's reached a backend"
        )


def handshake_version(env: Env, version: ssl.TLSVersion, nginx: NginxEdge | None = None) -> str | None:
    port = (nginx or env.nginx).remap.tls_port

    def shake() -> str | None:
        with tls_socket(A4, SERVER4, port, env.context(version), env.hosts["http"]) as sock:
            return sock.version()

    return env.ns.call(shake)


def assert_tls_versions(env: Env, nginx: NginxEdge | None = None) -> None:
    """TLS 1.2 and 1.3 complete (certificate verified); TLS 1.0 and 1.1 end with the SERVER's
    protocol_version alert (the legacy client lowers its own floor: tests/test_real_nginx.py)."""
    assert handshake_version(env, ssl.TLSVersion.TLSv1_3, nginx) == "TLSv1.3"
    assert handshake_version(env, ssl.TLSVersion.TLSv1_2, nginx) == "TLSv1.2"
    port = (nginx or env.nginx).remap.tls_port
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):

        def legacy(version: ssl.TLSVersion = version) -> str:
            try:
                tls_socket(A4, SERVER4, port, legacy_client(version), env.hosts["http"]).close()
            except ssl.SSLError as refused:
                return str(refused.reason)
            return "completed"

        reason = env.ns.call(legacy)
        assert reason == "TLSV1_ALERT_PROTOCOL_VERSION", f"{version.name}: {reason}"


def alpn(env: Env, nginx: NginxEdge | None = None) -> str | None:
    port = (nginx or env.nginx).remap.tls_port

    def negotiate() -> str | None:
        context = env.context()
        context.set_alpn_protocols(["h2", "http/1.1"])
        with tls_socket(A4, SERVER4, port, context, env.hosts["api"]) as sock:
            return sock.selected_alpn_protocol()

    return env.ns.call(negotiate)


def assert_http2(env: Env, nginx: NginxEdge | None = None) -> None:
    """ALPN selects h2, and a real HTTP/2 client (curl --http2) announces over it."""
    assert alpn(env, nginx) == "h2"
    nginx = nginx or env.nginx
    curl = require_tool("curl")
    host = env.hosts["http"]
    info_hash = secrets.token_bytes(20)
    url = f"https://{host}:{nginx.remap.tls_port}{announce_target(info_hash, b'-ET0001-h2h2h2h2h2h2')}"
    result = env.ns.call(
        lambda: subprocess.run(
            [curl, "-sS", "--http2", "--cacert", str(env.ca.cert), "--interface", A4,
             "--resolve", f"{host}:{nginx.remap.tls_port}:{SERVER4}", "-o", "/dev/null",
             "-w", "%{http_version} %{http_code}", url],
            capture_output=True, text=True, timeout=30, check=False,
        )
    )  # fmt: skip
    assert result.stdout == "2 200", (result.stdout, result.stderr)
    assert recorded_addresses(env, info_hash) == {A4}


def resumed(env: Env, version: ssl.TLSVersion, nginx: NginxEdge | None = None) -> bool:
    """Whether a second connection resumes the first one's session (Python's ssl session reuse)."""
    port = (nginx or env.nginx).remap.tls_port
    host = env.hosts["api"]

    def twice() -> bool:
        context = env.context(version)
        with tls_socket(A4, SERVER4, port, context, host) as first:
            # A TLS 1.3 ticket arrives after the handshake: a request and its reply bring it in.
            send_request(first, host, "/api/health_check", [], close=False)
            read_reply(first)
            session = first.session
        raw = open_socket(A4, SERVER4, port)
        with context.wrap_socket(raw, server_hostname=host, session=session) as second:
            return bool(second.session_reused)

    return bool(env.ns.call(twice))


def assert_session_resumption(env: Env, nginx: NginxEdge | None = None) -> None:
    assert resumed(env, ssl.TLSVersion.TLSv1_2, nginx), "TLS 1.2 session not resumed"
    assert resumed(env, ssl.TLSVersion.TLSv1_3, nginx), "TLS 1.3 session not resumed"


@dataclass
class SlowClients:
    """An idle TCP connection (0 bytes) and one that sent 1 byte of a ClientHello."""

    sockets: list[socket.socket]
    opened: float


def open_slow_clients(env: Env, nginx: NginxEdge) -> SlowClients:
    def open_them() -> list[socket.socket]:
        idle = open_socket(B4, SERVER4, nginx.remap.tls_port, timeout=30)
        half = open_socket(B6, SERVER6, nginx.remap.tls_port, timeout=30)
        half.sendall(b"\x16")  # the first byte of a TLS record header (handshake)
        return [idle, half]

    return SlowClients(env.ns.call(open_them), time.monotonic())


def timed_request(env: Env, nginx: NginxEdge, timeout: float = 20) -> float:
    """Seconds for a fresh connection's full TLS handshake and an announce, from another address."""
    host = env.hosts["http"]

    def once() -> float:
        started = time.monotonic()
        with tls_socket(A4, SERVER4, nginx.remap.tls_port, env.context(), host, timeout=timeout) as sock:
            send_request(sock, host, "/health_check", [], close=True)
            assert read_reply(sock).status == 200
        return time.monotonic() - started

    return float(env.ns.call(once))


def closed_after(env: Env, clients: SlowClients, limit: float) -> list[float]:
    """Seconds after opening at which nginx closed each slow client (read returns EOF or reset)."""

    def wait() -> list[float]:
        result = []
        for sock in clients.sockets:
            sock.settimeout(max(0.1, limit - (time.monotonic() - clients.opened)))
            try:
                sock.recv(64)
            except TimeoutError:
                result.append(float("inf"))
                continue
            except ConnectionResetError:
                pass
            result.append(time.monotonic() - clients.opened)
        return result

    return env.ns.call(wait)


def assert_slow_clients_do_not_stall_others(env: Env, nginx: NginxEdge | None = None) -> list[float]:
    """With an idle connection and a 1-byte ClientHello open, another client's handshake and request
    take milliseconds; both slow clients are closed after client_header_timeout."""
    nginx = nginx or env.nginx
    clients = open_slow_clients(env, nginx)
    try:
        time.sleep(0.3)
        timings = [timed_request(env, nginx) for _ in range(5)]
        assert max(timings) < 1.0, f"handshake + request with slow clients open took {timings} s"
        timeout = NGINX_EDGE_TIMEOUTS["header"]
        closed = closed_after(env, clients, timeout + 3)
        assert all(timeout - 1 <= t <= timeout + 2 for t in closed), (
            f"slow clients closed after {closed} s, want ~{timeout} s (client_header_timeout)"
        )
        return timings
    finally:
        for sock in clients.sockets:
            sock.close()


def flood(env: Env, source: str, host: str, count: int, nginx: NginxEdge | None = None) -> list[int]:
    """`count` announces from `source` on one keep-alive connection, as fast as nginx answers."""
    nginx = nginx or env.nginx
    server = SERVER6 if ":" in source else SERVER4

    def burst() -> list[int]:
        statuses = []
        with tls_socket(source, server, nginx.remap.tls_port, env.context(), host) as sock:
            for _ in range(count):
                send_request(sock, host, "/health_check", [], close=False)
                reply = read_reply(sock)
                statuses.append(reply.status)
                if reply.status == 429:
                    assert reply.body == bencoded_failure(THROTTLED_REASON).encode(), reply.body
        return statuses

    return env.ns.call(burst)


def assert_rate_limit_per_address(env: Env, nginx: NginxEdge | None = None) -> None:
    """A flood from one address gets 429 past the burst, while another address (and the other
    family) is served; two IPv6 addresses of one /64 share the limit, another /64 does not."""
    host = env.hosts["http"]
    statuses = flood(env, A4, host, 160, nginx)
    assert statuses[:100] == [200] * 100, statuses[:100]
    assert statuses.count(429) >= 40, f"one address got {statuses.count(429)} of 160 refused"
    assert flood(env, B4, host, 20, nginx) == [200] * 20, "another IPv4 address was refused"
    assert flood(env, A6, host, 20, nginx) == [200] * 20, "an IPv6 address was refused"
    # The same /64 as A6: its bucket is A6's, which the next requests drain.
    flood(env, A6, host, 120, nginx)
    assert 429 in flood(env, A6_SAME64, host, 20, nginx), "another address of the same /64 was not limited"
    assert flood(env, B6, host, 20, nginx) == [200] * 20, "another /64 was refused"


def concurrent_statuses(env: Env, source: str, count: int, nginx: NginxEdge | None = None) -> list[int]:
    """`count` concurrent requests from one address to Grafana's slow endpoint (held 2 s upstream)."""
    nginx = nginx or env.nginx
    host = env.hosts["grafana"]
    server = SERVER6 if ":" in source else SERVER4
    results: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        with tls_socket(source, server, nginx.remap.tls_port, env.context(), host, timeout=20) as sock:
            send_request(sock, host, "/slow/2", [], close=True)
            status = read_reply(sock).status
        with lock:
            results.append(status)

    def run_all() -> None:
        threads = [threading.Thread(target=one) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    # Threads started from the namespace's thread inherit its network namespace.
    env.ns.call(run_all)
    return results


def assert_connection_limit_per_address(env: Env, nginx: NginxEdge | None = None) -> None:
    """More concurrent requests from one address than the rendered limit_conn: the excess gets 429."""
    grafana_site = env.files.files[env.files.site_for(env.hosts["grafana"])]
    found = re.search(r"^\s*limit_conn edge_conn (\d+);", grafana_site, re.M)
    assert found, "the rendered Grafana server has no limit_conn"
    limit = int(found.group(1))
    statuses = concurrent_statuses(env, A4, limit + 6, nginx)
    assert statuses.count(429) >= 1 and statuses.count(200) >= limit - 4, (
        f"{limit + 6} concurrent requests from one address: {sorted(statuses)}"
    )


def assert_grafana_websocket(env: Env, nginx: NginxEdge | None = None) -> None:
    """wss://<grafana>/api/live/ws on 443 upgrades (101) and frames flow both ways."""
    nginx = nginx or env.nginx
    host = env.hosts["grafana"]
    key = secrets.token_urlsafe(16)

    def upgrade() -> None:
        context = env.context()
        context.set_alpn_protocols(["http/1.1"])
        with tls_socket(A6, SERVER6, nginx.remap.tls_port, context, host) as sock:
            sock.sendall(
                f"GET /api/live/ws HTTP/1.1\r\nHost: {host}\r\nOrigin: https://{host}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            reader = BufferedSocket(sock)
            status_line, headers = parse_head(reader.read_until(b"\r\n\r\n"))
            assert status_line.split(" ")[1] == "101", f"WebSocket upgrade answered `{status_line}`"
            assert {k.lower(): v for k, v in headers}.get("sec-websocket-accept") == ws_accept(key)
            assert reader.read_frame() == (0x1, STANDIN_GREETING)
            sock.sendall(ws_frame(0x1, b"subscribe", mask=True))
            assert reader.read_frame() == (0x1, b"subscribe")

    env.ns.call(upgrade)
    seen = env.grafana.last_request("/api/live/ws")
    assert seen.header("Host") == host and seen.header("X-Forwarded-For") == A6


def assert_port80(env: Env, nginx: NginxEdge | None = None) -> None:
    """Port 80, both families: the ACME webroot answers for every name (200, no redirect), other
    paths of our names redirect to https on 443, unknown names get 404."""
    nginx = nginx or env.nginx
    token = secrets.token_urlsafe(24)
    content = f"{token}.{secrets.token_urlsafe(32)}"
    (nginx.remap.webroot / ".well-known" / "acme-challenge" / token).write_text(content)
    for source in (A4, A6):
        for host in env.hosts.values():
            challenge = env.plain(host, f"/.well-known/acme-challenge/{token}", source=source, nginx=nginx)
            assert (challenge.status, challenge.body.decode()) == (200, content), (
                f"HTTP-01 for {host} from {source}: {challenge.status} {challenge.headers.get('location')}"
            )
            redirect = env.plain(host, "/x?y=1", source=source, nginx=nginx)
            assert (redirect.status, redirect.headers.get("location")) == (308, f"https://{host}/x?y=1")
        assert env.plain("unknown.example.net", "/", source=source, nginx=nginx).status == 404


def assert_no_query_in_log(env: Env, nginx: NginxEdge | None = None) -> None:
    """The access log never carries a query string: the admin token travels as ?token=."""
    nginx = nginx or env.nginx
    marker = secrets.token_hex(8)
    env.get(env.hosts["api"], f"/api/v1/stats?token={env.token}&marker={marker}", nginx=nginx)
    wait_until(lambda: "/api/v1/stats" in nginx.access_log_text(), 5, "the access log line")
    log = nginx.access_log_text()
    assert env.token not in log and marker not in log, "the access log holds a query string"


# --- The rendered files, live ------------------------------------------------------------------------


def test_nginx_t_accepts_the_rendered_files_without_warnings(env: Env) -> None:
    result = env.nginx.test_config()
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "test is successful" in output, output
    # setrlimit(nofile) fails for an unprivileged test nginx (the container's limit is raised):
    # that alert alone is the harness's, not the config's.
    noise = [line for line in output.splitlines() if re.search(r"\[(warn|emerg|alert|crit)\]", line)]
    assert not [line for line in noise if "setrlimit(RLIMIT_NOFILE" not in line], output


def test_one_certificate_per_name_as_the_image_derives_them(env: Env) -> None:
    assert cert_names(env.files) == {
        layout.TRACKER_API_CERT_NAME: [env.hosts["api"]],
        f"{layout.HTTP_TRACKER_CERT_PREFIX}1": [env.hosts["http"]],
        layout.GRAFANA_CERT_NAME: [env.hosts["grafana"]],
    }


def test_announce_through_nginx_records_the_clients_own_address(env: Env) -> None:
    assert_announce_records_client_address(env)


def test_only_the_tracker_paths_are_proxied(env: Env) -> None:
    assert_only_tracker_paths(env)


def test_unknown_names_get_no_certificate(env: Env) -> None:
    def shake() -> str:
        try:
            tls_socket(A4, SERVER4, env.nginx.remap.tls_port, env.context(), "other.example.net").close()
        except ssl.SSLError as error:
            return str(error.reason)
        return "completed"

    assert env.ns.call(shake) == "TLSV1_UNRECOGNIZED_NAME"


def test_tls_12_and_13_accepted_10_and_11_refused(env: Env) -> None:
    assert_tls_versions(env)


def test_http2_negotiated_by_alpn_and_used_by_a_client(env: Env) -> None:
    assert_http2(env)


def test_sessions_resume_for_tls_12_and_13(env: Env) -> None:
    assert_session_resumption(env)


def test_slow_clients_do_not_stall_another_clients_handshake(env: Env) -> None:
    timings = assert_slow_clients_do_not_stall_others(env)
    print(
        "handshake + request with an idle and a 1-byte client open: "
        f"{[round(t * 1000, 1) for t in timings]} ms"
    )


def test_one_address_is_rate_limited_while_others_are_served(env: Env) -> None:
    assert_rate_limit_per_address(env)


def test_concurrent_requests_per_address_are_limited(env: Env) -> None:
    assert_connection_limit_per_address(env)


def test_grafana_websocket_upgrades_on_443(env: Env) -> None:
    assert_grafana_websocket(env)


def test_port80_serves_acme_and_redirects_over_both_families(env: Env) -> None:
    assert_port80(env)


def test_the_access_log_has_no_query_strings(env: Env) -> None:
    assert_no_query_in_log(env)


def test_health_listener_answers_on_loopback_only(env: Env) -> None:
    def check() -> tuple[int, bool]:
        with open_socket(LOOPBACK4, LOOPBACK4, env.nginx.remap.health_port) as sock:
            send_request(sock, "x", "/.well-known/torrust-edge-health", [], close=True)
            status = read_reply(sock).status
        return status, port_open(SERVER4, env.nginx.remap.health_port)

    assert env.ns.call(check) == (200, False)


# --- Mutations: a broken config makes the same helpers fail ------------------------------------------


@pytest.fixture
def broken(env: Env) -> EdgeFiles:
    return env.files.copy()


def test_mutation_client_header_passed_through(env: Env, broken: EdgeFiles) -> None:
    broken.mutate(
        broken.site_for(env.hosts["http"]), "    proxy_set_header X-Forwarded-For $remote_addr;\n", ""
    )
    with env.serve(broken, "m-xff") as nginx, pytest.raises(AssertionError, match="own X-Forwarded-For"):
        assert_announce_records_client_address(env, nginx)


def test_mutation_everything_proxied(env: Env, broken: EdgeFiles) -> None:
    site = broken.site_for(env.hosts["http"])
    broken.mutate(
        site,
        "    location / {\n        return 404;\n    }",
        "    location / {\n        proxy_pass http://http_tracker_1;\n    }",
    )
    with env.serve(broken, "m-paths") as nginx, pytest.raises(AssertionError, match="reached a backend"):
        assert_only_tracker_paths(env, nginx)


def test_mutation_legacy_tls_enabled(env: Env, broken: EdgeFiles) -> None:
    broken.mutate(
        layout.NGINX_MAIN_FILE,
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;",
    )
    broken.files[layout.NGINX_MAIN_FILE] = re.sub(
        r"ssl_ciphers [^;]+;", "ssl_ciphers DEFAULT:@SECLEVEL=0;", broken.main
    )
    with env.serve(broken, "m-tls") as nginx, pytest.raises(AssertionError, match="TLSv1: completed"):
        assert_tls_versions(env, nginx)


def test_mutation_no_http2(env: Env, broken: EdgeFiles) -> None:
    broken.mutate_all(" ssl http2", " ssl")
    with env.serve(broken, "m-h2") as nginx, pytest.raises(AssertionError, match=r"http/1\.1"):
        assert_http2(env, nginx)


def test_mutation_no_session_cache(env: Env, broken: EdgeFiles) -> None:
    broken.mutate(layout.NGINX_MAIN_FILE, "ssl_session_cache shared:EdgeTLS:10m;", "ssl_session_cache off;")
    with env.serve(broken, "m-resume") as nginx, pytest.raises(AssertionError, match="not resumed"):
        assert_session_resumption(env, nginx)


def test_mutation_no_header_timeout(env: Env, broken: EdgeFiles) -> None:
    broken.mutate(
        layout.NGINX_MAIN_FILE,
        f"client_header_timeout {NGINX_EDGE_TIMEOUTS['header']}s;",
        "client_header_timeout 60s;",
    )
    with (
        env.serve(broken, "m-timeout") as nginx,
        pytest.raises(AssertionError, match="slow clients closed after"),
    ):
        assert_slow_clients_do_not_stall_others(env, nginx)


def test_mutation_connection_budget_exhausted(env: Env, broken: EdgeFiles) -> None:
    """The helper does measure stalling. nginx closes connections that sent nothing when it runs out
    (they are "reusable", ngx_drain_connections), so the budget is filled with handshakes in progress
    (1 byte of a ClientHello): with one worker of 16 connections the next client is not served: nginx
    answers 500 when no connection is left for the upstream, resets the client, or it waits for the
    timeouts; any of them fails the check."""
    broken.mutate(layout.NGINX_MAIN_FILE, "worker_processes 2;", "worker_processes 1;")
    broken.files[layout.NGINX_MAIN_FILE] = re.sub(
        r"worker_connections \d+;", "worker_connections 16;", broken.main
    )
    with env.serve(broken, "m-budget") as nginx:

        def fill() -> list[socket.socket]:
            held = []
            for _ in range(16):
                sock = open_socket(B4, SERVER4, nginx.remap.tls_port, timeout=30)
                sock.sendall(b"\x16")
                held.append(sock)
            return held

        held = env.ns.call(fill)
        try:
            with pytest.raises((AssertionError, OSError)):
                assert_slow_clients_do_not_stall_others(env, nginx)
        finally:
            for sock in held:
                sock.close()


def test_mutation_no_rate_limit(env: Env, broken: EdgeFiles) -> None:
    broken.mutate(broken.site_for(env.hosts["http"]), "limit_req zone=edge_req", "# limit_req zone=edge_req")
    with env.serve(broken, "m-rate") as nginx, pytest.raises(AssertionError, match="of 160 refused"):
        assert_rate_limit_per_address(env, nginx)


def test_mutation_limit_per_ipv6_address_not_per_64(env: Env, broken: EdgeFiles) -> None:
    broken.mutate(layout.NGINX_MAIN_FILE, "limit_req_zone $edge_client", "limit_req_zone $binary_remote_addr")
    with env.serve(broken, "m-64") as nginx, pytest.raises(AssertionError, match="same /64 was not limited"):
        assert_rate_limit_per_address(env, nginx)


def test_mutation_no_connection_limit(env: Env, broken: EdgeFiles) -> None:
    broken.mutate(
        broken.site_for(env.hosts["grafana"]), "    limit_conn edge_conn", "    # limit_conn edge_conn"
    )
    with (
        env.serve(broken, "m-conn") as nginx,
        pytest.raises(AssertionError, match="concurrent requests from one address"),
    ):
        assert_connection_limit_per_address(env, nginx)


def test_mutation_upgrade_header_dropped(env: Env, broken: EdgeFiles) -> None:
    broken.mutate(
        broken.site_for(env.hosts["grafana"]), "        proxy_set_header Upgrade $http_upgrade;\n", ""
    )
    with (
        env.serve(broken, "m-ws") as nginx,
        pytest.raises(AssertionError, match=r"upgrade answered `HTTP/1\.1 400"),
    ):
        assert_grafana_websocket(env, nginx)


def test_mutation_acme_behind_redirect(env: Env, broken: EdgeFiles) -> None:
    broken.mutate(
        layout.NGINX_REDIRECTOR_FILE,
        "location ^~ /.well-known/acme-challenge/ {",
        "location ^~ /.well-known/acme-challenge/ {\n        return 308 https://$host$request_uri;",
    )
    with env.serve(broken, "m-acme") as nginx, pytest.raises(AssertionError, match="HTTP-01 for"):
        assert_port80(env, nginx)


def test_mutation_ipv4_only_port80(env: Env, broken: EdgeFiles) -> None:
    broken.files[layout.NGINX_REDIRECTOR_FILE] = re.sub(
        r"^\s*listen \[::\]:80[^;]*;\n", "", broken.files[layout.NGINX_REDIRECTOR_FILE], flags=re.M
    )
    with env.serve(broken, "m-v6") as nginx, pytest.raises(OSError):
        assert_port80(env, nginx)


def test_mutation_query_logged(env: Env, broken: EdgeFiles) -> None:
    broken.mutate(layout.NGINX_MAIN_FILE, '"$request_method $uri $server_protocol"', '"$request"')
    with env.serve(broken, "m-log") as nginx, pytest.raises(AssertionError, match="holds a query string"):
        assert_no_query_in_log(env, nginx)
