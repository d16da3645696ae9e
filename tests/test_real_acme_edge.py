"""ACME for the nginx edge, for real: pebble issues a certificate for every name of the nginx-example
plan through certbot's webroot and the rendered port-80 server, each certificate named and scoped
the way jonasal/nginx-certbot derives it from the rendered files; the rendered 443 servers then serve
them, each verified against pebble's root only. Loopback only (research/nginx_certbot.md §5.3;
tests/test_real_acme.py does the same for the hybrid's Grafana certificate).

The nginx starts as the image does before its first issuance: the site files, whose certificates do
not exist yet, are disabled (src/scripts/util.sh auto_enable_configs); certbot runs with the
arguments of src/scripts/run_certbot.sh; then the sites are enabled and nginx reloaded, as
run_certbot.sh ends.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core import layout
from tests.nginx_edge import EdgeFiles, EdgeRemap, NginxEdge, cert_names
from tests.realtools import (
    LOOPBACK4,
    LOOPBACK6,
    Proc,
    RenderedPlan,
    ScratchCA,
    StandInGrafana,
    client_context,
    free_port,
    http_request,
    make_test_ca,
    nginx_plan,  # noqa: F401  (session fixture: the plan is rendered once)
    require_ipv6_loopback,
    require_tool,
    run,
    wait_until,
)
from tests.test_real_acme import dns_a_lookup, leaf_der

CERTBOT_TIMEOUT = 120.0


def container_env(plan: RenderedPlan) -> dict[str, str]:
    """The nginx-certbot container's environment, as plan.json records it."""
    record = json.loads((plan.root / "plan.json").read_text())
    [container] = [
        r for r in record["resources"] if r["name"] == layout.NGINX and r["type"].endswith("Container")
    ]
    return dict(entry.split("=", 1) for entry in container["inputs"]["envs"])


@dataclass
class Issued:
    work: Path
    files: EdgeFiles
    nginx: NginxEdge
    pebble_ca: ScratchCA
    directory: str
    management_port: int
    certbot: str
    env: dict[str, str]
    outputs: dict[str, str]  # certificate name -> certbot's output

    @property
    def live(self) -> Path:
        return self.work / "letsencrypt" / "live"

    def certbot_certonly(self, cert_name: str, domains: list[str]) -> str:
        """certbot as jonasal/nginx-certbot's run_certbot.sh calls it (get_certificate, webroot)."""
        env = self.env
        key_type = "ecdsa" if env.get("USE_ECDSA", "1") != "0" else "rsa"
        argv = [
            self.certbot, "certonly", "--agree-tos", "--keep", "-n", "--text",
            "--preferred-challenges", "http-01", "--authenticator", "webroot",
            f"--webroot-path={self.nginx.remap.webroot}",
            "--email", env["CERTBOT_EMAIL"], "--server", self.directory,
            "--rsa-key-size", "2048", "--elliptic-curve", env.get("ELLIPTIC_CURVE", "secp256r1"),
            "--key-type", key_type, "--cert-name", cert_name,
            *(arg for domain in domains for arg in ("-d", domain)),
            "--config-dir", str(self.work / "letsencrypt"), "--work-dir", str(self.work / "certbot-work"),
            "--logs-dir", str(self.work / "certbot-logs"),
        ]  # fmt: skip
        result = run(
            argv, timeout=CERTBOT_TIMEOUT, env=dict(os.environ, REQUESTS_CA_BUNDLE=str(self.pebble_ca.cert))
        )
        output = result.stdout + result.stderr
        if result.returncode != 0:
            log = self.work / "certbot-logs" / "letsencrypt.log"
            raise AssertionError(
                f"certbot for {cert_name} failed ({result.returncode}):\n{output}\n"
                f"{log.read_text()[-3000:] if log.exists() else ''}\n--- access.log ---\n"
                f"{self.nginx.access_log_text()}"
            )
        return output

    def pebble_root(self) -> str:
        response = http_request(
            LOOPBACK4, self.management_port, "/roots/0", {"Host": "localhost"},
            tls=client_context(self.pebble_ca.cert), server_hostname="localhost",
        )  # fmt: skip
        assert response.status == 200, response
        return response.body.decode()

    def validations(self, host: str) -> int:
        """Challenge fetches by pebble's VA for `host` that nginx answered 200 (the edge's log format:
        `$remote_addr [$time_local] $host "$request_method $uri ..." $status ...`)."""
        return sum(
            1
            for line in self.nginx.access_log_text().splitlines()
            if f"] {host} " in line and "/.well-known/acme-challenge/" in line and '" 200 ' in line
        )

    def served(self, host: str, address: str = LOOPBACK4) -> Any:
        """The verified peer certificate nginx serves for `host` (trusting only pebble's root)."""
        context = client_context(cadata=self.pebble_root())
        with (
            socket.create_connection((address, self.nginx.remap.tls_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host) as sock,
        ):
            return sock.getpeercert(), sock.getpeercert(binary_form=True)


@pytest.fixture(scope="module")
def issued(nginx_plan: RenderedPlan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issued]:  # noqa: F811
    tools = {n: require_tool(n) for n in ("nginx", "openssl", "pebble", "pebble-challtestsrv", "certbot")}
    work = tmp_path_factory.mktemp("acme-edge")
    logs = work / "logs"
    logs.mkdir()
    files = EdgeFiles.from_plan(nginx_plan)
    processes: list[Proc] = []
    standin = StandInGrafana().start()
    nginx: NginxEdge | None = None
    try:
        webroot = work / "webroot"
        webroot.mkdir()
        remap = EdgeRemap(
            http_port=free_port(),
            tls_port=free_port(),
            health_port=free_port(),
            # Every backend is the stand-in here: this module is about certificates.
            upstreams={
                f"{layout.TRACKER_BACKEND_IP}:{layout.TRACKER_API_PORT}": standin.address,
                f"{layout.TRACKER_BACKEND_IP}:{layout.http_tracker_port(0)}": standin.address,
                f"{layout.GRAFANA_BACKEND_IP}:{layout.GRAFANA_PORT}": standin.address,
            },
            live_dir=work / "letsencrypt" / "live",
            webroot=webroot,
        )
        nginx = NginxEdge(work / "nginx", files, remap, sites_enabled=False).start()

        dns_port, challtest_mgmt = free_port(udp=True), free_port()
        challtest = Proc(
            "pebble-challtestsrv",
            [tools["pebble-challtestsrv"], "-dns01", f"{LOOPBACK4}:{dns_port}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", f"{LOOPBACK4}:{challtest_mgmt}",
             "-defaultIPv4", LOOPBACK4, "-defaultIPv6", ""],
            logs,
        )  # fmt: skip
        processes.append(challtest)
        challtest.wait_for_port(LOOPBACK4, challtest_mgmt)
        some_name = next(iter(cert_names(files).values()))[0]
        wait_until(
            lambda: dns_a_lookup((LOOPBACK4, dns_port), some_name) == [LOOPBACK4], 10, "challtestsrv", 0.2
        )
        pebble_ca = make_test_ca(work / "pebble-ca", "pebble API test CA")
        api_cert, api_key = pebble_ca.issue(work / "pebble-api", ["localhost"], (LOOPBACK4,))
        api_port, management_port = free_port(), free_port()
        config = work / "pebble-config.json"
        config.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"{LOOPBACK4}:{api_port}",
                        "managementListenAddress": f"{LOOPBACK4}:{management_port}",
                        "certificate": str(api_cert),
                        "privateKey": str(api_key),
                        "httpPort": remap.http_port,
                        "tlsPort": free_port(),
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                }
            )
        )
        pebble = Proc(
            "pebble",
            [tools["pebble"], "-config", str(config), "-dnsserver", f"{LOOPBACK4}:{dns_port}"],
            logs,
            dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0"),
        )
        processes.append(pebble)
        pebble.wait_for_port(LOOPBACK4, api_port)
        pebble.wait_for_port(LOOPBACK4, management_port)
        result = Issued(
            work, files, nginx, pebble_ca, f"https://{LOOPBACK4}:{api_port}/dir", management_port,
            tools["certbot"], container_env(nginx_plan), {},
        )  # fmt: skip
        started = time.monotonic()
        for cert_name, domains in cert_names(files).items():
            one = time.monotonic()
            result.outputs[cert_name] = result.certbot_certonly(cert_name, domains)
            print(f"certbot issued {cert_name} through port 80 in {time.monotonic() - one:.1f} s")
        nginx.enable_sites()
        print(
            f"all {len(result.outputs)} certificates issued and nginx reloaded in "
            f"{time.monotonic() - started:.1f} s"
        )
        yield result
    finally:
        for process in reversed(processes):
            process.stop()
        if nginx is not None:
            nginx.stop()
        standin.stop()


