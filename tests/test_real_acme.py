"""ACME, for real: pebble issues the Grafana certificate through certbot's webroot and the dev plan's
rendered port-80 server; the rendered 3443 server then serves it; a forced renewal runs the reload
hook and nginx serves the new certificate. Everything on loopback (research/nginx_certbot.md §5.3).

- pebble-challtestsrv is the DNS server pebble's VA uses: every A query answers 127.0.0.1 and AAAA
  answers nothing (`-defaultIPv6 ""`; pebble dials AAAA first), so the Grafana name resolves to the
  loopback nginx. pebble's `httpPort` is the remapped port-80 listener.
- pebble's own API listener gets a throwaway CA + localhost certificate (the Debian package ships
  none); certbot trusts it through REQUESTS_CA_BUNDLE. The client that checks nginx trusts ONLY
  pebble's issuing root (management endpoint /roots/0), which pebble regenerates every launch.
- PEBBLE_VA_NOSLEEP=1 and PEBBLE_WFE_NONCEREJECT=0 keep it fast and deterministic. PEBBLE_AUTHZREUSE=0
  is set for pebbles that read it, but Debian 12's pebble 2.4.0 does not (no such string in
  /usr/bin/pebble) and reuses a still-valid authorization for about half of the orders, so the renewal
  test renews again (bounded) until one renewal is validated through nginx's port 80.
- nginx starts with a scratch certificate under certbot's live/grafana/ (the rendered path), which is
  deleted before `certbot certonly` (certbot refuses an existing live/ directory) — the same dummy-
  certificate bootstrap jonasal/nginx-certbot's predecessors use.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core import layout
from tests.realtools import (
    LOOPBACK4,
    Nginx,
    NginxFiles,
    NginxRemap,
    Proc,
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
    require_tool,
    run,
    wait_until,
)

CERTBOT_TIMEOUT = 90.0


def dns_a_lookup(server: tuple[str, int], name: str, timeout: float = 2.0) -> list[str]:
    """A records for `name` from a DNS server over UDP (a minimal RFC 1035 client)."""
    query_id = int.from_bytes(os.urandom(2), "big")
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"
    packet = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, server)
        reply, _ = sock.recvfrom(4096)
    answer_id, _, _, answers, _, _ = struct.unpack("!HHHHHH", reply[:12])
    assert answer_id == query_id
    offset = 12 + len(question) + 4
    addresses = []
    for _ in range(answers):
        while reply[offset] not in (0,) and reply[offset] & 0xC0 != 0xC0:  # an uncompressed name
            offset += reply[offset] + 1
        offset += 2 if reply[offset] & 0xC0 == 0xC0 else 1
        rtype, _, _, length = struct.unpack("!HHIH", reply[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(reply[offset : offset + 4]))
        offset += length
    return addresses


def served_certificate(port: int, host: str) -> bytes:
    """The DER certificate nginx presents for `host` (no verification: only what is served)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with connect(LOOPBACK4, port, context, host) as sock:
        assert isinstance(sock, ssl.SSLSocket)
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def leaf_der(pem_file: Path) -> bytes:
    """The first certificate of a PEM file, as DER."""
    text = pem_file.read_text()
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(text[:end])


