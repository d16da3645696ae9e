"""`make doctor STACK=<stack>`: prove a live deployment from the outside, from its stack outputs.

Reads `pulumi stack output --json --show-secrets --stack <stack>` (or `--outputs FILE`), runs every
check in parallel with a timeout each, prints a table (or `--json`) and exits 1 when a check fails.

Checks: DNS records as published (public resolver), TLS 1.3 + certificate (name, issuer, days left)
for each name the edge serves on 443 (the `edge` output), the key exchange group offered
X25519MLKEM768, tracker API health, stats with and without the admin token, HTTP tracker announce +
scrape (bencode), UDP tracker BEP 15 connect + announce (IPv4, and IPv6 where an AAAA is
advertised), Grafana on its port (3443 with the pingoo edge, 443 with the nginx edge: TLS, HSTS,
login page, WebSocket 101 on /api/live/ws), and port 80 (redirect, ACME challenge path).

For tests and special networks: `--resolver ADDR --resolver-port N`, `--resolve NAME=ADDR` (connect there
instead of resolving NAME), `--port 443=8443` (port remap), `--ca-bundle FILE`, `--issuer TEXT`.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import dataclasses
import datetime
import functools
import http.client
import json
import re
import secrets
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from core import layout

PASS, FAIL, INFO = "pass", "fail", "info"
# Let's Encrypt's issuer organisation; staging intermediates are "(STAGING) Let's Encrypt".
LE_PRODUCTION_ISSUER = "Let's Encrypt"
LE_STAGING_ISSUER = "(STAGING)"
DEFAULT_RESOLVER = "1.1.1.1"
UDP_PROTOCOL_ID = 0x41727101980  # BEP 15 magic constant
# Fewer days left than this fails (Let's Encrypt renews at 1/3 of the lifetime left: 15 of 45 days).
DEFAULT_MIN_DAYS = 10
# Pingoo answers 403 "Permission Denied" to a request without a User-Agent (or one of 256 bytes or
# more), before routing (pingooio/pingoo pingoo/listeners/http_listener.rs, `USER_AGENT_MAX_LENGTH`).
USER_AGENT = "torrust-hybrid-tls-doctor"


@dataclasses.dataclass
class Result:
    check: str
    target: str
    status: str
    detail: str


class CheckError(Exception):
    """A check's finding, worded for the operator."""


@dataclasses.dataclass
class Target:
    outputs: dict[str, Any]
    resolver: tuple[str, int]
    resolve: dict[str, list[str]]
    ports: dict[int, int]
    ca_bundle: str | None
    issuer: str
    timeout: float
    min_days: int

    def address(self, name: str, family: int = socket.AF_INET) -> str:
        if name in self.resolve:
            wanted = ":" if family == socket.AF_INET6 else "."
            matching = [address for address in self.resolve[name] if wanted in address]
            if not matching:
                raise CheckError(
                    f"--resolve gives no {'IPv6' if wanted == ':' else 'IPv4'} address for {name}"
                )
            return matching[0]
        try:
            info = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise CheckError(f"{name} does not resolve ({error})") from None
        return str(info[0][4][0])

    def port(self, port: int) -> int:
        return self.ports.get(port, port)


# --- outputs ---------------------------------------------------------------------------------------


