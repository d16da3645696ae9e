"""Rendered files, parsed and checked without Pulumi (rendering is pure: settings in, text out)."""

from __future__ import annotations

import json
import tomllib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from core import layout, rendering
from core.settings import TRACKER_RELEASES, StackSettings, load_settings
from services.edge import edge_facts
from services.edge import render as edge_render
from services.monitoring import render as monitoring_render
from services.tracker import render as tracker_render
from tests.conftest import dev_config
from tests.oracles.pingoo_check import check_pingoo_config, config_warnings, route_request


def settings(**changes: Any) -> StackSettings:
    config = dev_config()
    config.update(changes)
    return load_settings("dev", config.get)


def two_http_trackers() -> StackSettings:
    domains = dev_config()["domains"]
    domains["httpTrackers"] = ["http1.example.com", "http2.example.com"]
    return settings(domains=domains)


def test_rendered_pingoo_passes_the_schema_checker() -> None:
    config = check_pingoo_config(edge_render.render_pingoo(settings()))
    assert config_warnings(config) == []


@pytest.mark.parametrize(
    ("host", "service"),
    [
        ("api.example.com", "tracker_api"),
        ("api.example.com:443", "tracker_api"),
        ("http1.example.com", "http_tracker_1"),
        ("http1.example.com:443", "http_tracker_1"),
        ("http2.example.com", "http_tracker_2"),
        ("http2.example.com:443", "http_tracker_2"),
        ("grafana.example.com", "grafana_redirect"),
        ("grafana.example.com:443", "grafana_redirect"),
        ("unknown.example.com", None),
        ("api.example.com:8443", None),
        ("example.com", None),
        ("203.0.113.10", None),
    ],
)
def test_each_public_name_reaches_exactly_its_upstream(host: str, service: str | None) -> None:
    config = check_pingoo_config(edge_render.render_pingoo(two_http_trackers()))
    for path in ("/announce", "/", "/api/v1/stats", "/health_check"):
        assert route_request(config, "https", host, path) == service
    if service is not None:
        expected = {
            "tracker_api": "http://172.30.2.10:1212",
            "http_tracker_1": "http://172.30.2.10:7070",
            "http_tracker_2": "http://172.30.2.10:7071",
            "grafana_redirect": "http://172.30.0.20:8080",
        }[service]
        upstreams = config.services[service].upstreams
        assert [u.url for u in upstreams] == [expected]
        assert all(u.static_ip for u in upstreams)  # never re-resolved: survives backend re-creation


def test_pingoo_upstreams_match_the_tracker_config() -> None:
    s = two_http_trackers()
    services = yaml.safe_load(edge_render.render_pingoo(s))["services"]
    toml = tomllib.loads(tracker_render.render_tracker_toml(s))
    http_ports = [int(t["bind_address"].rsplit(":", 1)[1]) for t in toml["http_trackers"]]
    assert services["tracker_api"]["http_proxy"] == [
        f"http://{layout.TRACKER_BACKEND_IP}:{layout.TRACKER_API_PORT}"
    ]
    assert toml["http_api"]["bind_address"].endswith(f":{layout.TRACKER_API_PORT}")
    assert [services[f"http_tracker_{i + 1}"]["http_proxy"][0].rsplit(":", 1)[1] for i in range(2)] == [
        str(port) for port in http_ports
    ]
    assert services["grafana_redirect"]["http_proxy"] == [
        f"http://{layout.NGINX_EDGE_IP}:{layout.NGINX_REDIRECT_PORT}"
    ]


def test_tracker_toml() -> None:
    toml = tomllib.loads(tracker_render.render_tracker_toml(settings()))
    assert toml["metadata"] == {
        "app": "torrust-tracker",
        "purpose": "configuration",
        "schema_version": "2.0.0",
    }
    assert toml["core"]["net"] == {"on_reverse_proxy": True}
    assert toml["core"]["private"] is False
    assert toml["core"]["database"] == {"driver": "sqlite3", "path": layout.TRACKER_DATABASE_PATH}
    assert toml["udp_trackers"] == [{"bind_address": "[::]:6969"}]
    assert toml["http_trackers"] == [{"bind_address": "0.0.0.0:7070"}]
    assert toml["http_api"] == {"bind_address": "0.0.0.0:1212"}
    assert toml["health_check_api"] == {"bind_address": "127.0.0.1:1313"}
    assert "access_tokens" not in toml["http_api"]


def test_private_tracker_toml() -> None:
    tracker = dev_config()["tracker"]
    tracker["private"] = True
    assert (
        tomllib.loads(tracker_render.render_tracker_toml(settings(tracker=tracker)))["core"]["private"]
        is True
    )


def test_prometheus_scrapes_the_stats_through_json_exporter_with_the_token() -> None:
    # v3.0.0 has no metrics endpoint: one job, json_exporter's /probe fetching the JSON stats.
    config = yaml.safe_load(
        monitoring_render.render_prometheus(settings(), edge_facts(settings()), "tok-123")
    )
    # The only job that carries the token (the others are probes, the node exporter, Alertmanager).
    jobs = [job for job in config["scrape_configs"] if "tok-123" in json.dumps(job)]
    assert [job["job_name"] for job in jobs] == ["tracker_stats"]
    job = jobs[0]
    assert job["metrics_path"] == "/probe"
    assert job["params"] == {
        "module": ["tracker_stats"],
        "target": ["http://tracker:1212/api/v1/stats?token=tok-123"],
    }
    assert job["static_configs"] == [
        {"targets": ["json-exporter:7979"], "labels": {"instance": "tracker:1212"}}
    ]
    modules = yaml.safe_load(monitoring_render.json_exporter_config())["modules"]
    assert set(modules) == {job["params"]["module"][0]}


