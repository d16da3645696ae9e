"""The e2e checks, made from outside (the client namespace) against the replayed plan.

What each check proves is written in its docstring and in README.md of this folder. Tests run in
file order against one session stack; the mutation tests come last and restore what they change.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import time
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import clients
from tests.e2e.conftest import PEBBLE_MGMT_PORT, PEBBLE_PORT, Stack, wait_for
from tests.realtools import client_context

# The doctor's decoder (tools/doctor.py): one bencode parser for what ships and what proves it.
from tools.doctor import bdecode

CAPS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
    "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
    "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
    "SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30, "SETFCAP": 31,
}  # fmt: skip
HEALTH_TIMEOUT = 150  # start period 30 s + a few 15 s intervals, on a loaded 2-core machine
INFO_HASH = hashlib.sha1(b"torrust-hybrid-tls e2e").digest()
COMPLETED_HASH = hashlib.sha1(b"torrust-hybrid-tls e2e completed").digest()


# --- Shared checks (also used by the mutation tests) --------------------------------------------------


def cap_mask(names: list[str]) -> int:
    return sum(1 << CAPS[n.removeprefix("CAP_")] for n in names)


def assert_running_and_healthy(stack: Stack, name: str, timeout: float = HEALTH_TIMEOUT) -> None:
    has_check = bool(stack.inputs[name].get("healthcheck"))

    def ready() -> bool:
        state = stack.container(name).attrs["State"]
        if not state["Running"] or state.get("Restarting"):
            logs = stack.container(name).logs(tail=30).decode(errors="replace")
            raise AssertionError(f"{name} is not running: {state}\n{logs}")
        return not has_check or state["Health"]["Status"] == "healthy"

    # A container that exits keeps being restarted (unless-stopped): give it a moment to fail first.
    time.sleep(3)
    wait_for(ready, timeout, f"{name} running{' and healthy' if has_check else ''}", interval=2)


def process_caps(pid: str) -> tuple[int, int, int]:
    """(uid, CapEff, CapBnd) of a host pid."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["Uid"].split()[1]), int(fields["CapEff"].strip(), 16), int(fields["CapBnd"].strip(), 16)


def assert_capabilities(stack: Stack, name: str) -> None:
    """Every process: bounding set == the plan's add-back list (drop ALL); root processes hold exactly
    that set, processes that switched to another user hold none."""
    caps = stack.inputs[name].get("capabilities") or {}
    assert caps.get("drops") == ["ALL"], f"{name}: the plan must drop ALL capabilities"
    expected = cap_mask(caps.get("adds") or [])
    top = stack.client.api.top(name, ps_args="-eo pid")
    pids = [row[0] for row in top["Processes"]]
    assert pids, f"{name}: no processes"
    for pid in pids:
        uid, effective, bounding = process_caps(pid)
        assert bounding == expected, f"{name} pid {pid}: CapBnd {bounding:#x}, plan {expected:#x}"
        want = expected if uid == 0 else 0
        assert effective == want, f"{name} pid {pid} uid {uid}: CapEff {effective:#x}, expected {want:#x}"


def assert_memory_limit(stack: Stack, name: str) -> None:
    """The kernel enforces the plan's memory (MiB) on the container's cgroup (cgroup v1 here)."""
    memory = stack.inputs[name].get("memory")
    if memory is None:
        return
    container = stack.container(name)
    parent = container.attrs["HostConfig"]["CgroupParent"] or stack.net.server  # the daemon's --cgroup-parent
    limit = Path(f"/sys/fs/cgroup/memory/{parent.strip('/')}/{container.id}/memory.limit_in_bytes")
    assert int(limit.read_text()) == int(memory) * 1024 * 1024, (
        f"{name}: {limit} = {limit.read_text().strip()}"
    )


def edge_output(stack: Stack) -> dict[str, Any]:
    """The plan's `edge` output: which edge, its TLS names and ports, versions, redirects."""
    edge: dict[str, Any] = stack.plan["outputs"]["edge"]
    return edge


def trusted(stack: Stack) -> ssl.SSLContext:
    """A client context trusting only the tier's two issuers: the Pingoo stand-in's scratch CA (the
    pingoo edge's 443) and pebble's root (every certbot certificate: Grafana, and with the nginx edge
    every name)."""
    return client_context(cadata=stack.pingoo_ca.cert.read_text() + "\n" + pebble_root(stack))


