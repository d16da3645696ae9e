"""`make doctor`, for real on loopback: the dev plan's outputs against a live stand-in deployment.

- DNS: pebble-challtestsrv serves the plan's records (addresses moved to loopback).
- 443 (Pingoo's role): a real nginx terminating TLS 1.3 only, one server per Pingoo name with a
  certificate from a scratch CA (openssl), proxying the API and HTTP tracker names to the real
  tracker with X-Forwarded-For (as Pingoo does; the tracker runs with on_reverse_proxy = true) and
  redirecting the Grafana name to :3443, as the rendered pingoo.yml does.
- 80 and 3443: a real nginx with the dev plan's rendered redirector.conf and grafana.conf (remapped
  ports), proxying to a WebSocket-capable Grafana stand-in (tests/realtools.py StandInGrafana).
- The tracker: the real torrust-tracker 3.0.0 binary with the dev plan's rendered tracker.toml
  (ports and database path moved), the admin token from the same env var the container gets.

Then one injected fault per check class, each failing with a message that says what is wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core import layout
from services.tracker.tracker import ADMIN_TOKEN_ENV
from tests.realtools import (
    LOOPBACK4,
    LOOPBACK6,
    REPO_ROOT,
    ChallTestSrv,
    Nginx,
    NginxFiles,
    NginxRemap,
    Proc,
    RenderedPlan,
    ScratchCA,
    StandInGrafana,
    dev_plan,  # noqa: F401  (session fixture)
    free_port,
    install_live_cert,
    make_test_ca,
    missing,
    require_ipv6_loopback,
    require_tool,
    run,
    write_main_conf,
)
from tools.doctor import FAIL, PASS, bdecode

CACHE = Path(os.environ.get("TORRUST_CACHE", "/var/cache/torrust-hybrid-tls"))
TRACKER_BIN = CACHE / "tracker-3.0.0" / "bin" / "torrust-tracker"
TOKEN = "doctor-test-admin-token-0123456789"
CA_NAME = "torrust-hybrid-tls doctor test CA"
LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Grafana</title></head><body></body></html>"


def require_tracker() -> Path:
    if not TRACKER_BIN.is_file():
        missing(f"the torrust-tracker 3.0.0 binary is not at {TRACKER_BIN} (cargo install, see .ci/run)")
    return TRACKER_BIN


@dataclass
class Tracker:
    proc: Proc
    api: int
    http: int
    udp: int


def start_tracker(plan: RenderedPlan, workdir: Path) -> Tracker:
    binary = require_tracker()
    api, http, udp, health = free_port(), free_port(), free_port(udp=True), free_port()
    text = plan.tracker_toml.read_text()
    replacements = {
        f'"[::]:{6969}"': f'"[::]:{udp}"',
        f'"0.0.0.0:{layout.TRACKER_HTTP_BASE_PORT}"': f'"{LOOPBACK4}:{http}"',
        f'"0.0.0.0:{layout.TRACKER_API_PORT}"': f'"{LOOPBACK4}:{api}"',
        '"127.0.0.1:1313"': f'"{LOOPBACK4}:{health}"',
        layout.TRACKER_DATABASE_PATH: str(workdir / "tracker.db"),
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"rendered tracker.toml has no single {old}"
        text = text.replace(old, new)
    config = workdir / "tracker.toml"
    config.write_text(text)
    env = dict(os.environ, TORRUST_TRACKER_CONFIG_TOML_PATH=str(config), **{ADMIN_TOKEN_ENV: TOKEN})
    proc = Proc("tracker", [str(binary)], workdir, env=env, cwd=workdir)
    proc.wait_for_port(LOOPBACK4, api, timeout=30)
    proc.wait_for_port(LOOPBACK4, http, timeout=30)
    return Tracker(proc, api, http, udp)


def edge_conf(names: dict[str, tuple[Path, Path]], upstreams: dict[str, str], grafana: str, port: int) -> str:
    """Pingoo's role on 443: TLS 1.3 only, route by name (services/edge/templates/pingoo/pingoo.yml.j2)."""
    servers = []
    for name, (cert, key) in names.items():
        if name == grafana:
            action = f"return 308 https://{grafana}:{layout.GRAFANA_TLS_PORT}$request_uri;"
        else:
            action = (
                f"proxy_pass http://{upstreams[name]};\n"
                "        proxy_set_header Host $host;\n"
                "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
            )
        servers.append(
            f"server {{\n    listen {LOOPBACK4}:{port} ssl;\n    server_name {name};\n"
            f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
            "    ssl_protocols TLSv1.3;\n"
            f"    location / {{\n        {action}\n    }}\n}}\n"
        )
    return "\n".join(servers)