@dataclass
class Acme:
    work: Path
    host: str
    nginx: Nginx
    standin: StandInGrafana
    pebble_ca: ScratchCA
    directory: str
    management_port: int
    certbot: str
    hook_marker: Path

    @property
    def config_dir(self) -> Path:
        return self.work / "letsencrypt"

    @property
    def live_dir(self) -> Path:
        return self.config_dir / "live" / layout.GRAFANA_CERT_NAME

    def issue_through_webroot(self) -> str:
        """certbot's webroot issuance of the Grafana certificate through the rendered port-80 server."""
        return self.certbot_run(
            "certonly",
            "--webroot",
            "-w",
            str(self.nginx.remap.webroot),
            "-d",
            self.host,
            "--cert-name",
            layout.GRAFANA_CERT_NAME,
            "--agree-tos",
            "--register-unsafely-without-email",
        )

    def certbot_run(self, *args: str) -> str:
        env = dict(os.environ, REQUESTS_CA_BUNDLE=str(self.pebble_ca.cert))
        argv = [
            self.certbot,
            *args,
            "--server",
            self.directory,
            "--config-dir",
            str(self.config_dir),
            "--work-dir",
            str(self.work / "certbot-work"),
            "--logs-dir",
            str(self.work / "certbot-logs"),
            "--non-interactive",
        ]
        result = run(argv, timeout=CERTBOT_TIMEOUT, env=env)
        output = result.stdout + result.stderr
        if result.returncode != 0:
            log = self.work / "certbot-logs" / "letsencrypt.log"
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise AssertionError(
                f"certbot {args[0]} failed ({result.returncode}):\n{output}\n--- certbot log ---\n{tail}\n"
                f"--- nginx access.log ---\n{self.access_log()}"
            )
        return output

    def access_log(self) -> str:
        return self.nginx.access_log.read_text() if self.nginx.access_log.exists() else ""

    def validations(self) -> int:
        """Challenge fetches by pebble's VA that nginx answered 200."""
        return sum(
            1
            for line in self.access_log().splitlines()
            if "/.well-known/acme-challenge/" in line and '" 200 ' in line and "Pebble-VA" in line
        )

    def pebble_root(self) -> str:
        response = http_request(
            LOOPBACK4,
            self.management_port,
            "/roots/0",
            {"Host": "localhost"},
            tls=client_context(self.pebble_ca.cert),
            server_hostname="localhost",
        )
        assert response.status == 200, response
        return response.body.decode()

    def describe(self, pem: Path) -> str:
        """Subject and issuer of every certificate in a PEM file (for failure messages)."""
        openssl = require_tool("openssl")
        p7 = run([openssl, "crl2pkcs7", "-nocrl", "-certfile", str(pem), "-out", str(pem) + ".p7"])
        if p7.returncode != 0:
            return p7.stderr
        return run([openssl, "pkcs7", "-in", str(pem) + ".p7", "-print_certs", "-noout"]).stdout

    def wait_until_served(self, der: bytes, timeout: float = 15.0) -> None:
        wait_until(
            lambda: served_certificate(self.nginx.remap.tls_port, self.host) == der,
            timeout,
            "nginx to serve the certificate certbot wrote",
            interval=0.1,
        )


@pytest.fixture(scope="module")
def acme(dev_plan: RenderedPlan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Acme]:  # noqa: F811
    tools = {
        name: require_tool(name) for name in ("nginx", "openssl", "pebble", "pebble-challtestsrv", "certbot")
    }
    work = tmp_path_factory.mktemp("acme")
    host = dev_plan.grafana_host()
    logs = work / "logs"
    logs.mkdir()
    processes: list[Proc] = []
    standin = StandInGrafana().start()
    nginx: Nginx | None = None
    try:
        # 1. nginx from the rendered files, bootstrapped with a scratch certificate.
        scratch = make_test_ca(work / "scratch-ca", "scratch CA (replaced by pebble's)")
        live_dir = work / "letsencrypt" / "live" / layout.GRAFANA_CERT_NAME
        install_live_cert(live_dir, scratch, *scratch.issue(work / "scratch-leaf", [host]))
        webroot = work / "webroot"
        webroot.mkdir()
        remap = NginxRemap(free_port(), free_port(), free_port(), standin.address, live_dir, webroot)
        nginx = Nginx(work / "nginx", NginxFiles.from_plan(dev_plan), remap)
        nginx.start()
        shutil.rmtree(work / "letsencrypt" / "live")

        # 2. pebble-challtestsrv as the VA's DNS: the Grafana name -> 127.0.0.1, no AAAA.
        dns_port, challtest_mgmt = free_port(udp=True), free_port()
        challtest = Proc(
            "pebble-challtestsrv",
            [
                tools["pebble-challtestsrv"],
                "-dns01",
                f"{LOOPBACK4}:{dns_port}",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                f"{LOOPBACK4}:{challtest_mgmt}",
                "-defaultIPv4",
                LOOPBACK4,
                "-defaultIPv6",
                "",
            ],
            logs,
        )
        processes.append(challtest)
        challtest.wait_for_port(LOOPBACK4, challtest_mgmt)
        wait_until(
            lambda: dns_a_lookup((LOOPBACK4, dns_port), host) == [LOOPBACK4],
            10,
            f"pebble-challtestsrv to resolve {host} to {LOOPBACK4}",
            interval=0.2,
        )

        # 3. pebble, its API on a throwaway localhost certificate, HTTP-01 on the remapped port 80.
        pebble_ca = make_test_ca(work / "pebble-ca", "pebble API test CA")
        api_cert, api_key = pebble_ca.issue(work / "pebble-api", ["localhost"], ("127.0.0.1",))
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
        pebble_env = dict(
            os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0"
        )
        pebble = Proc(
            "pebble",
            [tools["pebble"], "-config", str(config), "-dnsserver", f"{LOOPBACK4}:{dns_port}"],
            logs,
            pebble_env,
        )
        processes.append(pebble)
        pebble.wait_for_port(LOOPBACK4, api_port)
        pebble.wait_for_port(LOOPBACK4, management_port)

        yield Acme(
            work=work,
            host=host,
            nginx=nginx,
            standin=standin,
            pebble_ca=pebble_ca,
            directory=f"https://{LOOPBACK4}:{api_port}/dir",
            management_port=management_port,
            certbot=tools["certbot"],
            hook_marker=work / "deploy-hook-ran",
        )
    finally:
        for process in reversed(processes):
            process.stop()
        if nginx is not None:
            nginx.stop()
        standin.stop()