def host_of(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or ""


def pingoo_names(outputs: dict[str, Any]) -> list[str]:
    """The names the edge serves on 443, API first and Grafana last (the `edge` output lists them
    with their ports; older outputs have only `endpoints`)."""
    edge = outputs.get("edge")
    if edge:
        on_443 = [e["name"] for e in edge["https"] if e["port"] == layout.HTTPS_PORT]
        return list(dict.fromkeys(on_443))
    endpoints = outputs["endpoints"]
    names = [host_of(endpoints["trackerApi"]["base"])]
    names += [host_of(url) for url in endpoints["httpTrackers"]]
    names.append(host_of(endpoints["grafana"]))
    return names


def load_outputs(stack: str | None, path: str | None) -> dict[str, Any]:
    if path:
        data: dict[str, Any] = json.loads(Path(path).read_text())
        return data
    assert stack
    result = subprocess.run(
        ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"doctor: `pulumi stack output --stack {stack}` failed:\n{result.stderr}")
    data = json.loads(result.stdout)
    return data


# --- DNS -------------------------------------------------------------------------------------------


def query(target: Target, name: str, type_: str) -> list[str]:
    request = dns.message.make_query(name, type_)
    try:
        response = dns.query.udp(request, target.resolver[0], timeout=target.timeout, port=target.resolver[1])
    except (dns.exception.Timeout, OSError) as error:
        raise CheckError(
            f"resolver {target.resolver[0]}:{target.resolver[1]} did not answer ({error})"
        ) from None
    wanted = dns.rdatatype.from_text(type_)
    values = []
    for rrset in response.answer:
        if rrset.rdtype == wanted:
            values += [rdata.to_text() for rdata in rrset]
    return sorted(values)


def normalise(type_: str, value: str) -> str:
    if type_ == "TXT":
        return value.strip('"')
    if type_ == "CAA":
        return re.sub(r"\s+", " ", value.replace('"', "")).strip()
    return value


def check_dns(target: Target, name: str, type_: str, expected: list[str]) -> str:
    got = query(target, name, type_)
    want = sorted(normalise(type_, value) for value in expected)
    seen = sorted(normalise(type_, value) for value in got)
    if not expected and got:
        raise CheckError(f"{type_} {', '.join(got)} is published but none belongs (remove it)")
    if seen != want:
        shown = ", ".join(got) or "nothing"
        raise CheckError(f"published {shown}; want {', '.join(expected)}")
    return ", ".join(got) or f"no {type_} (as intended)"


# --- TLS / HTTP ------------------------------------------------------------------------------------


def tls_context(target: Target, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=target.ca_bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def tls_connect(
    target: Target, name: str, port: int, verify: bool = True, family: int = socket.AF_INET
) -> ssl.SSLSocket:
    address = target.address(name, family)
    try:
        raw = socket.create_connection((address, target.port(port)), timeout=target.timeout)
    except OSError as error:
        raise CheckError(f"cannot connect to {name} ({address}) port {port}: {error}") from None
    try:
        return tls_context(target, verify).wrap_socket(raw, server_hostname=name)
    except ssl.SSLCertVerificationError as error:
        raw.close()
        raise CheckError(f"certificate not trusted for {name}: {error.verify_message}") from None
    except (ssl.SSLError, OSError) as error:
        raw.close()
        raise CheckError(f"TLS 1.3 handshake with {name}:{port} failed: {error}") from None


def describe_certificate(der: bytes) -> dict[str, str]:
    """Issuer, notAfter and SANs of a DER certificate (openssl CLI: no extra Python dependency)."""
    with tempfile.NamedTemporaryFile(suffix=".der") as handle:
        handle.write(der)
        handle.flush()
        result = subprocess.run(
            ["openssl", "x509", "-inform", "DER", "-in", handle.name, "-noout", "-issuer", "-enddate",
             "-ext", "subjectAltName", "-nameopt", "utf8,sep_comma_plus_space"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise CheckError(f"cannot read the certificate: {result.stderr.strip()}")
    text = result.stdout
    issuer = re.search(r"^issuer=(.*)$", text, re.M)
    end = re.search(r"^notAfter=(.*)$", text, re.M)
    sans = re.findall(r"DNS:([^,\s]+)", text)
    return {
        "issuer": issuer.group(1) if issuer else "",
        "notAfter": end.group(1) if end else "",
        "sans": " ".join(sans),
    }


def days_left(not_after: str) -> int:
    expires = datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), datetime.UTC)
    return (expires - datetime.datetime.now(datetime.UTC)).days


def check_certificate(target: Target, name: str, port: int, family: int = socket.AF_INET) -> str:
    staging_unverifiable = target.ca_bundle is None and bool(target.outputs.get("acmeStaging"))
    with tls_connect(target, name, port, verify=not staging_unverifiable, family=family) as sock:
        version = sock.version()
        der = sock.getpeercert(binary_form=True)
    if version != "TLSv1.3":
        raise CheckError(f"negotiated {version}, want TLSv1.3")
    assert der is not None
    info = describe_certificate(der)
    if name not in info["sans"].split():
        raise CheckError(f"certificate is for {info['sans'] or 'no DNS name'}, not {name}")
    left = days_left(info["notAfter"])
    if target.issuer not in info["issuer"]:
        raise CheckError(f"issuer is '{info['issuer']}', want one containing '{target.issuer}'")
    if left < target.min_days:
        raise CheckError(f"certificate expires in {left} days ({info['notAfter']}); renewal is overdue")
    note = (
        " (chain not verified: staging roots are not public; pass --ca-bundle)"
        if staging_unverifiable
        else ""
    )
    return f"TLSv1.3, issuer '{info['issuer']}', {left} days left{note}"


def openssl_version() -> tuple[int, int, str]:
    result = subprocess.run(["openssl", "version"], capture_output=True, text=True, timeout=10, check=False)
    match = re.match(r"OpenSSL (\d+)\.(\d+)\S*", result.stdout)
    if not match:
        return (0, 0, result.stdout.strip() or "no openssl")
    return (int(match.group(1)), int(match.group(2)), match.group(0))


def check_pq_group(target: Target, name: str, port: int) -> tuple[str, str]:
    """The group negotiated when offering X25519MLKEM768 first (OpenSSL >= 3.5 can offer it)."""
    major, minor, version = openssl_version()
    if (major, minor) < (3, 5):
        return INFO, f"not testable with {version} (<3.5 cannot offer X25519MLKEM768)"
    address = target.address(name)
    connect = f"[{address}]:{target.port(port)}" if ":" in address else f"{address}:{target.port(port)}"
    result = subprocess.run(
        ["openssl", "s_client", "-connect", connect, "-servername", name, "-tls1_3",
         "-groups", "X25519MLKEM768:X25519", "-brief"],
        input="", capture_output=True, text=True, timeout=target.timeout + 5, check=False,
    )  # fmt: skip
    text = result.stdout + result.stderr
    match = re.search(r"(?:Negotiated TLS1\.3 group|Server Temp Key|Peer Temp Key):\s*(\S+)", text)
    if not match:
        raise CheckError(f"openssl s_client reported no key exchange group: {text.strip()[-200:]}")
    group = match.group(1).rstrip(",")
    return (PASS if "MLKEM" in group.upper() else INFO), f"negotiated {group}"


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def http_get(
    target: Target,
    name: str,
    port: int,
    path: str,
    tls: bool = True,
    headers: dict[str, str] | None = None,
) -> Reply:
    host_header = name if port in (80, 443) else f"{name}:{port}"
    if tls:
        sock: socket.socket = tls_connect(target, name, port)
    else:
        address = target.address(name)
        try:
            sock = socket.create_connection((address, target.port(port)), timeout=target.timeout)
        except OSError as error:
            raise CheckError(f"cannot connect to {name} ({address}) port {port}: {error}") from None
    connection = http.client.HTTPConnection(name, target.port(port), timeout=target.timeout)
    connection.sock = sock
    try:
        connection.request(
            "GET", path, headers={"Host": host_header, "User-Agent": USER_AGENT, **(headers or {})}
        )
        response = connection.getresponse()
        status = response.status
        reply_headers = {key.lower(): value for key, value in response.getheaders()}
        body = b"" if status == 101 else response.read(1_000_000)
    except (OSError, http.client.HTTPException) as error:
        raise CheckError(f"GET {path} on {name}:{port} failed: {error}") from None
    finally:
        connection.close()
    return Reply(status, reply_headers, body)


def json_body(reply: Reply, what: str) -> Any:
    try:
        return json.loads(reply.body)
    except ValueError:
        raise CheckError(f"{what}: not JSON: {reply.body[:120]!r}") from None


def check_api_health(target: Target, name: str) -> str:
    reply = http_get(target, name, layout.HTTPS_PORT, "/api/health_check")
    if reply.status != 200 or json_body(reply, "health check").get("status") != "Ok":
        raise CheckError(f"/api/health_check answered {reply.status} {reply.body[:120]!r}")
    return '200 {"status":"Ok"}'


def check_stats(target: Target, name: str) -> str:
    token = target.outputs.get("trackerAdminToken") or ""
    if not token:
        raise CheckError("no trackerAdminToken in the outputs (run with --show-secrets)")
    with_token = http_get(target, name, layout.HTTPS_PORT, f"/api/v1/stats?token={urllib.parse.quote(token)}")
    if with_token.status != 200 or "torrents" not in json_body(with_token, "stats"):
        raise CheckError(f"stats with the admin token answered {with_token.status} {with_token.body[:120]!r}")
    without = http_get(target, name, layout.HTTPS_PORT, "/api/v1/stats")
    if without.status == 200:
        raise CheckError("stats answered 200 WITHOUT a token: the API is open")
    return f"200 with the token, {without.status} without"


def bdecode(data: bytes) -> Any:
    def parse(index: int) -> tuple[Any, int]:
        head = data[index : index + 1]
        if head == b"i":
            end = data.index(b"e", index)
            return int(data[index + 1 : end]), end + 1
        if head == b"l":
            items, index = [], index + 1
            while data[index : index + 1] != b"e":
                item, index = parse(index)
                items.append(item)
            return items, index + 1
        if head == b"d":
            result, index = {}, index + 1
            while data[index : index + 1] != b"e":
                key, index = parse(index)
                result[key], index = parse(index)
            return result, index + 1
        if head.isdigit():
            colon = data.index(b":", index)
            length = int(data[index:colon])
            return data[colon + 1 : colon + 1 + length], colon + 1 + length
        raise ValueError(f"bad bencode at byte {index}")

    try:
        value, end = parse(0)
    except (ValueError, IndexError) as error:
        raise CheckError(f"reply is not bencoded: {data[:120]!r} ({error})") from None
    if end != len(data):
        raise CheckError(f"trailing bytes after the bencoded reply: {data[:120]!r}")
    return value


def check_http_tracker(target: Target, url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    name = parts.hostname or ""
    if "<key>" in parts.path:
        return "announce skipped: private tracker (needs a user key); scrape only: " + _scrape(target, name)
    info_hash, peer_id = secrets.token_bytes(20), b"-DR0001-" + secrets.token_bytes(12)
    query = urllib.parse.urlencode(
        {"info_hash": info_hash, "peer_id": peer_id, "port": 6881, "uploaded": 0, "downloaded": 0,
         "left": 0, "compact": 1, "event": "started"},
        # Every byte percent-encoded: the tracker does not read urlencode's `+` as a space.
        quote_via=urllib.parse.quote,
    )  # fmt: skip
    reply = http_get(target, name, layout.HTTPS_PORT, f"{parts.path}?{query}")
    announce = bdecode(reply.body)
    if reply.status != 200 or not isinstance(announce, dict) or b"interval" not in announce:
        reason = announce.get(b"failure reason", b"") if isinstance(announce, dict) else b""
        raise CheckError(
            f"announce answered {reply.status}: {reason.decode(errors='replace') or reply.body[:120]!r}"
        )
    return f"announce interval {announce[b'interval']}; " + _scrape(target, name, info_hash)


def _scrape(target: Target, name: str, info_hash: bytes | None = None) -> str:
    info_hash = info_hash or secrets.token_bytes(20)
    reply = http_get(
        target,
        name,
        layout.HTTPS_PORT,
        "/scrape?" + urllib.parse.urlencode({"info_hash": info_hash}, quote_via=urllib.parse.quote),
    )
    scrape = bdecode(reply.body)
    if reply.status != 200 or not isinstance(scrape, dict) or b"files" not in scrape:
        raise CheckError(f"scrape answered {reply.status} {reply.body[:120]!r}")
    return "scrape ok"


def check_udp_tracker(target: Target, host: str, port: int, family: int) -> str:
    address = target.address(host, family)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(target.timeout)
        try:
            sock.connect((address, target.port(port)))
            tid = secrets.randbits(32)
            sock.send(struct.pack(">QII", UDP_PROTOCOL_ID, 0, tid))
            reply = sock.recv(2048)
            if len(reply) < 16 or struct.unpack(">II", reply[:8]) != (0, tid):
                raise CheckError(f"connect: unexpected reply {reply[:32]!r}")
            (connection_id,) = struct.unpack(">Q", reply[8:16])
            tid = secrets.randbits(32)
            request = struct.pack(
                ">QII20s20sQQQIIIiH", connection_id, 1, tid, secrets.token_bytes(20),
                b"-DR0001-" + secrets.token_bytes(12), 0, 0, 0, 2, 0, secrets.randbits(32), -1, 6881,
            )  # fmt: skip
            sock.send(request)
            reply = sock.recv(2048)
        except TimeoutError:
            raise CheckError(f"no UDP reply from {address}:{port} within {target.timeout:.0f}s") from None
        except OSError as error:
            raise CheckError(f"UDP to {address}:{port} failed: {error}") from None
    if len(reply) < 20 or struct.unpack(">II", reply[:8]) != (1, tid):
        raise CheckError(f"announce: unexpected reply {reply[:40]!r}")
    interval, _leechers, _seeders = struct.unpack(">III", reply[8:20])
    return f"connect + announce ok via {address} (interval {interval})"


def grafana_port(outputs: dict[str, Any]) -> int:
    """Where Grafana is served: 3443 with the pingoo edge, 443 with the nginx edge (endpoints.grafana)."""
    return urllib.parse.urlsplit(outputs["endpoints"]["grafana"]).port or layout.HTTPS_PORT


def check_grafana(target: Target, name: str) -> str:
    port = grafana_port(target.outputs)
    check_certificate(target, name, port)
    root = http_get(target, name, port, "/login")
    hsts = root.headers.get("strict-transport-security", "")
    if "max-age=" not in hsts:
        raise CheckError(f"no Strict-Transport-Security header on :{port}")
    if root.status != 200 or b"Grafana" not in root.body:
        raise CheckError(f"/login answered {root.status} without the Grafana login page")
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    # As a browser sends it (RFC 6454: no port when it is the scheme's default); Grafana Live compares
    # it with Host and root_url, so `https://<name>:443` would be refused.
    origin = f"https://{name}" if port == layout.HTTPS_PORT else f"https://{name}:{port}"
    upgrade = http_get(
        target, name, port, "/api/live/ws",
        headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
                 "Sec-WebSocket-Version": "13", "Origin": origin},
    )  # fmt: skip
    if upgrade.status != 101:
        raise CheckError(
            f"WebSocket upgrade to /api/live/ws answered {upgrade.status}, want 101 "
            "(is the proxy passing the Upgrade and Connection headers?)"
        )
    return f"TLS ok, HSTS '{hsts}', login page, WebSocket 101"


def check_port80(target: Target, name: str) -> str:
    reply = http_get(target, name, layout.HTTP_PORT, "/doctor", tls=False)
    location = reply.headers.get("location", "")
    if reply.status not in (301, 302, 307, 308) or not location.startswith(f"https://{name}"):
        raise CheckError(
            f"http://{name}/ answered {reply.status} {location!r}, want a redirect to https://{name}"
        )
    probe = f"/.well-known/acme-challenge/doctor-{secrets.token_hex(8)}"
    challenge = http_get(target, name, layout.HTTP_PORT, probe, tls=False)
    if challenge.status in (301, 302, 307, 308):
        raise CheckError(f"{probe} is redirected ({challenge.status}); HTTP-01 must be served on port 80")
    if challenge.status not in (200, 404):
        raise CheckError(f"{probe} answered {challenge.status}, want 404 from the challenge webroot")
    return f"redirects ({reply.status} -> {location}); challenge path served ({challenge.status})"


# --- plan and run ----------------------------------------------------------------------------------

Check = tuple[str, str, Callable[[], str | tuple[str, str]]]


def plan_checks(target: Target) -> list[Check]:
    outputs = target.outputs
    endpoints = outputs["endpoints"]
    names = pingoo_names(outputs)
    api, grafana = names[0], names[-1]
    checks: list[Check] = []
    expected: dict[tuple[str, str], list[str]] = {}
    for record in outputs.get("dnsRecords", []):
        value = record["value"]
        expected.setdefault((record["name"], record["type"]), []).append(
            f'"{value}"' if record["type"] == "TXT" else value
        )
    for name in {record["name"] for record in outputs.get("dnsRecords", [])}:
        expected.setdefault((name, "AAAA"), [])  # a stray AAAA sends IPv6 clients to a closed port
    for (name, type_), values in expected.items():
        checks.append((f"dns {type_}", name, functools.partial(check_dns, target, name, type_, values)))
    for name in names:
        checks.append(
            ("tls 443", name, functools.partial(check_certificate, target, name, layout.HTTPS_PORT))
        )
    # Names with an AAAA (every name with the nginx edge) are checked over IPv6 as well.
    with_aaaa = {r["name"] for r in outputs.get("dnsRecords", []) if r["type"] == "AAAA"}
    for name in (n for n in names if n in with_aaaa):
        checks.append(
            (
                "tls 443 ipv6",
                name,
                functools.partial(check_certificate, target, name, layout.HTTPS_PORT, socket.AF_INET6),
            )
        )
    checks.append(("pq group", api, lambda: check_pq_group(target, api, layout.HTTPS_PORT)))
    checks.append(("api health", api, lambda: check_api_health(target, api)))
    checks.append(("api stats", api, lambda: check_stats(target, api)))
    for url in endpoints["httpTrackers"]:
        checks.append(("http tracker", host_of(url), functools.partial(check_http_tracker, target, url)))
    advertised6 = {r["name"] for r in outputs.get("dnsRecords", []) if r["type"] == "AAAA"}
    for url in endpoints["udpTrackers"]:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "", parts.port or 6969
        checks.append(
            (
                "udp ipv4",
                f"{host}:{port}",
                functools.partial(check_udp_tracker, target, host, port, socket.AF_INET),
            )
        )
        if host in advertised6:
            checks.append(
                (
                    "udp ipv6",
                    f"{host}:{port}",
                    functools.partial(check_udp_tracker, target, host, port, socket.AF_INET6),
                )
            )
    checks.append((f"grafana {grafana_port(outputs)}", grafana, lambda: check_grafana(target, grafana)))
    for name in (api, grafana):
        checks.append(("port 80", name, functools.partial(check_port80, target, name)))
    return checks


def run_checks(target: Target, checks: list[Check]) -> list[Result]:
    results: list[Result] = []

    def run_one(check: Check) -> Result:
        kind, where, function = check
        try:
            outcome = function()
        except CheckError as error:
            return Result(kind, where, FAIL, str(error))
        except Exception as error:  # a bug or an unexpected reply: still a failed check, with the reason
            return Result(kind, where, FAIL, f"{type(error).__name__}: {error}")
        if isinstance(outcome, tuple):
            return Result(kind, where, outcome[0], outcome[1])
        return Result(kind, where, PASS, outcome)

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futures = [(check, pool.submit(run_one, check)) for check in checks]
        for check, future in futures:
            try:
                results.append(future.result(timeout=target.timeout * 4 + 10))
            except concurrent.futures.TimeoutError:
                results.append(
                    Result(check[0], check[1], FAIL, f"timed out after {target.timeout * 4 + 10:.0f}s")
                )
    return results


def table(results: list[Result]) -> str:
    widths = [max(len(getattr(r, f)) for r in results) for f in ("check", "target", "status")]
    lines = []
    for r in results:
        lines.append(
            f"{r.check:<{widths[0]}}  {r.target:<{widths[1]}}  {r.status.upper():<{widths[2]}}  {r.detail}"
        )
    return "\n".join(lines)


def parse_pairs(values: list[str], what: str) -> dict[str, str]:
    result = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise SystemExit(f"doctor: {what} '{value}' is not KEY=VALUE")
        result[key] = item
    return result


def resolve_overrides(values: list[str]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for value in values:
        for name, address in parse_pairs([value], "--resolve").items():
            result.setdefault(name, []).append(address)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make doctor", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", help="read `pulumi stack output --json --show-secrets` of this stack")
    source.add_argument("--outputs", help="a saved outputs JSON file instead")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--resolver", default=DEFAULT_RESOLVER, help="DNS resolver address (default 1.1.1.1)")
    parser.add_argument("--resolver-port", type=int, default=53)
    parser.add_argument(
        "--resolve", action="append", default=[], help="NAME=ADDR: connect there instead (once per family)"
    )
    parser.add_argument("--port", action="append", default=[], help="PORT=PORT: remap a service port")
    parser.add_argument("--ca-bundle", help="trust these roots instead of the system store")
    parser.add_argument("--issuer", help="expected text in the issuer (default from acmeStaging)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per network step")
    parser.add_argument(
        "--min-days", type=int, default=DEFAULT_MIN_DAYS, help="fail below this many days left"
    )
    args = parser.parse_args(argv)

    outputs = load_outputs(args.stack, args.outputs)
    staging = bool(outputs.get("acmeStaging"))
    target = Target(
        outputs=outputs,
        resolver=(args.resolver, args.resolver_port),
        resolve=resolve_overrides(args.resolve),
        ports={int(k): int(v) for k, v in parse_pairs(args.port, "--port").items()},
        ca_bundle=args.ca_bundle,
        issuer=args.issuer or (LE_STAGING_ISSUER if staging else LE_PRODUCTION_ISSUER),
        timeout=args.timeout,
        min_days=args.min_days,
    )
    results = run_checks(target, plan_checks(target))
    failed = [r for r in results if r.status == FAIL]
    if args.json:
        print(json.dumps({"ok": not failed, "results": [dataclasses.asdict(r) for r in results]}, indent=2))
    else:
        print(table(results))
        print(
            f"\n{len(results) - len(failed)} of {len(results)} checks passed"
            + (f"; {len(failed)} FAILED" if failed else "")
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
