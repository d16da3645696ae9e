"""DNS as code under mocks: the RRsets, rDNS, the gate's place before the edges, and the settings."""

from __future__ import annotations

from typing import Any

import pytest

from core.dns import records, server_ipv6
from core.settings import ConfigError, load_settings
from services.edge import edge_facts
from tests.conftest import Deploy, dev_config
from tools.mocks import EXAMPLE_IPV4, EXAMPLE_IPV6, EXAMPLE_ZONE_NAMESERVERS, Registration
from tools.program import ProgramRun

RRSET = "hcloud:index/zoneRrset:ZoneRrset"
RDNS = "hcloud:index/rdns:Rdns"
COMMAND = "command:remote:Command"
CONTAINER = "docker:index/container:Container"


def rrsets(run: ProgramRun) -> dict[tuple[str, str], Registration]:
    return {(r.inputs["name"], r.inputs["type"]): r for r in run.monitor.by_type(RRSET)}


def values(registration: Registration) -> list[str]:
    return [record["value"] for record in registration.inputs["records"]]


def test_records_in_the_zone(deploy: Deploy) -> None:
    run = deploy()
    sets = rrsets(run)
    assert set(sets) == {
        ("api", "A"), ("http1", "A"), ("grafana", "A"), ("udp1", "A"), ("udp1", "AAAA"), ("udp1", "TXT"),
        ("api", "CAA"), ("http1", "CAA"), ("grafana", "CAA"),
    }  # fmt: skip
    for registration in sets.values():
        assert registration.inputs["zone"] == "example.com" and registration.inputs["ttl"] == 300
    assert values(sets[("api", "A")]) == [EXAMPLE_IPV4]
    assert values(sets[("udp1", "AAAA")]) == [EXAMPLE_IPV6]
    assert values(sets[("udp1", "TXT")]) == ['"BITTORRENT UDP:6969"']
    # RFC 8657: each certificate name allows exactly its ACME client's method.
    tls_alpn = '0 issue "letsencrypt.org; validationmethods=tls-alpn-01"'
    assert values(sets[("api", "CAA")]) == values(sets[("http1", "CAA")]) == [tls_alpn]
    assert values(sets[("grafana", "CAA")]) == [
        '0 issue "letsencrypt.org; validationmethods=tls-alpn-01,http-01"'
    ]
    assert run.outputs["dns"]["nameservers"] == list(EXAMPLE_ZONE_NAMESERVERS)
    assert "udp1.example.com. 300 IN AAAA 2001:db8:10::1" in run.outputs["dns"]["recordsCreated"]
    assert len(run.outputs["dns"]["recordsCreated"]) == 9


def test_apex_name_is_explicit(deploy: Deploy) -> None:
    domains = dev_config()["domains"] | {"trackerApi": "example.com"}
    sets = rrsets(deploy({"domains": domains}))
    assert ("@", "A") in sets and ("@", "CAA") in sets
    assert all(r.inputs.get("name") for r in sets.values())


def test_records_follow_the_primary_ips_not_the_server(deploy: Deploy) -> None:
    run = deploy()
    server = run.monitor.one("hcloud:index/server:Server", "host-server").urn
    for registration in [*run.monitor.by_type(RRSET), *run.monitor.by_type(RDNS)]:
        assert server not in registration.options["dependsOn"], registration.name


def test_reverse_dns_for_both_primary_ips(deploy: Deploy) -> None:
    run = deploy()
    rdns = {r.name: r.inputs for r in run.monitor.by_type(RDNS)}
    assert rdns["dns-rdns-ipv4"]["ipAddress"] == EXAMPLE_IPV4
    # The /64's first address, which the server uses (mock network 2001:db8:10::/64).
    assert rdns["dns-rdns-ipv6"]["ipAddress"] == "2001:db8:10::1"
    assert {r["dnsPtr"] for r in rdns.values()} == {"udp1.example.com"}
    assert all(isinstance(r["primaryIpId"], (int, float)) for r in rdns.values())
    overridden = deploy({"dns": {"zone": "example.com", "reverseName": "tracker.example.com"}})
    assert {r.inputs["dnsPtr"] for r in overridden.monitor.by_type(RDNS)} == {"tracker.example.com"}