def test_every_name_gets_its_certificate_over_http01_through_the_rendered_port80(issued: Issued) -> None:
    names = cert_names(issued.files)
    assert len(names) == 3, names
    for cert_name, domains in names.items():
        assert "Successfully received certificate" in issued.outputs[cert_name], issued.outputs[cert_name]
        for name in ("fullchain.pem", "privkey.pem", "chain.pem"):
            assert (issued.live / cert_name / name).is_file(), f"no live/{cert_name}/{name}"
        for domain in domains:
            assert issued.validations(domain) >= 1, (
                f"pebble's VA never fetched {domain}'s challenge from nginx"
            )


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_each_name_is_served_its_own_certificate_on_443(issued: Issued, family: str) -> None:
    if family == "ipv6":
        require_ipv6_loopback()
    address = LOOPBACK6 if family == "ipv6" else LOOPBACK4
    for cert_name, domains in cert_names(issued.files).items():
        peer, der = issued.served(domains[0], address)
        assert der == leaf_der(issued.live / cert_name / "cert.pem"), (
            f"{domains[0]} is served another certificate"
        )
        assert {value for kind, value in peer["subjectAltName"] if kind == "DNS"} == set(domains)


def test_a_renamed_name_gets_a_new_certificate_under_the_same_name(issued: Issued) -> None:
    """domains.httpTrackers[0] changed: the same certificate name (http-tracker-1) with another domain.
    certbot (run with --keep, as the image does) must issue for the new domain, or the renamed tracker
    would be left without a certificate."""
    [(cert_name, _domains)] = [
        (n, d) for n, d in cert_names(issued.files).items() if n.startswith("http-tracker-")
    ]
    renamed = "http9.example.com"
    before = issued.validations(renamed)
    output = issued.certbot_certonly(cert_name, [renamed])
    assert "Successfully received certificate" in output, output
    sans = run(
        [require_tool("openssl"), "x509", "-noout", "-ext", "subjectAltName", "-in",
         str(issued.live / cert_name / "cert.pem")]
    ).stdout  # fmt: skip
    assert f"DNS:{renamed}" in sans, sans
    assert issued.validations(renamed) > before, "the new name was not validated through port 80"