def wait_for_edge_certificates(stack: Stack) -> None:
    """Every TLS name and port of the edge serves a certificate the trusted issuers signed for it
    (certbot gets the nginx edge's from pebble after the container starts)."""
    for endpoint in edge_output(stack)["https"]:
        name, port = endpoint["name"], endpoint["port"]

        def served(name: str = name, port: int = port) -> bytes:
            der: bytes = stack.client_ns(
                lambda: clients.peer_cert_der(stack.net.server_v4, port, name, trusted(stack))
            )
            return der

        what = f"{name}:{port} to serve a certificate for the name ({endpoint['challenge']})"
        try:
            wait_for(served, 240, what, 3)
        except AssertionError as error:
            logs = "\n".join(
                f"--- docker logs {c} ---\n{stack.container(c).logs(tail=40).decode(errors='replace')}"
                for c in edge_output(stack)["containers"]
            )
            raise AssertionError(f"{error}\n{logs}") from None


def authority(host: str, port: int) -> str:
    """The Host header a browser sends: the port only when it is not 443."""
    return host if port == 443 else f"{host}:{port}"


def endpoint_checks(stack: Stack) -> dict[str, list[tuple[str, Any]]]:
    """name -> [(what, check(address))] for every name of the dnsRecords output."""
    endpoints = stack.plan["outputs"]["endpoints"]
    edge = edge_output(stack)
    wait_for_edge_certificates(stack)
    tls = trusted(stack)
    by_name: dict[str, list[tuple[str, Any]]] = {}

    def add(url: str, what: str, check: Any) -> None:
        host = re.match(r"^\w+://([^/:]+)", url)
        assert host, url
        by_name.setdefault(host.group(1), []).append((what, check))

    tls12_accepted = "TLSv1.2" in edge["tlsVersions"]
    for url in [endpoints["trackerApi"]["healthCheck"], *endpoints["httpTrackerHealthChecks"]]:
        host = url.split("/")[2]
        path = "/" + url.split("/", 3)[3]

        def health(address: str, host: str = host, path: str = path) -> None:
            response = clients.https(address, 443, host, path, tls)
            assert response.status == 200, (
                f"{host}{path} via {address}: {response.status} {response.body[:200]!r}"
            )
            assert clients.tls_version(address, 443, host, tls) == "TLSv1.3"
            tls12 = trusted(stack)
            tls12.maximum_version = ssl.TLSVersion.TLSv1_2
            if tls12_accepted:  # the nginx edge: TLS 1.2 for clients without 1.3
                assert clients.tls_version(address, 443, host, tls12) == "TLSv1.2"
            else:
                with pytest.raises(ssl.SSLError):  # TLS 1.3 only (Pingoo's rustls config)
                    clients.tls_version(address, 443, host, tls12)

        add(url, f"GET {path} on 443", health)
    for url in endpoints["udpTrackers"]:
        host, port = url.split("/")[2].split(":")

        def udp(address: str, port: int = int(port)) -> None:
            source = stack.net.client_v6 if ":" in address else stack.net.client_v4
            clients.udp_announce(
                address, port, source, hashlib.sha1(b"probe").digest(), b"-E2E000-probe0000000", 6881
            )

        add(url, f"BEP 15 connect+announce on udp/{port}", udp)
    # The edge's redirects (edge.redirects): the port-80 one, and the pingoo edge's 443 -> :3443.
    for redirect in edge["redirects"]:
        parts = urllib.parse.urlsplit(redirect["url"])
        host = parts.hostname or ""

        def follow(
            address: str, parts: urllib.parse.SplitResult = parts, location: str = redirect["location"]
        ) -> None:
            if parts.scheme == "http":
                response = clients.plain_http(address, parts.port or 80, parts.hostname or "", "/x")
            else:
                response = clients.https(address, parts.port or 443, parts.hostname or "", "/x", tls)
            assert response.status == 308, f"{parts.geturl()} via {address}: {response.status}"
            assert response.header("Location") == f"{location}x", response.header("Location")

        what = "port 80 redirect" if parts.scheme == "http" else f"443 redirect to {redirect['location']}"
        add(redirect["url"], what, follow)
    return by_name


