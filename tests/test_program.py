"""The whole program under mocks: every resource, the inputs that matter, options and outputs.

Assertions read what the engine receives (RecordingMonitor), so a wrong port, a missing dependency
or a leaked secret shows up here exactly as `pulumi up` would send it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import layout
from services.tracker.tracker import ADMIN_TOKEN_ENV
from tests.conftest import PASSWORD, TOKEN, Deploy
from tools.mocks import (
    EXAMPLE_HOST_PUBLIC_KEY,
    EXAMPLE_IPV4,
    EXAMPLE_IPV6,
    Registration,
    masked,
)
from tools.mocks import (
    GENERATED_PASSWORD as GENERATED,
)
from tools.program import ProgramRun

CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
SERVER = "hcloud:index/server:Server"
PRIMARY_IP = "hcloud:index/primaryIp:PrimaryIp"
VOLUME = "hcloud:index/volume:Volume"
FIREWALL = "hcloud:index/firewall:Firewall"
EVERYONE = ["0.0.0.0/0", "::/0"]


def container(run: ProgramRun, name: str) -> Registration:
    return run.monitor.one(CONTAINER, name)


def published(run: ProgramRun, name: str) -> set[tuple[int, int, str, str]]:
    ports = container(run, name).inputs.get("ports") or []
    return {(int(p["internal"]), int(p["external"]), p["protocol"], p["ip"]) for p in ports}


def uploads(run: ProgramRun, name: str) -> dict[str, Any]:
    return {u["file"]: u["content"] for u in container(run, name).inputs.get("uploads") or []}


def envs(run: ProgramRun, name: str) -> list[Any]:
    result: list[Any] = container(run, name).inputs.get("envs") or []
    return result


def network_names(run: ProgramRun, name: str) -> dict[str, str | None]:
    return {n["name"]: n.get("ipv4Address") for n in container(run, name).inputs["networksAdvanced"]}


def secret_value(value: Any) -> Any:
    assert isinstance(value, dict) and "value" in value, f"expected a secret, got {value!r}"
    return value["value"]


def test_resource_inventory(deploy: Deploy) -> None:
    run = deploy()
    counts: dict[str, int] = {}
    for registration in run.monitor.registrations:
        counts[registration.type] = counts.get(registration.type, 0) + 1
    assert counts == {
        "torrust:index:Secrets": 1,
        "torrust:index:Host": 1,
        "hcloud:index/sshKey:SshKey": 1,
        "hcloud:index/primaryIp:PrimaryIp": 2,
        "hcloud:index/volume:Volume": 1,
        "hcloud:index/volumeAttachment:VolumeAttachment": 1,
        FIREWALL: 1,
        "tls:index/privateKey:PrivateKey": 1,
        SERVER: 1,
        "torrust:index:DockerHost": 1,
        "command:remote:Command": 3,
        "torrust:index:Backups": 1,
        "torrust:index:Dns": 1,
        "hcloud:index/zoneRrset:ZoneRrset": 9,
        "hcloud:index/rdns:Rdns": 2,
        "torrust:index:DnsGate": 1,
        "pulumi:providers:docker": 1,
        NETWORK: 9,
        "torrust:index:PingooEdge": 1,
        "torrust:index:NginxCertbot": 1,
        "torrust:index:Tracker": 1,
        "torrust:index:Monitoring": 1,
        "torrust:index:BlackboxExporter": 1,
        "torrust:index:NodeExporter": 1,
        "torrust:index:Alertmanager": 1,
        "docker:index/remoteImage:RemoteImage": 9,
        CONTAINER: 9,
    }
    # Every non-component resource sits under a component (nothing at the stack root).
    for registration in run.monitor.registrations:
        if registration.custom:
            assert registration.parent.split("::")[2].split("$")[-1].startswith("torrust:index:"), (
                registration.urn
            )


def test_firewall_allows_exactly_the_public_surface(deploy: Deploy) -> None:
    run = deploy()
    rules = run.monitor.by_type(FIREWALL)[0].inputs["rules"]
    seen = {(r["direction"], r["protocol"], r["port"], tuple(r["sourceIps"])) for r in rules}
    assert seen == {
        ("in", "tcp", "22", ("198.51.100.0/24", "2001:db8:1234::/48")),
        ("in", "tcp", "80", tuple(EVERYONE)),
        ("in", "tcp", "443", ("0.0.0.0/0",)),  # Pingoo listens on IPv4 only
        ("in", "tcp", "3443", tuple(EVERYONE)),
        ("in", "udp", "6969", tuple(EVERYONE)),
    }
    server = run.monitor.by_type(SERVER)[0]
    firewall_id = run.monitor.resources[run.monitor.by_type(FIREWALL)[0].urn].id
    assert server.inputs["firewallIds"] == [int(firewall_id)]


def test_udp_ports_follow_config(deploy: Deploy) -> None:
    run = deploy({"tracker": {"udpPorts": [6969, 6868]}})
    rules = run.monitor.by_type(FIREWALL)[0].inputs["rules"]
    assert {r["port"] for r in rules if r["protocol"] == "udp"} == {"6969", "6868"}
    assert {(p[1], p[2]) for p in published(run, "tracker")} == {(6969, "udp"), (6868, "udp")}
    toml = uploads(run, "tracker")[layout.TRACKER_CONFIG_FILE]
    assert 'bind_address = "[::]:6868"' in toml and 'bind_address = "[::]:6969"' in toml


def test_published_ports_per_container(deploy: Deploy) -> None:
    run = deploy()
    both = ("0.0.0.0", "::")
    # Pingoo cannot listen on IPv6 (services/edge/pingoo.py): 443 is published on IPv4 only.
    assert published(run, "pingoo") == {(443, 443, "tcp", "0.0.0.0")}
    assert published(run, "nginx-certbot") == {(p, p, "tcp", ip) for p in (80, 3443) for ip in both}
    assert published(run, "tracker") == {(6969, 6969, "udp", ip) for ip in both}
    # The API, health check, Prometheus and Grafana are never published.
    assert published(run, "prometheus") == set()
    assert published(run, "grafana") == set()


def test_networks_isolate_backends(deploy: Deploy) -> None:
    run = deploy()
    networks = {r.inputs["name"]: r.inputs for r in run.monitor.by_type(NETWORK)}
    assert {name: spec["internal"] for name, spec in networks.items()} == {
        "torrust-edge": False,
        "torrust-udp": False,
        "torrust-tracker-backend": True,
        "torrust-grafana-backend": True,
        "torrust-metrics": True,
        "torrust-dashboards": True,
        "torrust-monitoring": True,
        "torrust-probes": False,
        "torrust-notify": False,
    }
    assert networks["torrust-edge"]["ipv6"] is True and networks["torrust-udp"]["ipv6"] is True
    assert network_names(run, "pingoo") == {
        "torrust-edge": layout.PINGOO_EDGE_IP,
        "torrust-tracker-backend": layout.PINGOO_BACKEND_IP,
    }
    assert network_names(run, "nginx-certbot") == {
        "torrust-edge": layout.NGINX_EDGE_IP,
        "torrust-grafana-backend": layout.NGINX_BACKEND_IP,
    }
    assert network_names(run, "tracker") == {
        "torrust-udp": None,
        "torrust-tracker-backend": layout.TRACKER_BACKEND_IP,
        "torrust-metrics": None,
    }
    assert set(network_names(run, "grafana")) == {"torrust-grafana-backend", "torrust-dashboards"}
    assert set(network_names(run, "prometheus")) == {
        "torrust-metrics",
        "torrust-dashboards",
        "torrust-monitoring",
    }
    # json_exporter: only on the internal metrics network (Prometheus -> exporter -> tracker API).
    assert network_names(run, "json-exporter") == {"torrust-metrics": None}
    assert "ports" not in container(run, "json-exporter").inputs
    # Only edge containers share a network with the backends they proxy, and no backend has egress.
    for backend in ("grafana", "prometheus", "json-exporter"):
        assert not set(network_names(run, backend)) & {"torrust-edge", "torrust-udp"}


def test_fixed_upstream_addresses_are_inside_their_subnets(deploy: Deploy) -> None:
    import ipaddress

    run = deploy()
    subnets = {r.inputs["name"]: r.inputs["ipamConfigs"][0]["subnet"] for r in run.monitor.by_type(NETWORK)}
    for name in ("pingoo", "nginx-certbot", "tracker", "grafana", "prometheus"):
        for network, address in network_names(run, name).items():
            if address:
                assert ipaddress.ip_address(address) in ipaddress.ip_network(subnets[network]), (
                    name,
                    network,
                )


def test_pingoo_upload_routes_every_name(deploy: Deploy) -> None:
    import yaml

    run = deploy()
    files = uploads(run, "pingoo")
    assert set(files) == {"/etc/pingoo/pingoo.yml"}
    config = yaml.safe_load(files["/etc/pingoo/pingoo.yml"])
    assert config["listeners"] == {
        "https": {
            "address": "https://0.0.0.0:443",
            "services": ["tracker_api", "http_tracker_1", "grafana_redirect"],
        }
    }
    assert config["tls"]["acme"]["domains"] == ["api.example.com", "http1.example.com", "grafana.example.com"]
    assert config["tls"]["acme"]["directory_url"] == layout.LETSENCRYPT_STAGING
    assert config["services"]["tracker_api"]["http_proxy"] == ["http://172.30.2.10:1212"]
    assert config["services"]["http_tracker_1"]["http_proxy"] == ["http://172.30.2.10:7070"]
    assert config["services"]["grafana_redirect"]["http_proxy"] == ["http://172.30.0.20:8080"]
    assert container(run, "pingoo").inputs["volumes"] == [
        {"hostPath": layout.PINGOO_TLS_DIR, "containerPath": "/etc/pingoo/tls"}
    ]


def test_production_acme_switches_both_edges(deploy: Deploy) -> None:
    run = deploy({"acme": {"email": "admin@example.com", "staging": False}})
    assert (
        f"directory_url: {layout.LETSENCRYPT_PRODUCTION}" in uploads(run, "pingoo")["/etc/pingoo/pingoo.yml"]
    )
    assert "STAGING=0" in envs(run, "nginx-certbot")
    staging = deploy()
    assert "STAGING=1" in envs(staging, "nginx-certbot")
    assert "CERTBOT_EMAIL=admin@example.com" in envs(staging, "nginx-certbot")


def test_nginx_uploads_proxy_grafana_with_websockets(deploy: Deploy) -> None:
    run = deploy()
    files = uploads(run, "nginx-certbot")
    assert set(files) == {layout.NGINX_REDIRECTOR_FILE, layout.NGINX_GRAFANA_FILE}
    grafana = files[layout.NGINX_GRAFANA_FILE]
    assert "listen 3443 ssl http2;" in grafana and "listen [::]:3443 ssl http2;" in grafana
    assert "server_name grafana.example.com;" in grafana
    assert "ssl_certificate_key /etc/letsencrypt/live/grafana/privkey.pem;" in grafana
    assert "server 172.30.3.10:3000;" in grafana
    live = grafana.split("location /api/live/ {", 1)[1].split("}", 1)[0]
    assert "proxy_set_header Upgrade $http_upgrade;" in live
    assert "proxy_set_header Connection $connection_upgrade;" in live
    assert "proxy_http_version 1.1;" in live
    assert "proxy_set_header Host $http_host;" in live
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in grafana
    redirector = files[layout.NGINX_REDIRECTOR_FILE]
    assert "return 308 https://grafana.example.com:3443$request_uri;" in redirector
    assert "root /var/www/letsencrypt;" in redirector
    assert container(run, "nginx-certbot").inputs["volumes"] == [
        {"hostPath": layout.LETSENCRYPT_DIR, "containerPath": "/etc/letsencrypt"}
    ]


def test_tracker_container(deploy: Deploy) -> None:
    run = deploy()
    tracker = container(run, "tracker")
    assert tracker.inputs["image"] == "torrust/tracker:v3.0.0"
    env = envs(run, "tracker")
    assert "USER_ID=1000" in env
    assert "TORRUST_TRACKER_CONFIG_OVERRIDE_CORE__DATABASE__DRIVER=sqlite3" in env
    assert f"TORRUST_TRACKER_CONFIG_TOML_PATH={layout.TRACKER_CONFIG_FILE}" in env
    token_env = [e for e in env if isinstance(e, dict)]
    assert len(token_env) == 1
    assert (
        secret_value(token_env[0])
        == f"TORRUST_TRACKER_CONFIG_OVERRIDE_HTTP_API__ACCESS_TOKENS__ADMIN={TOKEN}"
    )
    assert tracker.inputs["volumes"] == [
        {"hostPath": layout.TRACKER_LIB_DIR, "containerPath": "/var/lib/torrust/tracker"},
        {"hostPath": layout.TRACKER_LOG_DIR, "containerPath": "/var/log/torrust/tracker"},
    ]
    assert tracker.inputs["healthcheck"]["tests"] == [
        "CMD",
        "/usr/bin/http_health_check",
        "http://127.0.0.1:1313/health_check",
    ]
    toml = uploads(run, "tracker")[layout.TRACKER_CONFIG_FILE]
    assert TOKEN not in toml and "on_reverse_proxy = true" in toml


def test_monitoring_containers(deploy: Deploy) -> None:
    run = deploy()
    prometheus_config = uploads(run, "prometheus")[layout.PROMETHEUS_CONFIG_FILE]
    # The scrape config carries the token, so the upload content is a secret.
    assert TOKEN in secret_value(prometheus_config)
    grafana_env = envs(run, "grafana")
    assert "GF_SERVER_ROOT_URL=https://grafana.example.com:3443/" in grafana_env
    assert "GF_SECURITY_COOKIE_SECURE=true" in grafana_env
    assert [secret_value(e) for e in grafana_env if isinstance(e, dict)] == [
        f"GF_SECURITY_ADMIN_PASSWORD={PASSWORD}"
    ]
    grafana_files = uploads(run, "grafana")
    assert set(grafana_files) == {
        layout.GRAFANA_DATASOURCE_FILE,
        layout.GRAFANA_DASHBOARD_PROVIDER_FILE,
        f"{layout.GRAFANA_DASHBOARDS_DIR}/tracker-overview.json",
        f"{layout.GRAFANA_DASHBOARDS_DIR}/tracker-protocols.json",
        f"{layout.GRAFANA_DASHBOARDS_DIR}/endpoints.json",
    }
    assert container(run, "grafana").inputs["volumes"] == [
        {"hostPath": layout.GRAFANA_DATA_DIR, "containerPath": "/var/lib/grafana"}
    ]
    assert container(run, "prometheus").inputs["volumes"] == [
        {"hostPath": layout.PROMETHEUS_DATA_DIR, "containerPath": "/prometheus"}
    ]


def test_json_exporter_container(deploy: Deploy) -> None:
    """Tracker v3.0.0 serves JSON stats only: json_exporter (no secret, no volume) turns them into metrics."""
    run = deploy()
    exporter = container(run, "json-exporter").inputs
    assert exporter["image"] == "prometheuscommunity/json-exporter:v0.7.0"
    assert exporter["command"] == [
        f"--config.file={layout.JSON_EXPORTER_CONFIG_FILE}",
        f"--web.listen-address=:{layout.JSON_EXPORTER_PORT}",
    ]
    files = uploads(run, "json-exporter")
    assert list(files) == [layout.JSON_EXPORTER_CONFIG_FILE]
    assert isinstance(files[layout.JSON_EXPORTER_CONFIG_FILE], str)  # plain: it holds no secret
    assert TOKEN not in files[layout.JSON_EXPORTER_CONFIG_FILE]
    assert "volumes" not in exporter and "envs" not in exporter
    assert exporter["healthcheck"]["tests"][-1] == f"http://127.0.0.1:{layout.JSON_EXPORTER_PORT}/metrics"
    scrape = yaml.safe_load(secret_value(uploads(run, "prometheus")[layout.PROMETHEUS_CONFIG_FILE]))
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["json-exporter:7979"]


@pytest.mark.parametrize(
    "name", ["pingoo", "nginx-certbot", "tracker", "prometheus", "grafana", "json-exporter"]
)
def test_container_baseline(deploy: Deploy, name: str) -> None:
    run = deploy()
    registration = container(run, name)
    inputs, options = registration.inputs, registration.options
    assert inputs["name"] == name
    assert inputs["restart"] == "unless-stopped"
    assert inputs["logDriver"] == "json-file" and inputs["logOpts"] == {"max-size": "10m", "max-file": "5"}
    assert inputs["securityOpts"] == ["no-new-privileges:true"]
    assert inputs["memory"] > 0
    # Fixed names and host ports: the old container must go before the new one starts.
    assert options["deleteBeforeReplace"] is True
    provider = run.monitor.by_type("pulumi:providers:docker")[0]
    assert options["provider"] == provider.urn
    ready = run.monitor.one("command:remote:Command", "docker-ready")
    assert ready.urn in options["dependsOn"]
    # The server ID forces re-creation on a replaced server (same IP and host key, empty Docker).
    server_id = run.monitor.resources[run.monitor.by_type(SERVER)[0].urn].id
    assert inputs["labels"] == [{"label": "torrust.server-id", "value": server_id}]
    image = run.monitor.one("docker:index/remoteImage:RemoteImage", f"{name}-image")
    assert image.inputs["triggers"] == {"torrust.server-id": server_id}


def test_images_are_pinned_from_config(deploy: Deploy) -> None:
    digest = "torrust/tracker:v3.0.0@sha256:" + "c" * 64
    run = deploy({"images": {"grafana": "grafana/grafana:13.0.0", "tracker": digest}})
    images = {r.name: r.inputs["name"] for r in run.monitor.by_type("docker:index/remoteImage:RemoteImage")}
    assert images == {
        "pingoo-image": "pingooio/pingoo:0.14.7",
        "nginx-certbot-image": "jonasal/nginx-certbot:6.2.0-nginx1.31.2",
        "tracker-image": digest,
        "prometheus-image": "prom/prometheus:v3.13.3",
        "json-exporter-image": "prometheuscommunity/json-exporter:v0.7.0",
        "grafana-image": "grafana/grafana:13.0.0",
        "blackbox-exporter-image": "prom/blackbox-exporter:v0.28.0",
        "node-exporter-image": "prom/node-exporter:v1.12.1",
        "alertmanager-image": "prom/alertmanager:v0.34.0",
    }
    assert container(run, "grafana").inputs["image"] == "grafana/grafana:13.0.0"


def test_server_and_cloud_init(deploy: Deploy) -> None:
    import yaml

    run = deploy()
    server = run.monitor.by_type(SERVER)[0]
    assert server.inputs["serverType"] == "cx23"
    assert server.inputs["location"] == "nbg1"
    assert server.inputs["image"] == "docker-ce"
    ips = {r.inputs["type"]: run.monitor.resources[r.urn].id for r in run.monitor.by_type(PRIMARY_IP)}
    assert server.inputs["publicNets"] == [
        {"ipv4Enabled": True, "ipv4": int(ips["ipv4"]), "ipv6Enabled": True, "ipv6": int(ips["ipv6"])}
    ]
    assert server.inputs["labels"]["stack"] == "dev"
    user_data = secret_value(server.inputs["userData"])  # carries the host private key
    document = yaml.safe_load(user_data)
    assert user_data.startswith("#cloud-config\n")
    assert document["ssh_keys"]["ed25519_public"] == EXAMPLE_HOST_PUBLIC_KEY
    assert document["ssh_pwauth"] is False
    assert "docker.io" not in document["packages"]  # docker-ce image ships Docker
    daemon = json.loads(
        next(f for f in document["write_files"] if f["path"] == "/etc/docker/daemon.json")["content"]
    )
    assert daemon["ip6tables"] is True and daemon["log-opts"]["max-size"] == "10m"
    # Service configuration never goes into cloud-init (it would replace the server).
    for marker in ("listeners:", "http_proxy", "server_name", "schema_version", "scrape_configs", "GF_"):
        assert marker not in user_data


def test_plain_ubuntu_gets_docker_installed(deploy: Deploy) -> None:
    import yaml

    run = deploy({"server": {"type": "cpx22", "location": "fsn1", "image": "ubuntu-24.04"}})
    server = run.monitor.by_type(SERVER)[0]
    assert server.inputs["serverType"] == "cpx22" and server.inputs["location"] == "fsn1"
    assert "docker.io" in yaml.safe_load(secret_value(server.inputs["userData"]))["packages"]


def test_docker_provider_verifies_the_generated_host_key(deploy: Deploy) -> None:
    run = deploy()
    provider = run.monitor.by_type("pulumi:providers:docker")[0]
    assert provider.inputs["host"] == f"ssh://root@{EXAMPLE_IPV4}"
    opts = json.loads(provider.inputs["sshOpts"])  # provider config arrives JSON-encoded
    assert "StrictHostKeyChecking=yes" in opts
    assert f"KnownHostsCommand=/bin/echo %H {EXAMPLE_HOST_PUBLIC_KEY}" in opts
    assert "UserKnownHostsFile=/dev/null" in opts
    assert not any("StrictHostKeyChecking=no" in o for o in opts)
    ready = run.monitor.one("command:remote:Command", "docker-ready")
    assert ready.urn in provider.options["dependsOn"]
    connection = secret_value(ready.inputs["connection"])
    assert connection["host"] == EXAMPLE_IPV4 and connection["user"] == "root"
    assert connection["hostKey"] == EXAMPLE_HOST_PUBLIC_KEY + "\n"
    assert "cloud-init status --wait" in ready.inputs["create"]
    server = run.monitor.by_type(SERVER)[0]
    assert server.urn in ready.options["dependsOn"]


def test_networks_wait_for_readiness(deploy: Deploy) -> None:
    run = deploy()
    ready = run.monitor.one("command:remote:Command", "docker-ready")
    server_id = run.monitor.resources[run.monitor.by_type(SERVER)[0].urn].id
    for network in run.monitor.by_type(NETWORK):
        assert {"label": "torrust.server-id", "value": server_id} in network.inputs["labels"]
        assert ready.urn in network.options["dependsOn"]
        assert network.options["deleteBeforeReplace"] is True


def test_outputs(deploy: Deploy) -> None:
    run = deploy()
    outputs = run.outputs
    assert outputs["serverIpv4"] == EXAMPLE_IPV4 and outputs["serverIpv6"] == EXAMPLE_IPV6
    assert outputs["endpoints"] == {
        "trackerApi": {
            "base": "https://api.example.com/api/v1",
            "healthCheck": "https://api.example.com/api/health_check",
            "stats": "https://api.example.com/api/v1/stats?token=<trackerAdminToken>",
        },
        "httpTrackers": ["https://http1.example.com/announce"],
        "httpTrackerHealthChecks": ["https://http1.example.com/health_check"],
        "udpTrackers": ["udp://udp1.example.com:6969/announce"],
        "grafana": "https://grafana.example.com:3443/",
    }
    records = {(r["name"], r["type"]): r["value"] for r in outputs["dnsRecords"]}
    for name in ("api.example.com", "http1.example.com", "grafana.example.com", "udp1.example.com"):
        assert records[(name, "A")] == EXAMPLE_IPV4
    # Only the UDP tracker answers over IPv6 (Pingoo listens on 0.0.0.0, core/dns.py).
    assert [name for name, type_ in records if type_ == "AAAA"] == ["udp1.example.com"]
    assert records[("udp1.example.com", "AAAA")] == EXAMPLE_IPV6
    assert records[("udp1.example.com", "TXT")] == "BITTORRENT UDP:6969"
    assert outputs["sshCommand"].endswith(f"root@{EXAMPLE_IPV4}")
    assert "StrictHostKeyChecking=yes" in outputs["sshCommand"]
    paths = [entry["path"] for entry in outputs["backupPaths"]]
    assert f"{layout.PINGOO_TLS_DIR}/acme.json" in paths and layout.TRACKER_DATABASE_FILE in paths
    assert layout.LETSENCRYPT_DIR in paths and layout.GRAFANA_DATA_DIR in paths and layout.BACKUP_DIR in paths
    assert outputs["trackerAdminToken"] == "[secret]"
    assert outputs["grafanaAdminPassword"] == "[secret]"


def test_udp_announce_uses_the_ip_without_a_udp_name(deploy: Deploy) -> None:
    from tests.conftest import dev_config

    domains = dev_config()["domains"]
    del domains["udpTracker"]
    domains["httpTrackers"] = ["http1.example.com", "http2.example.com"]
    run = deploy({"domains": domains})
    assert run.outputs["endpoints"]["udpTrackers"] == [f"udp://{EXAMPLE_IPV4}:6969/announce"]
    assert run.outputs["endpoints"]["httpTrackers"] == [
        "https://http1.example.com/announce",
        "https://http2.example.com/announce",
    ]
    assert not any(r["type"] == "TXT" for r in run.outputs["dnsRecords"])
    toml = uploads(run, "tracker")[layout.TRACKER_CONFIG_FILE]
    assert toml.count("[[http_trackers]]") == 2 and '"0.0.0.0:7071"' in toml


def test_secrets_never_appear_in_plain_inputs_or_outputs(deploy: Deploy) -> None:
    canary_token = "CANARY-token-5f1c0a7e9b2d4c6a8e0f"
    canary_password = "CANARY-password-3d9e7b1f"
    run = deploy(secrets={"trackerAdminToken": canary_token, "grafanaAdminPassword": canary_password})
    plain = json.dumps([masked(r.inputs) for r in run.monitor.registrations]) + json.dumps(run.outputs)
    assert canary_token not in plain and canary_password not in plain
    # ... while the secret inputs really carry them (the test would pass vacuously otherwise).
    everything = json.dumps([r.inputs for r in run.monitor.registrations])
    assert canary_token in everything and canary_password in everything


def test_invalid_config_stops_before_any_resource(deploy: Deploy) -> None:
    with pytest.raises(Exception, match=r"torrust-hybrid-tls:domains\.grafana") as error:
        deploy(
            {
                "domains": {
                    "trackerApi": "api.example.com",
                    "httpTrackers": ["http1.example.com"],
                    "grafana": "G",
                }
            }
        )
    assert type(error.value).__name__ == "RunError"
    assert "pulumi config set --path 'domains.grafana'" in str(error.value)


def test_unset_secrets_are_generated_and_stay_secret(deploy: Deploy) -> None:
    run = deploy(secrets={"trackerAdminToken": None, "grafanaAdminPassword": None})
    generated = {r.name: r.inputs for r in run.monitor.by_type("random:index/randomPassword:RandomPassword")}
    assert set(generated) == {"secrets-trackerAdminToken", "secrets-grafanaAdminPassword"}
    assert generated["secrets-trackerAdminToken"]["length"] == 40
    assert all(inputs["special"] is False for inputs in generated.values())
    # The generated value (the mock's result) flows into the tracker env and Prometheus, as secrets.
    token_env = [secret_value(e) for e in envs(run, "tracker") if isinstance(e, dict)]
    assert token_env == [f"{ADMIN_TOKEN_ENV}={GENERATED}"]
    assert GENERATED in secret_value(uploads(run, "prometheus")[layout.PROMETHEUS_CONFIG_FILE])
    assert [secret_value(e) for e in envs(run, "grafana") if isinstance(e, dict)] == [
        f"GF_SECURITY_ADMIN_PASSWORD={GENERATED}"
    ]
    assert (
        run.outputs["trackerAdminToken"] == "[secret]" and run.outputs["grafanaAdminPassword"] == "[secret]"
    )
    assert GENERATED not in json.dumps([masked(r.inputs) for r in run.monitor.registrations])


def test_configured_secrets_are_not_generated(deploy: Deploy) -> None:
    run = deploy()
    assert run.monitor.by_type("random:index/randomPassword:RandomPassword") == []


def test_short_secret_is_refused_without_echoing_it(deploy: Deploy) -> None:
    with pytest.raises(Exception, match="trackerAdminToken: is too short") as error:
        deploy(secrets={"trackerAdminToken": "tooshort-x"})
    assert "pulumi config set --secret trackerAdminToken" in str(error.value)
    assert "tooshort-x" not in str(error.value)


def test_plain_text_secret_is_refused(deploy: Deploy) -> None:
    from tests.conftest import dev_config

    with pytest.raises(Exception, match="grafanaAdminPassword: is stored in plain text"):
        deploy({"grafanaAdminPassword": "plain-text-password-123456"}, secrets={"grafanaAdminPassword": None})
    assert dev_config()  # the example stack itself carries no secret


def test_primary_ips_and_volume_outlive_the_server(deploy: Deploy) -> None:
    run = deploy()
    for ip in run.monitor.by_type(PRIMARY_IP):
        assert ip.inputs["autoDelete"] is False and ip.inputs["deleteProtection"] is True
        assert ip.inputs["assigneeType"] == "server" and ip.inputs["location"] == "nbg1"
        assert ip.options["protect"] is True
    assert sorted(ip.inputs["type"] for ip in run.monitor.by_type(PRIMARY_IP)) == ["ipv4", "ipv6"]
    volume = run.monitor.by_type(VOLUME)[0]
    assert volume.inputs["format"] == "ext4" and volume.inputs["size"] == 20
    assert volume.inputs["location"] == "nbg1" and volume.inputs["deleteProtection"] is True
    assert "serverId" not in volume.inputs  # attached separately, so a new server can take it over
    assert volume.options["protect"] is True
    server = run.monitor.by_type(SERVER)[0]
    assert server.options["deleteBeforeReplace"] is True  # its IPs and volume must be free first
    attachment = run.monitor.by_type("hcloud:index/volumeAttachment:VolumeAttachment")[0]
    assert attachment.inputs["volumeId"] == int(run.monitor.resources[volume.urn].id)
    assert attachment.inputs["serverId"] == int(run.monitor.resources[server.urn].id)
    assert attachment.inputs["automount"] is False
    ready = run.monitor.one("command:remote:Command", "docker-ready")
    assert attachment.urn in ready.options["dependsOn"]
    assert f"mountpoint -q {layout.DATA_ROOT}" in ready.inputs["create"]


def test_cloud_init_mounts_the_volume_before_docker(deploy: Deploy) -> None:
    import yaml

    run = deploy()
    volume_id = run.monitor.resources[run.monitor.by_type(VOLUME)[0].urn].id
    document = yaml.safe_load(secret_value(run.monitor.by_type(SERVER)[0].inputs["userData"]))
    files = {f["path"]: f["content"] for f in document["write_files"]}
    unit = files[f"/etc/systemd/system/{layout.DATA_MOUNT_UNIT}"]
    assert f"What=/dev/disk/by-id/scsi-0HC_Volume_{volume_id}" in unit
    assert f"Where={layout.DATA_ROOT}" in unit and "Type=ext4" in unit
    assert (
        f"RequiresMountsFor={layout.DATA_ROOT}"
        in files["/etc/systemd/system/docker.service.d/10-torrust-data.conf"]
    )
    commands = [" ".join(map(str, cmd)) for cmd in document["runcmd"]]
    mounted = commands.index(f"systemctl enable --now {layout.DATA_MOUNT_UNIT}")
    first_dir = next(i for i, cmd in enumerate(commands) if cmd.startswith("install -d"))
    assert mounted < first_dir  # data directories are created on the volume, not the root disk


def test_delete_protection_can_be_turned_off_for_throwaway_stacks(deploy: Deploy) -> None:
    run = deploy({"data": {"deleteProtection": False, "volumeSize": 50}, "server": {"backups": True}})
    for resource in [*run.monitor.by_type(PRIMARY_IP), *run.monitor.by_type(VOLUME)]:
        assert resource.inputs["deleteProtection"] is False and resource.options["protect"] is False
    assert run.monitor.by_type(VOLUME)[0].inputs["size"] == 50
    assert run.monitor.by_type(SERVER)[0].inputs["backups"] is True


def test_every_stateful_path_is_on_the_volume(deploy: Deploy) -> None:
    run = deploy()
    for registration in run.monitor.by_type(CONTAINER):
        for volume in registration.inputs.get("volumes") or []:
            assert volume["hostPath"].startswith(layout.DATA_ROOT + "/"), (registration.name, volume)
    for entry in run.outputs["backupPaths"]:
        path = entry["path"]
        assert path.startswith(layout.DATA_ROOT + "/") or path.startswith("container:"), path


def plan_of(run: ProgramRun) -> tuple[dict[str, Any], dict[str, str]]:
    from tools.plan import cloud_init, resource_record, uploaded_files

    registrations = run.monitor.registrations
    plan = {
        "stack": "dev",
        "resources": [resource_record(r) for r in registrations],
        "outputs": masked(run.outputs),
    }
    files = {
        f"files/{resource}/{path.lstrip('/')}": content
        for resource, contents in uploaded_files(registrations).items()
        for path, content in contents.items()
    }
    files["cloud-init.yaml"] = cloud_init(registrations)
    return plan, files


def test_changing_the_server_image_keeps_volume_ips_and_dns(deploy: Deploy) -> None:
    """The server is replaced; what lives on it is re-created there; data, addresses and keys stay."""
    from tools.plan_diff import diff_plans

    base = plan_of(deploy())
    head = plan_of(deploy({"server": {"type": "cx23", "location": "nbg1", "image": "ubuntu-24.04"}}))
    result = diff_plans(base[0], head[0], base[1], head[1])
    actions = {r.name: r.action for r in result.resources}
    assert actions.pop("host-server") == "replace"
    on_the_server = {
        "host-volume-attachment",
        "docker-ready",
        "backups-install",
        # The DNS gate runs again on the new server (its edges are new); the records do not change.
        "dns-gate-wait",
        *(f"docker-net-{spec.key}" for spec in layout.NETWORKS),
        *(f"{name}-image" for name in EXPECTED_CAPABILITIES),
        *EXPECTED_CAPABILITIES,
    }
    assert actions == dict.fromkeys(on_the_server, "replace")
    assert [f.path for f in result.files] == ["cloud-init.yaml"]
    # Untouched: the volume and the primary IPs (so data and DNS survive), firewall, keys, secrets.
    untouched = {"host-volume", "host-ipv4", "host-ipv6", "host-firewall", "host-host-key", "host-ssh-key-0"}
    assert not untouched & set(actions)
    assert not [
        c for c in result.outputs if c.path.startswith(("serverIpv4", "serverIpv6", "dnsRecords", "dns"))
    ]


def test_changing_the_server_type_updates_in_place(deploy: Deploy) -> None:
    from tools.plan_diff import diff_plans

    base = plan_of(deploy())
    head = plan_of(deploy({"server": {"type": "cpx32", "location": "nbg1", "image": "docker-ce"}}))
    result = diff_plans(base[0], head[0], base[1], head[1])
    assert {r.name: r.action for r in result.resources} == {"host-server": "update"}


def test_public_surface_is_exactly_the_firewall(deploy: Deploy) -> None:
    """Every published port is allowed by the firewall and vice versa (SSH aside), on both families."""
    run = deploy({"tracker": {"udpPorts": [6969, 6868]}})
    published_ports: set[tuple[str, int]] = set()
    published_families: dict[tuple[str, int], set[str]] = {}
    for registration in run.monitor.by_type(CONTAINER):
        families: dict[tuple[str, int], set[str]] = {}
        for port in registration.inputs.get("ports") or []:
            assert int(port["internal"]) == int(port["external"]), registration.name
            families.setdefault((port["protocol"], int(port["external"])), set()).add(port["ip"])
        for key, ips in families.items():
            # Everything on both families, but Pingoo's 443 (IPv4 only, services/edge/pingoo.py).
            expected = {"0.0.0.0"} if key == ("tcp", 443) else {"0.0.0.0", "::"}
            assert ips == expected, (registration.name, key)
            published_ports.add(key)
            published_families[key] = ips
    rules = run.monitor.by_type(FIREWALL)[0].inputs["rules"]
    allowed = {(r["protocol"], int(r["port"])) for r in rules}
    assert allowed - published_ports == {("tcp", 22)}
    assert published_ports == {("tcp", 80), ("tcp", 443), ("tcp", 3443), ("udp", 6969), ("udp", 6868)}
    for rule in rules:
        if rule["port"] != "22":
            # The firewall opens each port to exactly the families it is published on.
            rule_ips = sorted(published_families[(rule["protocol"], int(rule["port"]))])
            assert rule["sourceIps"] == [EVERYONE[0 if ip == "0.0.0.0" else 1] for ip in rule_ips], rule
    # Never published: the API, HTTP trackers, health check, Prometheus, Grafana, nginx's redirect port.
    for port in (1212, 1313, 7070, 9090, 3000, 8080):
        assert ("tcp", port) not in published_ports and ("tcp", port) not in allowed


def test_canary_secrets_never_reach_plan_files(deploy: Deploy, tmp_path: Path) -> None:
    from tools.plan import write_plan

    canaries = {
        "trackerAdminToken": "CANARY-token-77aa0c1e9f3b45d2",
        "grafanaAdminPassword": "CANARY-pw-0d9e1f",
    }
    run = deploy(secrets=dict(canaries))
    write_plan("dev", run, tmp_path / "plan", {f"torrust-hybrid-tls:{k}": v for k, v in canaries.items()})
    written = {p: p.read_text() for p in (tmp_path / "plan").rglob("*") if p.is_file()}
    assert len(written) == 19  # incl. the backup script and its two units
    for path, text in written.items():
        for value in canaries.values():
            assert value not in text, path
    scrape = written[tmp_path / "plan/files/prometheus/etc/prometheus/prometheus.yml"]
    assert "<plan-placeholder:trackerAdminToken>" in scrape  # masked where the secret was


EXPECTED_CAPABILITIES = {
    "pingoo": ["NET_BIND_SERVICE"],
    "nginx-certbot": ["CHOWN", "DAC_OVERRIDE", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"],
    "tracker": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"],
    "prometheus": None,
    "grafana": None,
    "blackbox-exporter": None,
    "node-exporter": None,
    "alertmanager": None,
    "json-exporter": None,
}


@pytest.mark.parametrize(("name", "adds"), EXPECTED_CAPABILITIES.items())
def test_containers_drop_every_capability_they_do_not_need(
    deploy: Deploy, name: str, adds: list[str] | None
) -> None:
    run = deploy()
    capabilities = container(run, name).inputs["capabilities"]
    assert capabilities.get("drops") == ["ALL"]
    assert capabilities.get("adds") == adds
    assert "privileged" not in container(run, name).inputs


def test_limits_and_stop_signals(deploy: Deploy) -> None:
    run = deploy()
    memory = {name: container(run, name).inputs["memory"] for name in EXPECTED_CAPABILITIES}
    # Sized for the default cx23 (4 GB): leave at least 800 MB to the OS and dockerd.
    assert sum(memory.values()) <= 4096 - 800, memory
    assert container(run, "tracker").inputs["stopSignal"] == "SIGINT"
    nofile = {n: container(run, n).inputs.get("ulimits") for n in ("pingoo", "nginx-certbot", "tracker")}
    for name, limits in nofile.items():
        assert limits and limits[0]["name"] == "nofile" and limits[0]["soft"] >= 65536, name
    assert "--storage.tsdb.retention.size=4GB" in container(run, "prometheus").inputs["command"]


def test_backup_job_is_installed_after_readiness(deploy: Deploy) -> None:
    run = deploy({"backup": {"schedule": "*-*-* 04:00:00", "retentionDays": 30}})
    install = run.monitor.one("command:remote:Command", "backups-install")
    ready = run.monitor.one("command:remote:Command", "docker-ready")
    assert ready.urn in install.options["dependsOn"]
    assert "OnCalendar=*-*-* 04:00:00" in install.inputs["create"]
    assert "systemctl enable --now torrust-backup.timer" in install.inputs["create"]
    assert install.inputs["delete"]  # removing the stack disables the timer
    assert secret_value(install.inputs["connection"])["hostKey"] == EXAMPLE_HOST_PUBLIC_KEY + "\n"
