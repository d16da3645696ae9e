"""The DNS gate script, for real: dig against a real DNS server (pebble-challtestsrv) on loopback.

The script is the one the program runs on the server (components/dns_gate.py builds the command
line); only the resolvers and their port differ (DNS_GATE_RESOLVERS / DNS_GATE_PORT).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.dns_gate import SCRIPT, gate_command
from core.dns import expected_addresses, expected_caa
from core.edgefacts import EdgeFacts
from core.settings import StackSettings, load_settings
from services.edge import edge_facts
from tests.conftest import dev_config
from tests.realtools import LOOPBACK4, ChallTestSrv, require_tool

IPV4 = "203.0.113.10"
IPV6 = "2001:db8:10::1"


def settings_for_test() -> StackSettings:
    config = dev_config()
    return load_settings("dev", config.get)


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[ChallTestSrv]:
    require_tool("dig")
    server = ChallTestSrv(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def run_gate(
    server: ChallTestSrv, specs: list[str], timeout: int = 4, interval: int = 1
) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        DNS_GATE_TIMEOUT=str(timeout),
        DNS_GATE_RESOLVERS=f"{LOOPBACK4} {LOOPBACK4}",
        DNS_GATE_PORT=str(server.dns_port),
        DNS_GATE_INTERVAL=str(interval),
        DNS_GATE_TTL="300",
    )
    return subprocess.run(
        ["bash", str(SCRIPT), *specs], capture_output=True, text=True, env=env, timeout=timeout + 60
    )


def dev_settings_and_edge() -> tuple[StackSettings, EdgeFacts]:
    settings = settings_for_test()
    return settings, edge_facts(settings)


def expected(edge_kind: str = "pingoo") -> list[tuple[str, str, str]]:
    config = dev_config()
    if edge_kind != "pingoo":
        config["edge"] = {"kind": edge_kind}
        config["images"].pop("pingoo", None)
    settings = load_settings("dev", config.get)
    edge = edge_facts(settings)
    return expected_addresses(settings, edge, IPV4, IPV6) + expected_caa(settings, edge)


def dev_specs(edge_kind: str = "pingoo") -> list[str]:
    return [f"{n},{t},{v}" for n, t, v in expected(edge_kind)]


def publish_all(server: ChallTestSrv, edge_kind: str = "pingoo", caa: bool = True) -> None:
    for name, type_, value in expected(edge_kind):
        if value and (caa or type_ != "CAA"):
            server.set_record(name, type_, value)


def test_script_passes_shellcheck() -> None:
    shellcheck = require_tool("shellcheck")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_gate_passes_when_every_name_resolves_to_the_primary_ips(dns: ChallTestSrv) -> None:
    publish_all(dns)
    result = run_gate(dns, dev_specs())
    assert result.returncode == 0, result.stderr
    assert "all 11 records correct" in result.stdout


def test_gate_waits_for_records_that_appear_later(dns: ChallTestSrv) -> None:
    timer = threading.Timer(2.5, publish_all, args=(dns,))
    timer.start()
    started = time.monotonic()
    try:
        result = run_gate(dns, dev_specs(), timeout=30)
    finally:
        timer.cancel()
    assert result.returncode == 0, result.stderr
    assert "problem(s)" in result.stdout and time.monotonic() - started >= 2.5


def test_gate_times_out_listing_what_is_missing_and_the_records_to_create(dns: ChallTestSrv) -> None:
    publish_all(dns)
    dns.clear("http1.example.com", "A")
    started = time.monotonic()
    result = run_gate(dns, dev_specs(), timeout=3)
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert "http1.example.com A: missing at resolver 127.0.0.1 (want 203.0.113.10)" in result.stderr
    assert "api.example.com" not in result.stderr.split("Create exactly")[0]
    assert "  http1.example.com. 300 IN A 203.0.113.10" in result.stderr
    assert "  udp1.example.com. 300 IN AAAA 2001:db8:10::1" in result.stderr


def test_gate_refuses_a_wrong_address_and_a_stray_aaaa(dns: ChallTestSrv) -> None:
    publish_all(dns)
    dns.clear("api.example.com", "A")
    dns.set_record("api.example.com", "A", "198.51.100.99")
    dns.set_record("grafana.example.com", "AAAA", "2001:db8:99::1")
    result = run_gate(dns, dev_specs(), timeout=2)
    assert result.returncode == 1
    assert "api.example.com A: resolver 127.0.0.1 answers 198.51.100.99, want 203.0.113.10" in result.stderr
    assert "grafana.example.com AAAA: resolver 127.0.0.1 answers 2001:db8:99::1, but no AAAA" in result.stderr


def test_gate_reports_a_resolver_that_does_not_answer(dns: ChallTestSrv) -> None:
    publish_all(dns)
    env_specs = dev_specs()[:1]
    dns.stop()
    result = run_gate(dns, env_specs, timeout=1)
    assert result.returncode == 1
    assert "resolver 127.0.0.1 did not answer" in result.stderr


def test_program_command_runs_the_same_script(dns: ChallTestSrv) -> None:
    """The exact command line the program sends over SSH, run locally with the resolvers redirected."""
    publish_all(dns)
    line = gate_command(settings_for_test(), edge_facts(settings_for_test()), IPV4, IPV6)
    assert "DNS_GATE_RESOLVERS='1.1.1.1 8.8.8.8 9.9.9.9'" in line and "DNS_GATE_TIMEOUT=1800" in line
    local = line.replace("DNS_GATE_RESOLVERS='1.1.1.1 8.8.8.8 9.9.9.9'", f"DNS_GATE_RESOLVERS={LOOPBACK4}")
    local = local.replace("DNS_GATE_TIMEOUT=1800", f"DNS_GATE_PORT={dns.dns_port} DNS_GATE_TIMEOUT=5")
    result = subprocess.run(["bash", "-c", local], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_gate_passes_without_any_caa_record(dns: ChallTestSrv) -> None:
    """No CAA anywhere up to the root: every CA may issue by every method (RFC 8659)."""
    publish_all(dns, caa=False)
    result = run_gate(dns, dev_specs())
    assert result.returncode == 0, result.stderr


def test_gate_waits_for_a_caa_that_forbids_the_edges_method(dns: ChallTestSrv) -> None:
    """A switch to the nginx edge with manual DNS: the Pingoo-era CAA (tls-alpn-01 only) still on the
    name would refuse certbot's HTTP-01, so the gate fails and names the record to create."""
    publish_all(dns, "nginx", caa=False)
    dns.set_record("http1.example.com", "CAA", '0 issue "letsencrypt.org; validationmethods=tls-alpn-01"')
    result = run_gate(dns, dev_specs("nginx"), timeout=2)
    assert result.returncode == 1, result.stdout
    assert (
        "http1.example.com CAA: resolver 127.0.0.1 answers, at http1.example.com, 0 issue "
        '"letsencrypt.org; validationmethods=tls-alpn-01", which does not let letsencrypt.org issue by '
        "http-01" in result.stderr
    ), result.stderr
    assert (
        'http1.example.com. 300 IN CAA 0 issue "letsencrypt.org; validationmethods=http-01"' in result.stderr
    )
    # The other names have no CAA at all: allowed.
    assert "api.example.com CAA" not in result.stderr


def test_gate_climbs_to_the_parents_caa(dns: ChallTestSrv) -> None:
    """No CAA at the name but one at the zone apex: that one applies (RFC 8659 §3)."""
    publish_all(dns, "nginx", caa=False)
    dns.set_record("example.com", "CAA", '0 issue "letsencrypt.org; validationmethods=tls-alpn-01"')
    result = run_gate(dns, dev_specs("nginx"), timeout=2)
    assert result.returncode == 1
    assert "api.example.com CAA: resolver 127.0.0.1 answers, at example.com," in result.stderr
    dns.clear("example.com", "CAA")
    dns.set_record("example.com", "CAA", '0 issue "letsencrypt.org"')  # every method
    assert run_gate(dns, dev_specs("nginx")).returncode == 0


def test_gate_accepts_the_records_it_asks_for_on_both_edges(dns: ChallTestSrv) -> None:
    for kind in ("pingoo", "nginx"):
        publish_all(dns, kind)
        result = run_gate(dns, dev_specs(kind))
        assert result.returncode == 0, (kind, result.stderr)
        for name, type_, _value in expected(kind):
            dns.clear(name, type_)  # challtestsrv adds to a name's records: start the next edge afresh