def family_failures(
    stack: Stack, only_name: str = "", only_what: str = ""
) -> tuple[list[str], dict[str, str]]:
    """Run every endpoint check over every family its name has an A/AAAA record for:
    (passed, failed -> error)."""
    done, failed = [], {}
    checks = endpoint_checks(stack)
    for record in stack.plan["outputs"]["dnsRecords"]:
        if record["type"] not in ("A", "AAAA") or only_name not in record["name"]:
            continue
        assert record["name"] in checks, f"{record['name']} is advertised but the tier has no check for it"
        for what, check in checks[record["name"]]:
            if only_what not in what:
                continue
            label = f"{record['name']} {record['type']} {what}"
            try:
                stack.client_ns(check, record["value"])
                done.append(label)
            except (AssertionError, OSError) as error:
                failed[label] = repr(error)
    return done, failed


def assert_families(stack: Stack, only_name: str = "", only_what: str = "") -> list[str]:
    done, failed = family_failures(stack, only_name, only_what)
    assert not failed, f"endpoints that do not answer over an advertised family: {failed}"
    return done


def edge_answers_ipv6(stack: Stack) -> bool:
    def probe() -> bool:
        try:
            socket.create_connection((stack.net.server_v6, 443), timeout=5).close()
            return True
        except OSError:
            return False

    answers: bool = stack.client_ns(probe)
    return answers


# --- Checks -------------------------------------------------------------------------------------------


def assert_published_ports_answer(stack: Stack, name: str, timeout: float = 60) -> None:
    """Every published TCP port accepts a connection from the client over each family it is published
    on (`0.0.0.0` over IPv4, `::` over IPv6): a port published on `::` for a process that listens on
    IPv4 only is refused, because Docker DNATs IPv6 to the container's IPv6 address. (A container
    without a health check, like Pingoo's, is ready when its port is.)"""
    published = {
        (int(p["external"]), p.get("ip", "0.0.0.0"))
        for p in stack.inputs[name].get("ports", [])
        if p.get("protocol", "tcp") == "tcp"
    }
    for port, ip in sorted(published):
        address = stack.net.server_v6 if ":" in ip else stack.net.server_v4

        def accepts(port: int = port, address: str = address) -> bool:
            with socket.create_connection((address, port), timeout=3):
                return True

        wait_for(
            lambda: stack.client_ns(accepts),
            60,
            f"{name}: published port {port} on {ip} to accept",
            interval=1,
        )


def test_every_container_running_healthy_with_exact_capabilities(stack: Stack) -> None:
    for name in stack.inputs:
        assert_running_and_healthy(stack, name)
        assert_published_ports_answer(stack, name)
    for name in stack.inputs:
        assert_capabilities(stack, name)
        assert_memory_limit(stack, name)


def test_every_endpoint_answers_over_every_advertised_family(stack: Stack) -> None:
    done, failed = family_failures(stack)
    assert not failed, f"endpoints that do not answer over an advertised family: {failed}"
    families = {line.split()[1] for line in done}
    assert families == {"A", "AAAA"}, done


def test_http_tracker_announce_and_scrape_record_the_clients_own_address(stack: Stack) -> None:
    wait_for_edge_certificates(stack)
    tls = trusted(stack)
    url = stack.plan["outputs"]["endpoints"]["httpTrackers"][0]
    host = url.split("/")[2]
    net = stack.net
    families = [(net.server_v4, net.client_v4, net.client_v4_alt)]
    if edge_answers_ipv6(stack):  # else: the known defect, reported by the family check
        families.append((net.server_v6, net.client_v6, net.client_v6_alt))
    for family, (server, first, second) in enumerate(families):

        def announce(source: str, peer: bytes, server: str = server) -> dict[bytes, Any]:
            response = clients.https(
                server, 443, host, clients.announce_query(INFO_HASH, peer, 6881), tls, source=source
            )
            assert response.status == 200, f"announce: {response.status} {response.body[:300]!r}"
            reply = bdecode(response.body)
            assert isinstance(reply, dict) and b"failure reason" not in reply, reply
            return reply

        # A peer per client and family: the tracker keys peers by peer_id.
        stack.client_ns(announce, first, b"-E2E000-httpfirst00%d" % family)
        reply = stack.client_ns(announce, second, b"-E2E000-httpsecond0%d" % family)
        peers = [(p[b"ip"].decode(), p[b"port"]) for p in reply[b"peers"]]
        assert (first, 6881) in peers, (
            f"the tracker recorded {peers}, expected {first} (the client's own address)"
        )
    scrape = stack.client_ns(
        lambda: clients.https(
            net.server_v4, 443, host, f"/scrape?info_hash={urllib.parse.quote_from_bytes(INFO_HASH)}", tls
        )
    )
    assert scrape.status == 200
    files = bdecode(scrape.body)[b"files"]
    assert files[INFO_HASH][b"incomplete"] >= 2 * len(families), files


