"""The edge setting under mocks: the nginx edge (edge.kind nginx) as the engine receives it, the
hybrid unchanged, the validation of the setting, and the example stack.

Assertions read what the program registers (RecordingMonitor) and outputs; the nginx edge's files
are proven on a real nginx by tests/test_real_nginx_edge.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import layout
from core.settings import ConfigError, load_settings
from services.edge import edge_facts
from services.monitoring.render import render_prometheus
from tests.conftest import REPO_ROOT, Deploy, dev_config
from tests.test_program import (
    CONTAINER,
    EVERYONE,
    FIREWALL,
    container,
    envs,
    network_names,
    published,
    uploads,
)
from tools.program import ProgramRun

COMMAND = "command:remote:Command"
IMAGE = "docker:index/remoteImage:RemoteImage"
NGINX_EXAMPLE = yaml.safe_load((REPO_ROOT / "Pulumi.nginx-example.yaml").read_text())["config"]


def nginx_changes(**extra: Any) -> dict[str, Any]:
    """The dev stack turned into the nginx edge (what Pulumi.nginx-example.yaml holds)."""
    images = dict(dev_config()["images"])
    images.pop("pingoo")
    return {"edge": {"kind": "nginx", **extra}, "images": images}


@pytest.fixture
def nginx_run(deploy: Deploy) -> ProgramRun:
    return deploy(nginx_changes())


def test_the_example_stack_is_the_dev_stack_with_the_nginx_edge() -> None:
    dev = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())["config"]
    expected = copy.deepcopy(dev)
    del expected["torrust-hybrid-tls:images"]["pingoo"]
    expected["torrust-hybrid-tls:edge"] = {"kind": "nginx"}
    assert expected == NGINX_EXAMPLE


def test_pingoo_is_not_deployed_and_nginx_owns_80_and_443_on_both_families(nginx_run: ProgramRun) -> None:
    names = {r.name for r in nginx_run.monitor.by_type(CONTAINER)}
    assert layout.PINGOO not in names and "pingoo-image" not in {
        r.name for r in nginx_run.monitor.by_type(IMAGE)
    }
    both = ("0.0.0.0", "::")
    assert published(nginx_run, layout.NGINX) == {(p, p, "tcp", ip) for p in (80, 443) for ip in both}
    rules = nginx_run.monitor.by_type(FIREWALL)[0].inputs["rules"]
    public = {(r["protocol"], r["port"], tuple(r["sourceIps"])) for r in rules if r["port"] != "22"}
    assert public == {
        ("tcp", "80", tuple(EVERYONE)),
        ("tcp", "443", tuple(EVERYONE)),
        ("udp", "6969", tuple(EVERYONE)),
    }, "3443 stays closed with the nginx edge"


def test_the_nginx_edge_reaches_the_tracker_at_its_own_fixed_address(nginx_run: ProgramRun) -> None:
    assert network_names(nginx_run, layout.NGINX) == {
        "torrust-edge": layout.NGINX_EDGE_IP,
        "torrust-grafana-backend": layout.NGINX_BACKEND_IP,
        "torrust-tracker-backend": layout.NGINX_TRACKER_BACKEND_IP,
    }
    assert layout.NGINX_TRACKER_BACKEND_IP not in (layout.PINGOO_BACKEND_IP, layout.TRACKER_BACKEND_IP)


def test_the_nginx_edge_uploads_its_main_config_and_one_server_file_per_name(nginx_run: ProgramRun) -> None:
    files = uploads(nginx_run, layout.NGINX)
    assert set(files) == {
        layout.NGINX_MAIN_FILE,
        layout.NGINX_REDIRECTOR_FILE,
        layout.NGINX_DEFAULT_TLS_FILE,
        f"{layout.NGINX_USER_CONF_DIR}/tracker-api.conf",
        f"{layout.NGINX_USER_CONF_DIR}/http-tracker-1.conf",
        f"{layout.NGINX_USER_CONF_DIR}/grafana.conf",
    }
    main = files[layout.NGINX_MAIN_FILE]
    assert "worker_rlimit_nofile 65536;" in main and "worker_connections 4096;" in main
    inputs = container(nginx_run, layout.NGINX).inputs
    assert inputs["memory"] == 512 and inputs["ulimits"] == [{"name": "nofile", "soft": 65536, "hard": 65536}]
    api = files[f"{layout.NGINX_USER_CONF_DIR}/tracker-api.conf"]
    assert f"server {layout.TRACKER_BACKEND_IP}:{layout.TRACKER_API_PORT};" in api
    assert "ssl_certificate_key /etc/letsencrypt/live/tracker-api/privkey.pem;" in api


def test_limits_follow_edge_nginx(deploy: Deploy) -> None:
    run = deploy(
        nginx_changes(nginx={"requestsPerSecond": 25, "requestBurst": 300, "connectionsPerAddress": 9})
    )
    files = uploads(run, layout.NGINX)
    assert "rate=25r/s;" in files[layout.NGINX_MAIN_FILE]
    site = files[f"{layout.NGINX_USER_CONF_DIR}/http-tracker-1.conf"]
    assert "limit_req zone=edge_req burst=300 nodelay;" in site and "limit_conn edge_conn 9;" in site


def test_pingoo_is_stopped_before_nginx_takes_443(nginx_run: ProgramRun) -> None:
    """Switching a live stack: Pulumi deletes the old Pingoo only at the end, so a Command stops it
    first and the nginx container waits for that Command (and the Command for the DNS gate)."""
    handover = nginx_run.monitor.one(COMMAND, "nginx-handover")
    gate = nginx_run.monitor.one(COMMAND, "dns-gate-wait")
    assert "docker stop --time 25 pingoo" in handover.inputs["create"]
    assert handover.inputs["addPreviousOutputInEnv"] is False
    assert gate.urn in handover.options["dependsOn"]
    assert handover.urn in container(nginx_run, layout.NGINX).options["dependsOn"]


def test_the_hybrid_starts_pingoo_after_nginx(deploy: Deploy) -> None:
    """Switching back: nginx-certbot (which held 443) is replaced first, then Pingoo is created."""
    run = deploy()
    assert container(run, layout.NGINX).urn in container(run, layout.PINGOO).options["dependsOn"]
    assert not [r for r in run.monitor.by_type(COMMAND) if r.name == "nginx-handover"]


def test_dns_gives_every_name_an_aaaa_and_caa_http01(nginx_run: ProgramRun) -> None:
    records = {(r["name"], r["type"]): r["value"] for r in nginx_run.outputs["dnsRecords"]}
    for name in ("api.example.com", "http1.example.com", "grafana.example.com", "udp1.example.com"):
        assert records[(name, "AAAA")] == "2001:db8:10::1", name
    for name in ("api.example.com", "http1.example.com", "grafana.example.com"):
        assert records[(name, "CAA")] == '0 issue "letsencrypt.org; validationmethods=http-01"', name
    gate = nginx_run.monitor.one(COMMAND, "dns-gate-wait").inputs["create"]
    assert " api.example.com,AAAA,2001:db8:10::1 " in gate
    assert """ 'api.example.com,CAA,0 issue "letsencrypt.org; validationmethods=http-01"'""" in gate


def test_grafana_is_on_443_with_the_nginx_edge(nginx_run: ProgramRun) -> None:
    env = envs(nginx_run, layout.GRAFANA)
    assert "GF_SERVER_ROOT_URL=https://grafana.example.com/" in env
    assert "GF_LIVE_ALLOWED_ORIGINS=https://grafana.example.com" in env
    assert nginx_run.outputs["endpoints"]["grafana"] == "https://grafana.example.com/"


def test_probes_follow_the_edge(nginx_run: ProgramRun) -> None:
    config = dev_config()
    config.update(nginx_changes())
    settings = load_settings("dev", config.get)
    # prometheus.yml is a secret upload (it carries the admin token): rendered here as the program does.
    prometheus = yaml.safe_load(render_prometheus(settings, edge_facts(settings), "tok"))
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in prometheus["scrape_configs"]
        if job["job_name"].startswith("blackbox")
    }
    assert targets["blackbox_tls"] == [
        "api.example.com:443",
        "http1.example.com:443",
        "grafana.example.com:443",
    ]
    assert targets["blackbox_http"] == ["https://grafana.example.com/api/health"]
    assert targets["blackbox_http_port80"] == ["http://grafana.example.com/"]
    assert "blackbox_http_redirects" not in targets
    rules = uploads(nginx_run, layout.PROMETHEUS)["/etc/prometheus/rules/torrust.yml"]
    assert "docker logs nginx-certbot)" in rules and "through nginx did not answer" in rules


def test_the_edge_output_names_what_the_doctor_checks(nginx_run: ProgramRun) -> None:
    edge = nginx_run.outputs["edge"]
    assert edge["kind"] == "nginx" and edge["ipv6"] is True and edge["tlsVersions"] == ["TLSv1.2", "TLSv1.3"]
    assert [(e["name"], e["port"], e["challenge"]) for e in edge["https"]] == [
        ("api.example.com", 443, "http-01"),
        ("http1.example.com", 443, "http-01"),
        ("grafana.example.com", 443, "http-01"),
    ]
    assert json.dumps(edge)  # plain data


def test_the_plan_of_the_example_stack(tmp_path: Path) -> None:
    from tests.test_offsite_program import run_plan

    result = run_plan("nginx-example", tmp_path / "plan")
    assert result.returncode == 0, result.stderr
    assert "torrust:index:PingooEdge" not in result.stdout
    assert "command:remote:Command  nginx-handover" in result.stdout
    assert '"grafana": "https://grafana.example.com/"' in result.stdout


# --- Validation: the key, what is wrong, the fix -----------------------------------------------------


def refused(changes: dict[str, Any]) -> str:
    config = dev_config()
    config.update(changes)
    with pytest.raises(ConfigError) as error:
        load_settings("dev", config.get)
    return str(error.value)


def test_an_unknown_edge_is_refused_with_the_choices() -> None:
    message = refused({"edge": {"kind": "traefik"}})
    assert "torrust-hybrid-tls:edge.kind: 'traefik' is not an edge this program deploys" in message
    assert "'pingoo'" in message and "'nginx'" in message
    assert "fix: pulumi config set --path 'edge.kind' nginx" in message


def test_a_plain_edge_value_says_how_to_set_it() -> None:
    message = refused({"edge": "nginx"})
    assert "torrust-hybrid-tls:edge: must be an object with named settings, got str" in message
    assert "fix: pulumi config rm edge && pulumi config set --path 'edge.kind' nginx" in message


def test_a_pingoo_image_with_the_nginx_edge_is_refused() -> None:
    images = dict(dev_config()["images"], pingoo="pingooio/pingoo:0.14.8")
    message = refused({"edge": {"kind": "nginx"}, "images": images})
    assert (
        "torrust-hybrid-tls:images.pingoo: 'pingooio/pingoo:0.14.8' is only used by the Pingoo edge"
        in message
    )
    assert "fix: pulumi config rm --path 'images.pingoo'" in message


def test_the_default_pingoo_image_is_not_an_error_with_the_nginx_edge() -> None:
    """Pulumi.yaml declares images with their defaults and the CLI fills them in for a stack that has
    no `images`: the default value cannot be told from one the operator set."""
    config = dev_config()
    config["edge"] = {"kind": "nginx"}
    assert load_settings("dev", config.get).images.pingoo == "pingooio/pingoo:0.14.7"


def test_nginx_limits_with_the_pingoo_edge_are_refused() -> None:
    message = refused({"edge": {"kind": "pingoo", "nginx": {"requestsPerSecond": 5}}})
    assert (
        "torrust-hybrid-tls:edge.nginx: is only used by the nginx edge, and edge.kind is 'pingoo'" in message
    )
    assert "fix: pulumi config rm --path 'edge.nginx'" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("requestsPerSecond", 0, "greater than or equal to 1"),
        ("connectionsPerAddress", 5000, "less than or equal to 4096"),
    ],
)
def test_nginx_limits_are_bounded(key: str, value: int, expected: str) -> None:
    message = refused({"edge": {"kind": "nginx", "nginx": {key: value}}})
    assert f"torrust-hybrid-tls:edge.nginx.{key}:" in message and expected in message


def test_the_doctor_checks_what_the_edge_output_names(nginx_run: ProgramRun) -> None:
    """tools/doctor.py plans its checks from the outputs: every edge name on 443 over IPv4 and, with
    an AAAA, IPv6; Grafana on its own port (443 with the nginx edge)."""
    from tools import doctor

    target = doctor.Target(
        outputs=nginx_run.outputs, resolver=("127.0.0.1", 53), resolve={}, ports={}, ca_bundle=None,
        issuer="x", timeout=1, min_days=1,
    )  # fmt: skip
    planned = {(kind, where) for kind, where, _check in doctor.plan_checks(target)}
    names = ("api.example.com", "http1.example.com", "grafana.example.com")
    assert {("tls 443", n) for n in names} <= planned
    assert {("tls 443 ipv6", n) for n in names} <= planned
    assert ("grafana 443", "grafana.example.com") in planned
    assert not [kind for kind, _where in planned if kind == "grafana 3443"]


def test_switching_a_live_stack_replaces_what_the_readme_says(deploy: Deploy, tmp_path: Path) -> None:
    """The switch pingoo -> nginx as `make plan-diff` predicts it from the providers' replacement rules
    (tools/plan_diff.py): exactly the edge, Grafana, Prometheus, the blackbox exporter and the DNS gate
    are replaced, Pingoo goes, the handover and the AAAA records come, the firewall and the CAA records
    change in place, and the server, the volume, the IPs and the tracker are untouched."""
    from tools import plan_diff
    from tools.plan import write_plan

    hybrid, nginx = tmp_path / "hybrid", tmp_path / "nginx"
    managed = {"dns": {"zone": "example.com", "ttl": 300}}
    write_plan("dev", deploy(managed), hybrid)
    write_plan("dev", deploy({**managed, **nginx_changes()}), nginx)
    (base, base_files), (head, head_files) = plan_diff.read_rendered(hybrid), plan_diff.read_rendered(nginx)
    result = plan_diff.diff_plans(base, head, base_files, head_files)
    actions: dict[str, set[str]] = {}
    for resource in result.resources:
        actions.setdefault(resource.action, set()).add(resource.name)
    assert actions["replace"] == {
        "nginx-certbot",
        "grafana",
        "prometheus",
        "blackbox-exporter",
        "dns-gate-wait",
    }
    assert actions["delete"] == {"pingoo", "pingoo-image"}  # the container, its image, its component
    assert {"nginx-handover", "dns-aaaa-api", "dns-aaaa-http1", "dns-aaaa-grafana"} <= actions["create"]
    assert {"host-firewall", "dns-caa-api", "dns-caa-http1", "dns-caa-grafana"} <= actions["update"]
    untouched = {"host-server", "host-volume", "host-ipv4", "host-ipv6", "tracker", "docker-ready"}
    assert not untouched & set().union(*actions.values())
    assert not result.server_replacements
