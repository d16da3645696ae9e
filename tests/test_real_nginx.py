"""nginx, live: the dev plan's rendered nginx files served by a real nginx on loopback.

The files are `make plan`'s output; tests/realtools.py remaps only the listen ports, the upstream
address (to a stand-in Grafana that records what it receives), the certificate directory (to a
scratch CA's certificate for the Grafana name) and the webroot. Everything below is asserted over
real sockets. The assertion helpers are shared with the mutation tests at the end, which break a
copy of the rendered files the way a template regression would and prove the helper then fails.

TLS 1.0/1.1 refusal: OpenSSL 3 refuses TLS < 1.2 on the client side too at its default security
level, which would make a naive test pass for the wrong reason. The legacy client here lowers its
own floor (`@SECLEVEL=0`, minimum = maximum = the legacy version) and the test demands the
*server's* `protocol_version` alert. `test_mutation_legacy_tls_enabled` is the positive control:
with TLS 1.0/1.1 enabled in nginx the same client completes the handshake, so the refusal is
really nginx's.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import ssl
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from core import layout
from tests.realtools import (
    LOOPBACK4,
    LOOPBACK6,
    STANDIN_GREETING,
    BufferedSocket,
    Nginx,
    NginxFiles,
    NginxRemap,
    RemapError,
    RenderedPlan,
    ScratchCA,
    StandInGrafana,
    client_context,
    connect,
    dev_plan,  # noqa: F401  (session fixture: the plan is rendered once)
    free_port,
    http_request,
    install_live_cert,
    make_test_ca,
    missing,
    parse_head,
    remap_grafana,
    remap_listens,
    remap_redirector,
    require_ipv6_loopback,
    require_tool,
    run,
    write_main_conf,
    ws_accept,
    ws_frame,
)

TLS_PORT = layout.GRAFANA_TLS_PORT


@dataclass
class Env:
    nginx: Nginx
    standin: StandInGrafana
    ca: ScratchCA
    host: str  # the Grafana name of the dev stack

    @property
    def remap(self) -> NginxRemap:
        return self.nginx.remap

    def tls(self) -> ssl.SSLContext:
        return client_context(self.ca.cert)

    def https_get(
        self, target: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        response = http_request(
            LOOPBACK4,
            self.remap.tls_port,
            target,
            {"Host": f"{self.host}:{TLS_PORT}", **(headers or {})},
            tls=self.tls(),
            server_hostname=self.host,
        )
        return response.status, {k.lower(): v for k, v in response.headers}, response.body


@contextmanager
def serve(
    files: NginxFiles, workdir: Path, ca: ScratchCA, host: str, standin: StandInGrafana
) -> Iterator[Env]:
    """A real nginx on fresh loopback ports serving `files` (remapped), stopped on exit."""
    live_dir = workdir / "letsencrypt" / "live" / layout.GRAFANA_CERT_NAME
    if not live_dir.exists():
        cert, key = ca.issue(workdir / "leaf", [host])
        install_live_cert(live_dir, ca, cert, key)
    webroot = workdir / "webroot"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True, exist_ok=True)
    remap = NginxRemap(
        http_port=free_port(),
        tls_port=free_port(),
        redirect_port=free_port(),
        upstream=standin.address,
        live_dir=live_dir,
        webroot=webroot,
    )
    nginx = Nginx(workdir / "nginx", files, remap)
    nginx.start()
    try:
        yield Env(nginx, standin, ca, host)
    finally:
        nginx.stop()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ScratchCA:
    require_tool("nginx")  # name the main missing tool first
    return make_test_ca(tmp_path_factory.mktemp("ca"), "torrust-hybrid-tls test CA")


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInGrafana]:
    server = StandInGrafana().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def env(
    dev_plan: RenderedPlan,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    ca: ScratchCA,
    standin: StandInGrafana,
) -> Iterator[Env]:
    require_tool("nginx")
    with serve(
        NginxFiles.from_plan(dev_plan), tmp_path_factory.mktemp("nginx"), ca, dev_plan.grafana_host(), standin
    ) as e:
        yield e


def mutated(text: str, old: str, new: str) -> str:
    """`text` with the single occurrence of `old` replaced (a mutation that must apply exactly)."""
    count = text.count(old)
    if count < 1:
        raise RuntimeError(f"mutation target {old!r} not in the rendered file")
    return text.replace(old, new)


# --- Assertion helpers (shared with the mutation tests) ------------------------------------------


def assert_websocket_echo(env: Env) -> None:
    """wss://<grafana>:3443/api/live/ws upgrades (101) and frames flow both ways."""
    key = base64.b64encode(os.urandom(16)).decode()
    origin = f"https://{env.host}:{TLS_PORT}"
    request = (
        f"GET /api/live/ws HTTP/1.1\r\nHost: {env.host}:{TLS_PORT}\r\nOrigin: {origin}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    tls = env.tls()
    tls.set_alpn_protocols(["http/1.1"])  # browsers open WebSockets over HTTP/1.1 with nginx
    with connect(LOOPBACK4, env.remap.tls_port, tls, env.host) as sock:
        sock.sendall(request.encode())
        reader = BufferedSocket(sock)
        status_line, headers = parse_head(reader.read_until(b"\r\n\r\n"))
        seen = env.standin.last_request("/api/live/ws")
        assert status_line.split(" ")[1] == "101", (
            f"WebSocket upgrade answered `{status_line}`; the backend saw {seen.headers}"
        )
        accept = {k.lower(): v for k, v in headers}.get("sec-websocket-accept")
        assert accept == ws_accept(key), f"bad Sec-WebSocket-Accept {accept!r}"
        assert seen.header("Upgrade") == "websocket"
        assert seen.header("Host") == f"{env.host}:{TLS_PORT}"
        # Server -> client: the stand-in pushes first (Grafana Live pushes without being asked).
        assert reader.read_frame() == (0x1, STANDIN_GREETING)
        # Client -> server -> client, text and a binary frame with a 16-bit length.
        for opcode, payload in ((0x1, b"subscribe: grafana/dashboard/uid/x"), (0x2, os.urandom(300))):
            sock.sendall(ws_frame(opcode, payload, mask=True))
            assert reader.read_frame() == (opcode, payload)
            assert env.standin.ws_received[-1] == payload, "the backend did not receive the client's frame"
        sock.sendall(ws_frame(0x8, b"\x03\xe8", mask=True))
        assert reader.read_frame()[0] == 0x8


def assert_acme_webroot_served(env: Env, address: str = LOOPBACK4) -> None:
    """Port 80 serves /.well-known/acme-challenge/<token> from the webroot (200, no redirect)."""
    token = secrets.token_urlsafe(24)
    content = f"{token}.{secrets.token_urlsafe(32)}"
    (env.remap.webroot / ".well-known" / "acme-challenge" / token).write_text(content)
    for host in (env.host, "not-configured.example.net"):
        response = http_request(
            address,
            env.remap.http_port,
            f"/.well-known/acme-challenge/{token}",
            {"Host": host, "User-Agent": "LetsEncrypt-Pebble-VA (test)"},
        )
        location = response.header("Location")
        assert response.status == 200, (
            f"ACME challenge for Host {host} answered {response.status} (Location: {location})"
        )
        assert response.header("Location") is None
        assert response.body.decode() == content
    missing = http_request(
        address, env.remap.http_port, "/.well-known/acme-challenge/nope", {"Host": env.host}
    )
    assert missing.status == 404, f"an unknown challenge token answered {missing.status}, expected 404"


def assert_forwarded_to_grafana(env: Env) -> None:
    probe = secrets.token_hex(8)
    status, _, _ = env.https_get(f"/api/health?probe={probe}", {"X-Forwarded-For": "203.0.113.7"})
    assert status == 200
    seen = env.standin.last_request(f"/api/health?probe={probe}")
    assert seen.request_line.endswith("HTTP/1.1")
    assert seen.header("Host") == f"{env.host}:{TLS_PORT}", "Host must keep :3443 (Grafana Live origin check)"
    assert seen.header("X-Forwarded-For") == "203.0.113.7, 127.0.0.1"
    assert seen.header("X-Real-IP") == "127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "https"
    assert seen.header("Upgrade") is None


def legacy_client(version: ssl.TLSVersion) -> ssl.SSLContext:
    if not {"TLSv1": ssl.HAS_TLSv1, "TLSv1_1": ssl.HAS_TLSv1_1}[version.name]:
        missing(f"Python's OpenSSL ({ssl.OPENSSL_VERSION}) cannot send a {version.name} ClientHello")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are deprecated in Python
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = version
        context.maximum_version = version
    return context


def assert_legacy_tls_refused(env: Env, version: ssl.TLSVersion) -> None:
    try:
        connect(LOOPBACK4, env.remap.tls_port, legacy_client(version), env.host).close()
    except ssl.SSLError as refused:
        reason = refused.reason or str(refused)
    else:
        raise AssertionError(f"nginx completed a {version.name} handshake")
    assert reason == "TLSV1_ALERT_PROTOCOL_VERSION", (
        f"{version.name} failed with {reason}, not with the server's protocol_version alert"
    )


# --- The rendered files, live --------------------------------------------------------------------


def test_nginx_t_accepts_the_rendered_files(dev_plan: RenderedPlan, tmp_path: Path) -> None:  # noqa: F811
    """`nginx -t` on the rendered files with only the listen sockets and the certificate directory
    moved: nginx -t binds every listener (so port 80 needs root) and loads the certificates (runtime
    state). The upstream address, the webroot and every other directive are exactly as rendered."""
    nginx = require_tool("nginx")
    ca = make_test_ca(tmp_path / "ca", "nginx -t CA")
    live = tmp_path / "live"
    install_live_cert(live, ca, *ca.issue(tmp_path / "leaf", [dev_plan.grafana_host()]))
    remap = NginxRemap(free_port(), free_port(), free_port(), "unused:1", live, tmp_path / "unused")
    rendered = f"/etc/letsencrypt/live/{layout.GRAFANA_CERT_NAME}/"
    grafana = remap_listens(dev_plan.grafana_conf.read_text(), remap, "grafana.conf")
    assert grafana.count(rendered) == 3
    grafana = grafana.replace(rendered, f"{live}/")
    assert "/etc/letsencrypt" not in grafana
    redirector = remap_listens(dev_plan.redirector_conf.read_text(), remap, "redirector.conf")
    for name in ("conf.d", "user_conf.d", "temp", "logs"):
        (tmp_path / name).mkdir()
    (tmp_path / "conf.d" / "redirector.conf").write_text(redirector)
    (tmp_path / "user_conf.d" / "grafana.conf").write_text(grafana)
    conf = write_main_conf(
        tmp_path, [tmp_path / "conf.d" / "redirector.conf", tmp_path / "user_conf.d" / "grafana.conf"]
    )
    result = run([nginx, "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "logs" / "e.log")])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test is successful" in output
    assert not re.search(r"\[(warn|emerg|alert|crit)\]", output), output


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"]
)
def test_modern_tls_handshake_verifies(env: Env, version: ssl.TLSVersion) -> None:
    context = env.tls()
    context.minimum_version = context.maximum_version = version
    with connect(LOOPBACK4, env.remap.tls_port, context, env.host) as sock:
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.version() == {"TLSv1_3": "TLSv1.3", "TLSv1_2": "TLSv1.2"}[version.name]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["tls1.0", "tls1.1"])
def test_legacy_tls_refused_by_the_server(env: Env, version: ssl.TLSVersion) -> None:
    assert_legacy_tls_refused(env, version)


def test_http2_offered_by_alpn(env: Env) -> None:
    context = env.tls()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with connect(LOOPBACK4, env.remap.tls_port, context, env.host) as sock:
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.selected_alpn_protocol() == "h2"


def test_hsts_sent(env: Env) -> None:
    status, headers, _ = env.https_get("/login")
    assert status == 200
    hsts = headers.get("strict-transport-security", "")
    match = re.search(r"max-age=(\d+)", hsts)
    assert match and int(match.group(1)) >= 31536000, f"HSTS header: {hsts!r}"
    assert headers.get("x-content-type-options") == "nosniff"


def test_get_reaches_grafana_with_host_port_and_forwarded_headers(env: Env) -> None:
    assert_forwarded_to_grafana(env)


def test_websocket_upgrade_and_frames_echo_both_ways(env: Env) -> None:
    assert_websocket_echo(env)


@pytest.mark.parametrize("address", [LOOPBACK4, LOOPBACK6], ids=["ipv4", "ipv6"])
def test_port80_serves_acme_webroot_without_redirect(env: Env, address: str) -> None:
    if address == LOOPBACK6:
        require_ipv6_loopback()
    assert_acme_webroot_served(env, address)


@pytest.mark.parametrize("address", [LOOPBACK4, LOOPBACK6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize(
    "target", ["/", "/d/torrust-tracker-overview?orgId=1&refresh=5s", "/.well-known/other"]
)
def test_port80_redirects_everything_else_to_3443(env: Env, address: str, target: str) -> None:
    if address == LOOPBACK6:
        require_ipv6_loopback()
    response = http_request(address, env.remap.http_port, target, {"Host": env.host})
    assert response.status in (301, 302, 307, 308)
    assert response.header("Location") == f"https://{env.host}:{TLS_PORT}{target}"


def test_port80_other_names_redirect_to_https(env: Env) -> None:
    response = http_request(LOOPBACK4, env.remap.http_port, "/announce?x=1", {"Host": "http1.example.com"})
    assert response.status in (301, 302, 307, 308)
    assert response.header("Location") == "https://http1.example.com/announce?x=1"


@pytest.mark.parametrize("target", ["/", "/d/abc?orgId=1"])
def test_internal_redirect_listener_points_at_3443(env: Env, target: str) -> None:
    """What Pingoo forwards https://<grafana>/ to: a redirect to :3443, whatever Host it passes."""
    for host in (env.host, f"{env.host}:443"):
        response = http_request(LOOPBACK4, env.remap.redirect_port, target, {"Host": host})
        assert response.status in (301, 302, 307, 308)
        assert response.header("Location") == f"https://{env.host}:{TLS_PORT}{target}"
    health = http_request(
        LOOPBACK4, env.remap.redirect_port, "/.well-known/torrust-edge-health", {"Host": "x"}
    )
    assert (health.status, health.body) == (200, b"ok\n")


def test_remap_fails_loudly_when_a_directive_is_missing(dev_plan: RenderedPlan, tmp_path: Path) -> None:  # noqa: F811
    remap = NginxRemap(1, 2, 3, "127.0.0.1:4", tmp_path, tmp_path)
    grafana = dev_plan.grafana_conf.read_text()
    redirector = dev_plan.redirector_conf.read_text()
    remap_grafana(grafana, remap)
    remap_redirector(redirector, remap)
    for broken in (
        grafana.replace(f"{layout.GRAFANA_BACKEND_IP}:{layout.GRAFANA_PORT}", "grafana:3000"),
        grafana.replace("ssl_trusted_certificate", "# ssl_trusted_certificate"),
        grafana.replace(f"listen {TLS_PORT} ssl", "listen 4443 ssl"),
    ):
        with pytest.raises(RemapError):
            remap_grafana(broken, remap)
    with pytest.raises(RemapError):
        remap_redirector(redirector.replace("listen 80;", "listen 0.0.0.0:80;"), remap)


# --- Mutations: a broken template must make the same helpers fail --------------------------------


@pytest.fixture
def plan_files(dev_plan: RenderedPlan) -> NginxFiles:  # noqa: F811
    require_tool("nginx")
    return NginxFiles.from_plan(dev_plan)


def test_mutation_upgrade_header_dropped(
    plan_files: NginxFiles,
    tmp_path: Path,
    ca: ScratchCA,
    standin: StandInGrafana,
    dev_plan: RenderedPlan,  # noqa: F811
) -> None:
    plan_files.grafana = mutated(plan_files.grafana, "proxy_set_header Upgrade $http_upgrade;", "")
    with (
        serve(plan_files, tmp_path, ca, dev_plan.grafana_host(), standin) as broken,
        pytest.raises(AssertionError, match=r"upgrade answered `HTTP/1.1 400"),
    ):
        assert_websocket_echo(broken)


def test_mutation_acme_location_behind_redirect(
    plan_files: NginxFiles,
    tmp_path: Path,
    ca: ScratchCA,
    standin: StandInGrafana,
    dev_plan: RenderedPlan,  # noqa: F811
) -> None:
    host = dev_plan.grafana_host()
    plan_files.redirector = mutated(
        plan_files.redirector,
        "location ^~ /.well-known/acme-challenge/ {",
        f"location ^~ /.well-known/acme-challenge/ {{\n        return 308 https://{host}:{TLS_PORT}$request_uri;",
    )
    with (
        serve(plan_files, tmp_path, ca, host, standin) as broken,
        pytest.raises(AssertionError, match=r"answered 308 \(Location: https://"),
    ):
        assert_acme_webroot_served(broken)


def test_mutation_host_without_port(
    plan_files: NginxFiles,
    tmp_path: Path,
    ca: ScratchCA,
    standin: StandInGrafana,
    dev_plan: RenderedPlan,  # noqa: F811
) -> None:
    plan_files.grafana = mutated(
        plan_files.grafana, "proxy_set_header Host $http_host;", "proxy_set_header Host $host;"
    )
    with (
        serve(plan_files, tmp_path, ca, dev_plan.grafana_host(), standin) as broken,
        pytest.raises(AssertionError, match="Host must keep :3443"),
    ):
        assert_forwarded_to_grafana(broken)


def test_mutation_legacy_tls_enabled(
    plan_files: NginxFiles,
    tmp_path: Path,
    ca: ScratchCA,
    standin: StandInGrafana,
    dev_plan: RenderedPlan,  # noqa: F811
) -> None:
    """Positive control for the refusal test: our legacy client does complete a TLS 1.1 handshake
    when nginx allows it, so the refusal asserted above really comes from the rendered config."""
    grafana = mutated(
        plan_files.grafana, "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;"
    )
    plan_files.grafana = re.sub(r"ssl_ciphers [^;]+;", "ssl_ciphers DEFAULT:@SECLEVEL=0;", grafana)
    with serve(plan_files, tmp_path, ca, dev_plan.grafana_host(), standin) as broken:
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            with pytest.raises(AssertionError, match=f"completed a {version.name} handshake"):
                assert_legacy_tls_refused(broken, version)