def test_udp_tracker_bep15_from_ipv4_and_ipv6_lists_the_other_peer_in_the_familys_format(
    stack: Stack,
) -> None:
    url = stack.plan["outputs"]["endpoints"]["udpTrackers"][0]
    port = int(url.split("/")[2].split(":")[1])
    info_hash = hashlib.sha1(b"udp e2e").digest()
    net = stack.net
    for server, first, second, size in (
        (net.server_v4, net.client_v4, net.client_v4_alt, 6),
        (net.server_v6, net.client_v6, net.client_v6_alt, 18),
    ):
        stack.client_ns(clients.udp_announce, server, port, first, info_hash, b"-E2E000-udpfirst0000", 6881)
        _i, _l, _s, peers, got = stack.client_ns(
            clients.udp_announce, server, port, second, info_hash, b"-E2E000-udpsecond000", 6882
        )
        assert got == size
        assert (first, 6881) in peers, f"UDP reply to {second} lists {peers}, expected {first}:6881"


def test_tracker_api_through_443_health_stats_with_token_and_refused_without(stack: Stack) -> None:
    wait_for_edge_certificates(stack)
    tls = trusted(stack)
    api = stack.plan["outputs"]["endpoints"]["trackerApi"]
    host = api["base"].split("/")[2]
    token = stack.secrets["trackerAdminToken"]
    servers = [stack.net.server_v4] + ([stack.net.server_v6] if edge_answers_ipv6(stack) else [])
    for server in servers:
        health = stack.client_ns(clients.https, server, 443, host, "/api/health_check", tls)
        assert health.status == 200, health
        stats = stack.client_ns(clients.https, server, 443, host, f"/api/v1/stats?token={token}", tls)
        assert stats.status == 200, stats.status
        assert "torrents" in json.loads(stats.body)
        refused = stack.client_ns(clients.https, server, 443, host, "/api/v1/stats", tls)
        assert refused.status != 200 and b"nauthorized" in refused.body, (refused.status, refused.body[:200])


def grafana_host(stack: Stack) -> tuple[str, int]:
    """Grafana's name and port (3443 with the pingoo edge, 443 with the nginx edge)."""
    parts = urllib.parse.urlsplit(stack.plan["outputs"]["endpoints"]["grafana"])
    return parts.hostname or "", parts.port or 443


def pebble_root(stack: Stack) -> str:
    context = client_context(stack.pebble_ca.cert)
    context.check_hostname = False

    def fetch() -> str:
        url = f"https://{stack.net.client_v4}:{PEBBLE_MGMT_PORT}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            data: bytes = response.read()
            return data.decode()

    root: str = stack.client_ns(fetch)
    return root


def served_certificate(stack: Stack) -> tuple[ssl.SSLContext, bytes]:
    host, port = grafana_host(stack)
    tls = client_context(cadata=pebble_root(stack))
    der = wait_for(
        lambda: stack.client_ns(lambda: clients.peer_cert_der(stack.net.server_v4, port, host, tls)),
        240,
        f"nginx to serve the pebble-issued certificate on :{port} (certbot HTTP-01 through port 80)",
        interval=3,
    )
    return tls, der


def test_grafana_name_acme_webroot_certbot_issuance_hsts_and_websocket(stack: Stack) -> None:
    host, port = grafana_host(stack)
    for server in (stack.net.server_v4, stack.net.server_v6):
        challenge = stack.client_ns(
            clients.plain_http, server, 80, host, "/.well-known/acme-challenge/e2e-missing"
        )
        assert challenge.status == 404, (
            f"the ACME webroot must answer directly (404 for a missing token), got {challenge.status}"
        )
    tls, _der = served_certificate(stack)
    live = stack.scratch / "letsencrypt/live/grafana/fullchain.pem"
    assert live.is_file()
    netloc = authority(host, port)
    for server in (stack.net.server_v4, stack.net.server_v6):
        response = stack.client_ns(clients.https, server, port, netloc, "/api/health", tls)
        assert response.status == 200, response
        assert (response.header("Strict-Transport-Security") or "").startswith("max-age="), response.headers
        status, echoed = stack.client_ns(
            clients.websocket_echo, server, port, netloc, f"https://{netloc}", tls, b"e2e hello"
        )
        assert " 101 " in status and echoed == b"e2e hello", (status, echoed)
        status, _ = stack.client_ns(
            clients.websocket_echo, server, port, netloc, "https://evil.example", tls, b"x"
        )
        assert " 403 " in status, f"a foreign Origin must be refused, got {status}"