def test_certificate_issued_through_rendered_port80_and_served_on_3443(acme: Acme) -> None:
    output = acme.issue_through_webroot()
    assert "Successfully received certificate" in output
    assert acme.validations() >= 1, (
        f"pebble's VA never fetched the challenge from nginx:\n{acme.access_log()}"
    )
    for name in ("fullchain.pem", "privkey.pem", "chain.pem"):
        assert (acme.live_dir / name).is_file(), (
            f"certbot did not write live/{layout.GRAFANA_CERT_NAME}/{name}"
        )

    acme.nginx.reload()
    acme.wait_until_served(leaf_der(acme.live_dir / "cert.pem"))

    # A client that trusts only pebble's root verifies the chain nginx serves, for the Grafana name.
    root = acme.pebble_root()
    trusts_pebble = client_context(cadata=root)
    try:
        sock = connect(LOOPBACK4, acme.nginx.remap.tls_port, trusts_pebble, acme.host)
    except ssl.SSLCertVerificationError as error:
        (acme.work / "root.pem").write_text(root)
        raise AssertionError(
            f"{error}\nserved chain:\n{acme.describe(acme.live_dir / 'fullchain.pem')}\n"
            f"pebble /roots/0:\n{acme.describe(acme.work / 'root.pem')}"
        ) from None
    with sock:
        assert isinstance(sock, ssl.SSLSocket)
        peer = sock.getpeercert()
        assert peer is not None and ("DNS", acme.host) in peer["subjectAltName"]
    response = http_request(
        LOOPBACK4,
        acme.nginx.remap.tls_port,
        "/api/health",
        {"Host": f"{acme.host}:{layout.GRAFANA_TLS_PORT}"},
        tls=trusts_pebble,
        server_hostname=acme.host,
    )
    assert response.status == 200, "the pebble-certified 3443 server did not reach the stand-in Grafana"
    # ...and the same client refuses a name the certificate does not carry.
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(LOOPBACK4, acme.nginx.remap.tls_port, trusts_pebble, "other.example.com").close()


def test_forced_renewal_runs_reload_hook_and_nginx_serves_new_certificate(acme: Acme) -> None:
    if not (acme.live_dir / "cert.pem").exists():
        pytest.fail("the issuance test did not leave a certificate to renew", pytrace=False)
    before = served_certificate(acme.nginx.remap.tls_port, acme.host)
    validations_before = acme.validations()
    workers_before = acme.nginx.workers()
    hook = f'{acme.nginx.reload_command()} && printf %s "$RENEWED_LINEAGE" > {acme.hook_marker}'
    output = acme.certbot_run(
        "renew",
        "--cert-name",
        layout.GRAFANA_CERT_NAME,
        "--force-renewal",
        "--no-random-sleep-on-renew",
        "--deploy-hook",
        hook,
    )
    assert "renewals succeeded" in output.lower() or "congratulations" in output.lower(), output
    assert acme.hook_marker.is_file(), f"the deploy hook did not run:\n{output}"
    assert acme.hook_marker.read_text() == str(acme.live_dir)
    renewed = leaf_der(acme.live_dir / "cert.pem")
    assert renewed != before, "certbot did not write a new certificate"
    # Nobody but the deploy hook reloaded nginx: serving the new certificate proves the hook works.
    acme.nginx.wait_for_reload(workers_before)
    acme.wait_until_served(renewed)
    # Debian's pebble reuses a valid authorization at random (module docstring): renew again, a bounded
    # number of times, until one renewal is validated anew through nginx's port 80.
    for _attempt in range(10):
        if acme.validations() > validations_before:
            break
        acme.certbot_run(
            "renew", "--cert-name", layout.GRAFANA_CERT_NAME, "--force-renewal", "--no-random-sleep-on-renew"
        )
    assert acme.validations() > validations_before, "no renewal was validated through nginx's port 80"
    with connect(LOOPBACK4, acme.nginx.remap.tls_port, client_context(cadata=acme.pebble_root()), acme.host):
        pass