def test_prometheus_target_carries_the_token_verbatim() -> None:
    # Printable characters the settings accept (all but URL_QUERY_SPECIAL), the plan's placeholder too.
    token = "Ab3-._~<plan-placeholder:x>!@$'()*,/?" + "x" * 20
    config = yaml.safe_load(monitoring_render.render_prometheus(settings(), edge_facts(settings()), token))
    target = urlsplit(config["scrape_configs"][0]["params"]["target"][0])
    assert parse_qs(target.query) == {"token": [token]}


def test_every_accepted_tracker_release_has_a_template() -> None:
    for tag, schema in TRACKER_RELEASES.items():
        text = tracker_render.render_tracker_toml(settings(images={"tracker": f"torrust/tracker:{tag}"}))
        assert tomllib.loads(text)["metadata"]["schema_version"] == schema
        assert f"torrust/tracker {tag}" in text


def test_grafana_datasource_uid_matches_the_dashboards() -> None:
    datasource = yaml.safe_load(monitoring_render.render_grafana_datasource(settings()))["datasources"][0]
    assert datasource["uid"] == layout.GRAFANA_DATASOURCE_UID
    assert datasource["url"] == "http://prometheus:9090"
    for path, content in monitoring_render.grafana_static_files().items():
        if path.endswith(".json"):
            assert f'"uid": "{layout.GRAFANA_DATASOURCE_UID}"' in content.replace('"uid":"', '"uid": "')
    provider = yaml.safe_load(
        monitoring_render.grafana_static_files()[layout.GRAFANA_DASHBOARD_PROVIDER_FILE]
    )
    assert provider["providers"][0]["options"]["path"] == layout.GRAFANA_DASHBOARDS_DIR


def test_cloud_init_is_valid_yaml_with_the_host_key() -> None:
    private = "-----BEGIN OPENSSH PRIVATE KEY-----\nline1\nline2\n-----END OPENSSH PRIVATE KEY-----\n"
    text = rendering.render_cloud_init(settings(), private, "ssh-ed25519 AAAAkey host\n", "4242")
    document = yaml.safe_load(text)
    assert document["ssh_keys"]["ed25519_private"] == private
    assert document["ssh_keys"]["ed25519_public"] == "ssh-ed25519 AAAAkey host"
    assert document["ssh_deletekeys"] is True and document["ssh_genkeytypes"] == ["ed25519"]
    sshd = next(f for f in document["write_files"] if f["path"].startswith("/etc/ssh/sshd_config.d/"))
    assert "PasswordAuthentication no" in sshd["content"]
    sysctl = next(f for f in document["write_files"] if f["path"].startswith("/etc/sysctl.d/"))
    assert f"net.netfilter.nf_conntrack_max = {rendering.CONNTRACK_MAX}" in sysctl["content"]
    installs = [cmd for cmd in document["runcmd"] if cmd[0] == "install"]
    owners = {cmd[-1]: (cmd[5], cmd[7]) for cmd in installs}
    assert owners[layout.GRAFANA_DATA_DIR] == ("472", "0")
    assert owners[layout.TRACKER_LIB_DIR] == ("1000", "1000")
    assert owners[layout.PROMETHEUS_DATA_DIR] == ("65534", "65534")
    assert ["systemctl", "enable", "--now", "unattended-upgrades"] in document["runcmd"]
    assert "unattended-upgrades" in document["packages"]


def test_docker_daemon_config_is_json() -> None:
    text = rendering.render_cloud_init(settings(), "k", "p", "4242")
    daemon_file = next(
        f for f in yaml.safe_load(text)["write_files"] if f["path"] == "/etc/docker/daemon.json"
    )
    assert json.loads(daemon_file["content"]) == rendering.DOCKER_DAEMON


def test_templates_fail_on_missing_variables() -> None:
    from jinja2 import UndefinedError

    with pytest.raises(UndefinedError):
        edge_render.TEMPLATES.render("pingoo/pingoo.yml.j2", stack="dev")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    http_proxy: [", "    http_prxy: [", "http_prxy: unknown key"),
        ("  acme:\n", "  acme:\n    contact: admin@example.com\n", "contact: unknown key"),
        ('"api.example.com", "http1', '"API.example.com", "http1', "acme"),
    ],
)
def test_mutated_rendered_pingoo_is_rejected(old: str, new: str, message: str) -> None:
    """A typo in a copy of the rendered pingoo.yml fails (Pingoo itself would ignore it silently)."""
    from tests.oracles.pingoo_check import PingooConfigError

    rendered = edge_render.render_pingoo(settings())
    assert old in rendered
    with pytest.raises(PingooConfigError, match=message):
        check_pingoo_config(rendered.replace(old, new, 1))