def prometheus_targets(stack: Stack) -> list[dict[str, Any]]:
    return prometheus_api(stack, "/api/v1/targets")["activeTargets"]  # type: ignore[no-any-return]


def prometheus_api(stack: Stack, path: str) -> Any:
    container = stack.container("prometheus")
    networks = container.attrs["NetworkSettings"]["Networks"]
    address = next(n["IPAddress"] for n in networks.values() if n["IPAddress"])

    def fetch() -> Any:
        with urllib.request.urlopen(f"http://{address}:9090{path}", timeout=10) as response:
            return json.loads(response.read())["data"]

    return stack.server_ns(fetch)


def prometheus_query(stack: Stack, query: str) -> list[dict[str, Any]]:
    container = stack.container("prometheus")
    networks = container.attrs["NetworkSettings"]["Networks"]
    address = next(n["IPAddress"] for n in networks.values() if n["IPAddress"])

    def fetch() -> list[dict[str, Any]]:
        url = f"http://{address}:9090/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=10) as response:
            result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
            return result

    return list(stack.server_ns(fetch))


PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "delta", "deriv", "topk", "bottomk",
    "histogram_quantile", "abs", "clamp_min", "clamp_max", "time", "vector", "scalar", "label_replace",
    "absent", "changes", "resets", "sort", "sort_desc", "avg_over_time", "max_over_time", "min_over_time",
    "sum_over_time", "count_over_time", "last_over_time", "timestamp", "round", "ceil", "floor", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    # Whole identifiers only (`rate(` must not match as `rat`), and not function calls.
    names = set(re.findall(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", text))
    return {n for n in names if n.lower() not in PROMQL_WORDS}


# Metrics the container layer cannot produce, each with where it is proven instead.
NOT_IN_E2E = {
    # Written by the host's backup job (a systemd unit the tier does not run); tests/test_offsite.py
    # runs the rendered job and proves the real node exporter reads it.
    "torrust_backup_last_success_timestamp_seconds": "host backup job",
}


def used_metrics(files: Path) -> dict[str, set[str]]:
    """metric name -> the dashboard/rule files using it."""
    found: dict[str, set[str]] = {}

    def walk(node: Any, origin: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query") and isinstance(value, str):
                    for name in metric_names(value):
                        found.setdefault(name, set()).add(origin)
                else:
                    walk(value, origin)
        elif isinstance(node, list):
            for item in node:
                walk(item, origin)

    for path in sorted(files.rglob("*")):
        if path.suffix == ".json" and "dashboards" in path.parts:
            walk(json.loads(path.read_text()), str(path.relative_to(files)))
        elif path.suffix in (".yml", ".yaml") and "rules" in path.name:
            walk(yaml.safe_load(path.read_text()), str(path.relative_to(files)))
    return found


def test_prometheus_scrapes_every_target_and_stores_every_metric_dashboards_use(stack: Stack) -> None:
    config = yaml.safe_load(
        (stack.files / "prometheus/etc/prometheus/prometheus.yml").read_text().replace("<", "_")
    )
    # A static `instance` label (the tracker_stats job names the tracker, not the exporter) is the
    # series' instance.
    targets = {
        (job["job_name"], sc.get("labels", {}).get("instance", target))
        for job in config["scrape_configs"]
        for sc in job.get("static_configs", [])
        for target in sc["targets"]
    }
    assert targets

    def all_up() -> bool:
        up = {
            (r["metric"]["job"], r["metric"]["instance"]): r["value"][1]
            for r in prometheus_query(stack, "up")
        }
        missing = {t: up.get(t) for t in targets if up.get(t) != "1"}
        assert not missing or time.monotonic() < deadline, f"targets not up: {missing}"
        return not missing

    deadline = time.monotonic() + 120
    try:
        wait_for(all_up, 125, "every scrape target up == 1", interval=3)
    except AssertionError as error:
        errors = {
            t["labels"]["job"]: t["lastError"] for t in prometheus_targets(stack) if t["health"] != "up"
        }
        raise AssertionError(f"{error}\nscrape errors: {errors}") from None
    wanted = {name: files for name, files in used_metrics(stack.files).items() if name not in NOT_IN_E2E}
    assert wanted, "no metric found in the dashboards"
    absent = {
        name: sorted(origins)
        for name, origins in wanted.items()
        if not prometheus_query(stack, f"count({{__name__={json.dumps(name)}}})")
    }
    assert not absent, f"metrics the dashboards/rules use that Prometheus has not stored: {absent}"


def test_backends_on_internal_networks_cannot_reach_outside(stack: Stack) -> None:
    target = f"('{stack.net.client_v4}', {PEBBLE_PORT})"
    probe = f"import socket; socket.create_connection({target}, timeout=5).close()"
    checked = []
    for name, inputs in stack.inputs.items():
        internal = all(stack.networks[n["name"]].get("internal") for n in inputs.get("networksAdvanced", []))
        result = stack.container(name).exec_run(["python3", "-c", probe], user="65534")
        if internal:
            assert result.exit_code != 0, f"{name} (internal networks only) reached {target}"
            checked.append(name)
        else:
            assert result.exit_code == 0, (
                f"control: {name} (public network) cannot reach {target}: {result.output!r}"
            )
    assert checked, "no container is on internal networks only"


def effective_tracker_config(stack: Stack) -> dict[str, Any]:
    """The configuration the real tracker runs with: v3.0.0 logs it as JSON at startup, secrets masked
    (torrust-tracker v3.0.0 src/bootstrap/app.rs: `tracing::info!("Configuration:\\n{}", ...to_json())`)."""

    def parse() -> dict[str, Any] | None:
        logs = stack.container("tracker").logs().decode(errors="replace")
        marker = logs.rfind("Configuration:")
        if marker < 0:
            return None
        start = logs.index("{", marker)
        config, _end = json.JSONDecoder().raw_decode(logs[start:])
        assert isinstance(config, dict)
        return config

    result: dict[str, Any] = wait_for(parse, 60, "the tracker to log its configuration", interval=1)
    return result


def unknown_keys(rendered: Any, effective: Any, path: str = "") -> list[str]:
    """Keys of the rendered TOML that the running tracker does not have (v3.0.0 ignores unknown keys
    silently: its configuration structs have no `deny_unknown_fields`)."""
    if isinstance(rendered, dict):
        if not isinstance(effective, dict):
            return [path]
        found = []
        for key, value in rendered.items():
            if key not in effective:
                found.append(f"{path}.{key}".lstrip("."))
            else:
                found += unknown_keys(value, effective[key], f"{path}.{key}")
        return found
    if isinstance(rendered, list) and isinstance(effective, list) and len(rendered) == len(effective):
        return [
            k
            for i, (r, e) in enumerate(zip(rendered, effective, strict=True))
            for k in unknown_keys(r, e, f"{path}[{i}]")
        ]
    return []


def assert_tracker_knows_every_key(stack: Stack, toml_text: str) -> None:
    rendered = tomllib.loads(toml_text)
    missing = unknown_keys(rendered, effective_tracker_config(stack))
    assert not missing, (
        f"tracker.toml keys the running tracker v3.0.0 does not know (silently ignored): {missing}"
    )


def tracker_toml(inputs: dict[str, Any]) -> str:
    upload = next(u for u in inputs["uploads"] if u["file"].endswith("tracker.toml"))
    text: str = upload["content"]
    return text


def test_the_running_tracker_knows_every_key_of_the_rendered_tracker_toml(stack: Stack) -> None:
    assert_tracker_knows_every_key(stack, tracker_toml(stack.inputs["tracker"]))


def tracker_db(stack: Stack) -> Path:
    toml = stack.files / "tracker/etc/torrust/tracker/tracker.toml"
    path = re.search(r'^path = "(/var/lib/torrust/tracker/[^"]+)"', toml.read_text(), re.M)
    assert path, "tracker.toml has no database path"
    volume = next(
        v for v in stack.inputs["tracker"]["volumes"] if path.group(1).startswith(v["containerPath"] + "/")
    )
    return (
        Path(stack.replay.host_path(volume["hostPath"])) / path.group(1)[len(volume["containerPath"]) + 1 :]
    )


def completed_rows(db: Path) -> dict[str, int]:
    assert db.is_file(), f"the tracker database {db} is not on the data volume"
    result = subprocess.run(
        ["sqlite3", str(db), "SELECT info_hash, completed FROM torrents;"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return {line.split("|")[0]: int(line.split("|")[1]) for line in result.stdout.splitlines() if line}


def test_stop_signal_and_timeout_clean_exit_integrity_and_recreate_keeps_data(stack: Stack) -> None:
    """Note: tracker v3.0.0 persists completed counts (persistent_torrent_completed_stat) but never
    loads them at startup (torrust-tracker v3.0.0 src/core/mod.rs: `load_torrents_from_database` is
    only called from a test), so a restarted tracker serves 0 until new completions; the rows
    themselves stay on the volume, which is what is checked here."""
    url = stack.plan["outputs"]["endpoints"]["udpTrackers"][0]
    port = int(url.split("/")[2].split(":")[1])
    net = stack.net
    for event, left in ((2, 1000), (1, 0)):  # started as a leecher, then completed (BEP 15 events)
        stack.client_ns(
            clients.udp_announce, net.server_v4, port, net.client_v4, COMPLETED_HASH,
            b"-E2E000-completed000", 6881, event, left,
        )  # fmt: skip
    _seeders, completed, _ = stack.client_ns(
        clients.udp_scrape, net.server_v4, port, net.client_v4, COMPLETED_HASH
    )
    assert completed >= 1
    inputs = stack.inputs["tracker"]
    container = stack.container("tracker")
    assert container.attrs["Config"]["StopSignal"] == inputs["stopSignal"]
    assert container.attrs["Config"]["StopTimeout"] == int(inputs["stopTimeout"])
    started = time.monotonic()
    container.stop()  # no timeout argument: the daemon applies the container's own (the plan's) StopTimeout
    took = time.monotonic() - started
    state = stack.container("tracker").attrs["State"]
    assert took < inputs["stopTimeout"] - 1, f"the tracker needed {took:.1f} s: killed at the stop timeout"
    assert state["ExitCode"] == 0 and not state["OOMKilled"], state
    assert "Torrust successfully shutdown" in stack.container("tracker").logs(tail=20).decode(
        errors="replace"
    )
    db = tracker_db(stack)
    check = subprocess.run(
        ["sqlite3", str(db), "PRAGMA integrity_check;"], capture_output=True, text=True, timeout=30
    )
    assert check.stdout.strip() == "ok", check
    rows = completed_rows(db)
    assert rows.get(COMPLETED_HASH.hex()) == completed, rows
    stack.recreate("tracker")
    assert_running_and_healthy(stack, "tracker")
    assert completed_rows(db) == rows, "re-creating the tracker changed its database"


def test_recreating_nginx_certbot_keeps_the_certificate(stack: Stack) -> None:
    _tls, before = served_certificate(stack)
    stack.recreate("nginx-certbot")
    assert_running_and_healthy(stack, "nginx-certbot")
    _tls, after = served_certificate(stack)
    assert after == before, "re-created nginx-certbot serves a different certificate: certbot state was lost"


def edge_certificates(stack: Stack) -> dict[str, bytes]:
    """name:port -> the DER certificate served there, for every TLS endpoint of the edge."""
    wait_for_edge_certificates(stack)
    tls = trusted(stack)
    return {
        f"{e['name']}:{e['port']}": stack.client_ns(
            lambda e=e: clients.peer_cert_der(stack.net.server_v4, e["port"], e["name"], tls)
        )
        for e in edge_output(stack)["https"]
    }


def test_the_nginx_edge_serves_its_certificates_when_the_acme_server_is_down_at_a_restart(
    stack: Stack,
) -> None:
    """Pingoo exits at start when the ACME directory is unreachable (research: pingoo-v0.14.7-measured
    row h); the nginx edge restarts with certbot failing and keeps serving every name's certificate
    from the volume, over both families (jonasal/nginx-certbot: nginx starts before certbot runs and
    a config is only disabled while its certificate files are missing)."""
    if edge_output(stack)["kind"] != "nginx":
        pytest.skip("the nginx edge's behaviour (E2E_STACK=nginx-example)")
    before = edge_certificates(stack)
    saved = dict(stack.extra_env["nginx-certbot"])
    try:
        # A closed port of the client namespace ("the internet"): the directory does not answer.
        stack.extra_env["nginx-certbot"]["CERTBOT_STAGING_URL"] = f"https://{stack.net.client_v4}:9/dir"
        stack.recreate("nginx-certbot")
        assert_running_and_healthy(stack, "nginx-certbot")
        closed = f"{stack.net.client_v4}:9/dir"

        def certbot_failed() -> bool:
            logs = stack.container("nginx-certbot").logs().decode(errors="replace")
            # The image's loop names the directory it asks; certbot then reports the failure.
            return closed in logs and "error" in logs.split(closed, 1)[1].lower()

        wait_for(certbot_failed, 120, "certbot to fail against the closed directory", interval=3)
        assert edge_certificates(stack) == before, "the edge stopped serving a certificate"
        for server in (stack.net.server_v4, stack.net.server_v6):
            for endpoint in edge_output(stack)["https"]:
                der = stack.client_ns(
                    clients.peer_cert_der, server, endpoint["port"], endpoint["name"], trusted(stack)
                )
                assert der == before[f"{endpoint['name']}:{endpoint['port']}"], (server, endpoint)
    finally:
        stack.extra_env["nginx-certbot"] = saved
        stack.recreate("nginx-certbot")
        assert_running_and_healthy(stack, "nginx-certbot")


# --- Mutations: the checks above must fail when the plan is broken this way ------------------------------


def mutated(stack: Stack, name: str, change: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = json.loads(json.dumps(stack.inputs[name]))
    change(inputs)
    return inputs


def test_mutation_dropped_capability_fails_the_health_check(stack: Stack) -> None:
    def drop_setuid(inputs: dict[str, Any]) -> None:
        inputs["capabilities"]["adds"].remove("SETUID")

    try:
        stack.recreate("tracker", mutated(stack, "tracker", drop_setuid))
        with pytest.raises(AssertionError):
            assert_running_and_healthy(stack, "tracker", timeout=60)
    finally:
        stack.recreate("tracker")
        assert_running_and_healthy(stack, "tracker")


def test_mutation_unknown_tracker_toml_key_fails_the_tracker(stack: Stack) -> None:
    def add_key(inputs: dict[str, Any]) -> None:
        upload = next(u for u in inputs["uploads"] if u["file"].endswith("tracker.toml"))
        upload["content"] = upload["content"].replace("[core]\n", "[core]\nmade_up_key = true\n", 1)

    inputs = mutated(stack, "tracker", add_key)
    try:
        stack.recreate("tracker", inputs)
        assert_running_and_healthy(stack, "tracker")  # v3.0.0 starts anyway: the key is ignored
        with pytest.raises(AssertionError, match="made_up_key"):
            assert_tracker_knows_every_key(stack, tracker_toml(inputs))
    finally:
        stack.recreate("tracker")
        assert_running_and_healthy(stack, "tracker")


def test_mutation_ipv6_published_port_on_an_ipv4_only_listener_fails_the_port_check(stack: Stack) -> None:
    """nginx still publishes 80 on `::` but listens on IPv4 only: Docker DNATs IPv6 clients to the
    container's IPv6 address, where nothing listens, and the published-port check says so."""

    def ipv4_only(inputs: dict[str, Any]) -> None:
        upload = next(u for u in inputs["uploads"] if u["file"].endswith("redirector.conf"))
        upload["content"] = re.sub(r"^\s*listen \[::\]:80[^;]*;\n", "", upload["content"], flags=re.M)

    try:
        stack.recreate("nginx-certbot", mutated(stack, "nginx-certbot", ipv4_only))
        assert_running_and_healthy(stack, "nginx-certbot")
        host = grafana_host(stack)[0]
        done, failed = family_failures(stack, only_name=host, only_what="port 80")
        # IPv4 still answers (with the nginx edge the name has an AAAA too, which now fails) ...
        assert f"{host} A port 80 redirect" in done, (done, failed)
        assert all(" AAAA " in label for label in failed), (done, failed)
        with pytest.raises(AssertionError, match=r"published port 80 on :: to accept"):
            assert_published_ports_answer(stack, "nginx-certbot", timeout=10)  # ... IPv6 on 80 does not
    finally:
        stack.recreate("nginx-certbot")
        assert_running_and_healthy(stack, "nginx-certbot")


def test_timings_are_printed(stack: Stack) -> None:
    print("e2e timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in stack.timings.items()))
    assert os.environ.get("E2E_MAX_WARM_SECONDS") is None or stack.timings["setup total"] < float(
        os.environ["E2E_MAX_WARM_SECONDS"]
    )