def test_without_dns_settings_dns_stays_manual_but_the_gate_runs(deploy: Deploy) -> None:
    run = deploy({"dns": None})
    assert not run.monitor.by_type(RRSET) and not run.monitor.by_type(RDNS)
    assert run.monitor.one(COMMAND, "dns-gate-wait")
    assert run.outputs["dns"]["recordsCreated"] == [] and run.outputs["dns"]["managed"] is False
    # The records to create by hand are still listed.
    assert {(r["name"], r["type"]) for r in run.outputs["dnsRecords"]} >= {("api.example.com", "CAA")}


def test_unmanaged_zone_keeps_rdns_only(deploy: Deploy) -> None:
    run = deploy({"dns": {"zone": "example.com", "manageRecords": False}})
    assert not run.monitor.by_type(RRSET) and len(run.monitor.by_type(RDNS)) == 2


def test_edges_wait_for_the_gate_and_the_gate_for_docker(deploy: Deploy) -> None:
    run = deploy()
    gate = run.monitor.one(COMMAND, "dns-gate-wait")
    ready = run.monitor.one(COMMAND, "docker-ready")
    assert ready.urn in gate.options["dependsOn"]
    create = gate.inputs["create"]
    assert "DNS_GATE_TIMEOUT=1800" in create and " api.example.com,A,203.0.113.10 " in create
    assert " api.example.com,AAAA, " in create and " udp1.example.com,AAAA,2001:db8:10::1 " in create
    # The CAA that applies to each certificate name must allow the edge's method (Pingoo: tls-alpn-01).
    assert """ 'api.example.com,CAA,0 issue "letsencrypt.org; validationmethods=tls-alpn-01"' """ in create
    assert create.endswith(
        """ 'grafana.example.com,CAA,0 issue "letsencrypt.org; validationmethods=tls-alpn-01,http-01"'"""
    )
    for name in ("pingoo", "nginx-certbot"):
        assert gate.urn in run.monitor.one(CONTAINER, name).options["dependsOn"], name
    for name in ("tracker", "prometheus", "grafana"):
        assert gate.urn not in run.monitor.one(CONTAINER, name).options["dependsOn"], name


def test_gate_can_be_skipped(deploy: Deploy) -> None:
    run = deploy({"dns": {"zone": "example.com", "skipGate": True}})
    assert [r.name for r in run.monitor.by_type(COMMAND)] == ["docker-ready", "backups-install"]
    assert run.outputs["dns"]["gate"] == "skipped"


def test_names_outside_the_zone_are_refused_with_the_key(deploy: Deploy) -> None:
    config = dev_config()
    config["domains"]["httpTrackers"] = ["http1.example.com", "tracker.example.org"]
    config["dns"] = {"zone": "example.com"}
    with pytest.raises(ConfigError) as error:
        load_settings("dev", config.get)
    message = str(error.value)
    assert (
        "torrust-hybrid-tls:domains.httpTrackers[1]: 'tracker.example.org' is outside the DNS zone" in message
    )
    assert "fix: pulumi config set --path 'domains.httpTrackers[1]' <name>.example.com" in message
    assert "httpTrackers[0]" not in message
    with pytest.raises(Exception, match="outside the DNS zone"):
        deploy({"domains": config["domains"], "dns": config["dns"]})


@pytest.mark.parametrize(
    ("dns", "key"),
    [
        ({"zone": "Example.com"}, "dns.zone"),
        ({"ttl": 5}, "dns.ttl"),
        ({"resolvers": ["one.one.one.one"]}, "dns.resolvers"),
        ({"gateTimeout": 10}, "dns.gateTimeout"),
        ({"zones": "example.com"}, "dns.zones"),
    ],
)
def test_bad_dns_settings_name_the_key(dns: dict[str, Any], key: str) -> None:
    config = dev_config() | {"dns": dns}
    with pytest.raises(ConfigError, match=f"torrust-hybrid-tls:{key}"):
        load_settings("dev", config.get)


def test_ipv6_is_the_first_address_of_the_primary_network() -> None:
    assert server_ipv6("2a01:4f8:c012:1234::/64") == "2a01:4f8:c012:1234::1"
    assert server_ipv6("2a01:4f8:c012:1234::") == "2a01:4f8:c012:1234::1"


def test_udp_name_shared_with_pingoo_gets_no_aaaa() -> None:
    config = dev_config()
    config["domains"]["udpTracker"] = "api.example.com"
    settings = load_settings("dev", config.get)
    assert not [
        r for r in records(settings, edge_facts(settings), EXAMPLE_IPV4, EXAMPLE_IPV6) if r.type == "AAAA"
    ]