class Edge:
    def __init__(self, workdir: Path, conf: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("logs", "temp"):
            (workdir / sub).mkdir(exist_ok=True)
        site = workdir / "edge.conf"
        site.write_text(conf)
        main = write_main_conf(workdir, [site])
        self.port = int(conf.split(f"{LOOPBACK4}:", 1)[1].split(" ", 1)[0])
        nginx = require_tool("nginx")
        checked = run([nginx, "-p", f"{workdir}/", "-c", str(main), "-t"], timeout=30)
        assert checked.returncode == 0, checked.stderr
        self.proc = Proc("edge-nginx", [nginx, "-p", f"{workdir}/", "-c", str(main)], workdir / "logs")
        self.proc.wait_for_port(LOOPBACK4, self.port)

    def stop(self) -> None:
        self.proc.stop()


@dataclass
class Deployment:
    plan: RenderedPlan
    ca: ScratchCA
    dns: ChallTestSrv
    tracker: Tracker
    standin: StandInGrafana
    nginx: Nginx
    edge: Edge
    outputs: Path
    records: list[dict[str, str]]
    workdir: Path

    def doctor(self, *extra: str, ports: dict[int, int] | None = None) -> tuple[int, dict[str, Any]]:
        names = {r["name"] for r in self.records}
        port_map = {
            layout.HTTPS_PORT: self.edge.port,
            layout.HTTP_PORT: self.nginx.remap.http_port,
            layout.GRAFANA_TLS_PORT: self.nginx.remap.tls_port,
            6969: self.tracker.udp,
            **(ports or {}),
        }
        argv = [
            sys.executable, "-m", "tools.doctor", "--outputs", str(self.outputs), "--json",
            "--resolver", LOOPBACK4, "--resolver-port", str(self.dns.dns_port),
            "--ca-bundle", str(self.ca.cert), "--issuer", CA_NAME, "--timeout", "5", "--min-days", "1",
        ]  # fmt: skip
        for name in sorted(names):
            argv += ["--resolve", f"{name}={LOOPBACK4}", "--resolve", f"{name}={LOOPBACK6}"]
        for old, new in port_map.items():
            argv += ["--port", f"{old}={new}"]
        result = subprocess.run(
            [*argv, *extra], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.stdout, result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return result.returncode, report


def loopback_outputs(plan: RenderedPlan) -> tuple[dict[str, Any], list[dict[str, str]]]:
    outputs: dict[str, Any] = json.loads((plan.root / "plan.json").read_text())["outputs"]
    records = []
    for record in outputs["dnsRecords"]:
        value = {"A": LOOPBACK4, "AAAA": LOOPBACK6}.get(record["type"], record["value"])
        records.append(record | {"value": value})
    outputs = outputs | {"dnsRecords": records, "trackerAdminToken": TOKEN}
    return outputs, records


@pytest.fixture(scope="module")
def deployment(
    dev_plan: RenderedPlan,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    require_tool("nginx")
    require_tool("openssl")
    require_tracker()
    require_ipv6_loopback()
    workdir = tmp_path_factory.mktemp("doctor")
    outputs, records = loopback_outputs(dev_plan)
    outputs_file = workdir / "outputs.json"
    outputs_file.write_text(json.dumps(outputs))
    grafana = dev_plan.grafana_host()
    names = [outputs["endpoints"]["trackerApi"]["base"].split("/")[2]]
    names += [url.split("/")[2] for url in outputs["endpoints"]["httpTrackers"]]
    names.append(grafana)
    ca = make_test_ca(workdir / "ca", CA_NAME)
    started: list[Any] = []
    try:
        dns = ChallTestSrv(workdir)
        started.append(dns)
        for record in records:
            dns.set_record(record["name"], record["type"], record["value"])
        tracker = start_tracker(dev_plan, workdir)
        started.append(tracker.proc)
        standin = StandInGrafana(login_page=LOGIN_PAGE).start()
        started.append(standin)
        live_dir = workdir / "letsencrypt" / "live" / layout.GRAFANA_CERT_NAME
        cert, key = ca.issue(workdir / "grafana-leaf", [grafana])
        install_live_cert(live_dir, ca, cert, key)
        webroot = workdir / "webroot"
        (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
        remap = NginxRemap(free_port(), free_port(), free_port(), standin.address, live_dir, webroot)
        nginx = Nginx(workdir / "nginx", NginxFiles.from_plan(dev_plan), remap)
        nginx.start()
        started.append(nginx)
        leaves = {name: ca.issue(workdir / f"leaf-{name}", [name]) for name in names}
        upstreams = {names[0]: f"{LOOPBACK4}:{tracker.api}"}
        upstreams |= {name: f"{LOOPBACK4}:{tracker.http}" for name in names[1:-1]}
        edge = Edge(workdir / "edge", edge_conf(leaves, upstreams, grafana, free_port()))
        started.append(edge)
        yield Deployment(dev_plan, ca, dns, tracker, standin, nginx, edge, outputs_file, records, workdir)
    finally:
        for thing in reversed(started):
            thing.stop()


def by_check(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["check"], r["target"]): r for r in report["results"]}


def failures(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(r["check"], r["target"]): r["detail"] for r in report["results"] if r["status"] == FAIL}


def test_doctor_passes_against_the_live_loopback_deployment(deployment: Deployment) -> None:
    code, report = deployment.doctor()
    assert failures(report) == {} and code == 0 and report["ok"] is True
    checks = by_check(report)
    kinds = {check for check, _ in checks}
    assert {"dns A", "dns AAAA", "dns TXT", "dns CAA", "tls 443", "pq group", "api health", "api stats",
            "http tracker", "udp ipv4", "udp ipv6", "grafana 3443", "port 80"} <= kinds  # fmt: skip
    assert checks[("tls 443", "api.example.com")]["detail"].startswith(f"TLSv1.3, issuer 'CN={CA_NAME}'")
    assert "days left" in checks[("tls 443", "http1.example.com")]["detail"]
    assert checks[("api stats", "api.example.com")]["detail"].startswith("200 with the token, ")
    assert checks[("http tracker", "http1.example.com")]["detail"] == "announce interval 300; scrape ok"
    assert "via ::1" in checks[("udp ipv6", f"udp1.example.com:{6969}")]["detail"]
    assert "WebSocket 101" in checks[("grafana 3443", "grafana.example.com")]["detail"]
    assert "-> https://grafana.example.com:3443/" in checks[("port 80", "grafana.example.com")]["detail"]
    assert "-> https://api.example.com/" in checks[("port 80", "api.example.com")]["detail"]
    # OpenSSL 3.0 (Debian 12) cannot offer X25519MLKEM768: reported, not hidden, not failed.
    assert checks[("pq group", "api.example.com")]["status"] in ("info", PASS)


def test_table_output_and_exit_code(deployment: Deployment) -> None:
    code, _ = deployment.doctor()
    assert code == 0
    argv = [sys.executable, "-m", "tools.doctor", "--outputs", str(deployment.outputs), "--timeout", "2",
            "--resolver", LOOPBACK4, "--resolver-port", str(deployment.dns.dns_port),
            "--port", "443=1", "--port", "80=1", "--port", "3443=1", "--port", "6969=1"]  # fmt: skip
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "FAILED" in result.stdout.splitlines()[-1] and "dns A" in result.stdout


def test_wrong_dns_answer_fails(deployment: Deployment) -> None:
    dns = deployment.dns
    dns.clear("api.example.com", "A")
    dns.set_record("api.example.com", "A", "127.0.0.2")
    dns.set_record("grafana.example.com", "AAAA", "2001:db8::99")
    try:
        code, report = deployment.doctor()
    finally:
        dns.clear("api.example.com", "A")
        dns.clear("grafana.example.com", "AAAA")
        dns.set_record("api.example.com", "A", LOOPBACK4)
    found = failures(report)
    assert code == 1
    assert found[("dns A", "api.example.com")] == "published 127.0.0.2; want 127.0.0.1"
    assert found[("dns AAAA", "grafana.example.com")].startswith("AAAA 2001:db8::99 is published but none")
    assert set(found) == {("dns A", "api.example.com"), ("dns AAAA", "grafana.example.com")}


def test_self_signed_certificate_fails(deployment: Deployment) -> None:
    workdir = deployment.workdir / "self-signed"
    workdir.mkdir()
    openssl = require_tool("openssl")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=api.example.com",
         "-addext", "subjectAltName=DNS:api.example.com"], check=True)  # fmt: skip
    leaves = {"api.example.com": (cert, key)}
    edge = Edge(workdir / "edge", edge_conf(leaves, {"api.example.com": "127.0.0.1:9"}, "none", free_port()))
    try:
        code, report = deployment.doctor(ports={layout.HTTPS_PORT: edge.port})
    finally:
        edge.stop()
    found = failures(report)
    assert code == 1
    assert (
        "certificate not trusted for api.example.com: self-signed certificate"
        in found[("tls 443", "api.example.com")]
    )


def test_closed_port_fails(deployment: Deployment) -> None:
    closed = free_port()
    code, report = deployment.doctor(ports={layout.GRAFANA_TLS_PORT: closed})
    found = failures(report)
    assert code == 1 and set(found) == {("grafana 3443", "grafana.example.com")}
    assert found[("grafana 3443", "grafana.example.com")].startswith(
        "cannot connect to grafana.example.com (127.0.0.1) port 3443:"
    )
    assert "Connection refused" in found[("grafana 3443", "grafana.example.com")]


def test_nginx_without_the_upgrade_header_fails(deployment: Deployment) -> None:
    files = NginxFiles.from_plan(deployment.plan)
    line = "proxy_set_header Upgrade $http_upgrade;"
    assert files.grafana.count(line) == 1
    broken = NginxFiles(files.redirector, files.grafana.replace(line, ""))
    old = deployment.nginx.remap
    remap = NginxRemap(free_port(), free_port(), free_port(), old.upstream, old.live_dir, old.webroot)
    nginx = Nginx(deployment.workdir / "nginx-no-upgrade", broken, remap)
    nginx.start()
    try:
        code, report = deployment.doctor(ports={layout.GRAFANA_TLS_PORT: remap.tls_port})
    finally:
        nginx.stop()
    found = failures(report)
    assert code == 1 and set(found) == {("grafana 3443", "grafana.example.com")}
    assert found[("grafana 3443", "grafana.example.com")].startswith(
        "WebSocket upgrade to /api/live/ws answered 400, want 101"
    )


def test_bdecode() -> None:
    assert bdecode(b"d8:intervali300e5:peers0:e") == {b"interval": 300, b"peers": b""}
    assert bdecode(b"li1ei-2ee") == [1, -2]
