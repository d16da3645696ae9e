"""The dev plan's rendered service files, checked by the real validators (or the real schema).

- tracker.toml: every key of schema 2.0.0 (tests/oracles/tracker_schema.py, from tracker v3.0.0's source;
  the real v3.0.0 binary ignores unknown keys, tests/test_real_tracker.py),
  valid bind addresses, `on_reverse_proxy = true`, no token in the file.
- prometheus.yml: `promtool check config`.
- cloud-init.yaml: `cloud-init schema -c`, and no service configuration in the user data.
- Grafana provisioning: the datasource, the dashboard provider and the dashboards agree (uid, path)
  and the dashboards are classic-schema JSON that Grafana's file provisioning accepts.

Each check is a helper that the mutation tests run on a broken copy of the rendered file.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import layout
from tests.oracles.tracker_schema import check_tracker_toml
from tests.realtools import (
    RenderedPlan,
    dev_plan,  # noqa: F401  (session fixture: the plan is rendered once)
    require_tool,
    run,
)

# --- tracker.toml --------------------------------------------------------------------------------


def assert_tracker_toml_ok(text: str) -> None:
    problems = check_tracker_toml(text)
    assert problems == [], "tracker.toml does not match schema 2.0.0:\n" + "\n".join(problems)
    config = tomllib.loads(text)
    assert config["core"]["net"]["on_reverse_proxy"] is True, "the tracker sits behind Pingoo"
    assert "access_tokens" not in config.get("http_api", {}), "the admin token must come from the env var"
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "token" in line.lower()], "a token in tracker.toml"
    assert "plan-placeholder" not in text and "MyAccessToken" not in text


def test_rendered_tracker_toml(dev_plan: RenderedPlan) -> None:  # noqa: F811
    assert_tracker_toml_ok(dev_plan.tracker_toml.read_text())


def test_rendered_tracker_binds(dev_plan: RenderedPlan) -> None:  # noqa: F811
    config = tomllib.loads(dev_plan.tracker_toml.read_text())
    assert config["http_api"]["bind_address"].endswith(f":{layout.TRACKER_API_PORT}")
    assert config["health_check_api"]["bind_address"] == f"127.0.0.1:{layout.TRACKER_HEALTH_PORT}"
    http_ports = [int(t["bind_address"].rsplit(":", 1)[1]) for t in config["http_trackers"]]
    assert http_ports == [layout.http_tracker_port(i) for i in range(len(http_ports))]
    binds = [t["bind_address"] for t in config["udp_trackers"] + config["http_trackers"]]
    binds.append(config["http_api"]["bind_address"])
    assert len(set(binds)) == len(binds), f"two services bind the same address: {binds}"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("on_reverse_proxy = true", "on_reverse_proxi = true", "core.net.on_reverse_proxi: unknown key"),
        ("[core.announce_policy]", "[core.anounce_policy]", "core.anounce_policy: unknown key"),
        ("interval_min = ", "intervall_min = ", "did you mean `interval_min`"),
        ('bind_address = "0.0.0.0:7070"', 'bind_address = "0.0.0.0:70700"', "not a socket address"),
        ('threshold = "info"', 'threshold = "verbose"', "logging.threshold: expected one of"),
        ("listed = false\n", "", "core.listed: mandatory option missing"),
        ("on_reverse_proxy = true", "on_reverse_proxy = false", "the tracker sits behind Pingoo"),
        ("[health_check_api]", '[http_api.access_tokens]\nadmin = "x"\n\n[health_check_api]', "admin token"),
        # A key of a later schema (develop): v3.0.0 would ignore it.
        (
            "[[http_trackers]]\n",
            "[[http_trackers]]\ntracker_usage_statistics = true\n",
            "http_trackers[0].tracker",
        ),
    ],
    ids=[
        "misspelled-key",
        "misspelled-table",
        "hint",
        "bad-port",
        "bad-enum",
        "mandatory",
        "proxy-off",
        "token",
        "post-v3-key",
    ],
)
def test_mutation_tracker_toml(dev_plan: RenderedPlan, old: str, new: str, expected: str) -> None:  # noqa: F811
    text = dev_plan.tracker_toml.read_text()
    assert old in text, f"mutation target {old!r} not in the rendered tracker.toml"
    with pytest.raises(AssertionError, match=re.escape(expected)):
        assert_tracker_toml_ok(text.replace(old, new, 1))


# --- prometheus.yml ------------------------------------------------------------------------------


def assert_promtool_accepts(path: Path) -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "config", str(path)], timeout=30)
    assert result.returncode == 0, f"promtool check config failed:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_accepts_rendered_prometheus_yml(dev_plan: RenderedPlan) -> None:  # noqa: F811
    assert_promtool_accepts(dev_plan.prometheus_yml)


def test_mutation_prometheus_yml(dev_plan: RenderedPlan, tmp_path: Path) -> None:  # noqa: F811
    text = dev_plan.prometheus_yml.read_text()
    assert "  scrape_interval:" in text
    broken = tmp_path / "prometheus.yml"
    broken.write_text(text.replace("  scrape_interval:", "  scrape_intervall:", 1))
    with pytest.raises(AssertionError, match="promtool check config failed"):
        assert_promtool_accepts(broken)


# --- cloud-init ----------------------------------------------------------------------------------


def assert_cloud_init_schema_accepts(path: Path) -> None:
    cloud_init = require_tool("cloud-init")
    result = run([cloud_init, "schema", "-c", str(path)], timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Valid cloud-config" in output, (
        f"cloud-init schema -c rejects {path}:\n{output}"
    )


def test_cloud_init_schema_accepts_rendered_user_data(dev_plan: RenderedPlan) -> None:  # noqa: F811
    assert_cloud_init_schema_accepts(dev_plan.cloud_init)


# Directories whose files are service configuration or service state: never written by cloud-init.
SERVICE_PATHS = (
    "/etc/nginx",
    "/etc/pingoo",
    "/etc/torrust",
    "/etc/prometheus",
    "/etc/grafana",
    "/etc/letsencrypt",
)


# Containers are Pulumi resources; cloud-init only installs and enables Docker itself.
SERVICE_PROGRAMS = (
    "nginx",
    "certbot",
    "pingoo",
    "torrust-tracker",
    "prometheus",
    "grafana",
    "grafana-server",
)
DOCKER_WORKLOAD = r"\bdocker(?:-compose)?\s+(?:run|create|start|compose|exec|cp|up)\b"


def service_config_in_cloud_init(text: str, plan: RenderedPlan) -> list[str]:
    """Why the user data carries service configuration (a change would replace the server)."""
    problems = []
    data: dict[str, Any] = yaml.safe_load(text)
    uploads = plan.uploaded_files()
    upload_paths = {key.split(":", 1)[1] for key in uploads}
    for entry in data.get("write_files") or []:
        path = str(entry.get("path", ""))
        if path in upload_paths or path.startswith((*SERVICE_PATHS, layout.DATA_ROOT)):
            problems.append(f"write_files writes {path}, a service's file")
    for key, file in uploads.items():
        for line in file.read_text().splitlines():
            line = line.strip()
            distinctive = len(line) >= 20 and not line.startswith(("#", "//"))
            if distinctive and line in text:
                problems.append(f"cloud-init repeats a line of {key}: {line!r}")
                break
    hosts = {plan.grafana_host()}
    hosts.update(re.findall(r'http_request\.host == "([^":]+)', plan.pingoo_yml.read_text()))
    problems += [f"cloud-init names the service host {host}" for host in sorted(hosts) if host in text]
    for command in data.get("runcmd") or []:
        argv = [str(a) for a in command] if isinstance(command, list) else shlex.split(str(command))
        joined = shlex.join(argv)
        program = Path(argv[0]).name if argv else ""
        if program in SERVICE_PROGRAMS or re.search(DOCKER_WORKLOAD, joined):
            problems.append(f"runcmd starts or configures a service: {joined}")
    return problems


def test_cloud_init_carries_no_service_configuration(dev_plan: RenderedPlan) -> None:  # noqa: F811
    assert service_config_in_cloud_init(dev_plan.cloud_init.read_text(), dev_plan) == []


def test_mutation_cloud_init_with_nginx_config(dev_plan: RenderedPlan) -> None:  # noqa: F811
    data = yaml.safe_load(dev_plan.cloud_init.read_text())
    data["write_files"].append(
        {"path": "/srv/torrust/nginx/grafana.conf", "content": dev_plan.grafana_conf.read_text()}
    )
    data["runcmd"].append(["docker", "run", "-d", "jonasal/nginx-certbot"])
    problems = service_config_in_cloud_init(yaml.safe_dump(data), dev_plan)
    assert any("write_files writes /srv/torrust/nginx/grafana.conf" in p for p in problems)
    assert any("repeats a line of nginx-certbot:/etc/nginx/user_conf.d/grafana.conf" in p for p in problems)
    assert any("names the service host" in p for p in problems)
    assert any("runcmd starts" in p for p in problems)


# --- Grafana provisioning ------------------------------------------------------------------------

# Keys of the v2 dashboard schema / "export for sharing" that file provisioning rejects or ignores.
V2_OR_EXPORT_KEYS = ("apiVersion", "kind", "spec", "elements", "layout", "__inputs", "__requires")
BUILTIN_DATASOURCE_UIDS = ("grafana", "-- Grafana --", "-- Mixed --", "-- Dashboard --")


def _datasource_refs(node: Any, where: str) -> list[tuple[str, Any]]:
    refs: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                refs.append((f"{where}/datasource", value))
            else:
                refs += _datasource_refs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            refs += _datasource_refs(value, f"{where}/{index}")
    return refs


def grafana_provisioning_problems(
    datasource_yaml: str, provider_yaml: str, dashboards: dict[str, str]
) -> list[str]:
    """What Grafana's provisioning would reject or resolve wrongly; [] when it is consistent."""
    problems: list[str] = []
    datasources_doc = yaml.safe_load(datasource_yaml)
    if datasources_doc.get("apiVersion") != 1:
        problems.append("datasources: apiVersion must be 1")
    datasources = datasources_doc.get("datasources") or []
    uids = {d.get("uid") for d in datasources}
    names = {d.get("name") for d in datasources}
    for datasource in datasources:
        for key in ("name", "type", "uid", "url"):
            if not datasource.get(key):
                problems.append(f"datasource {datasource.get('name')!r}: no {key}")
        if datasource.get("access", "proxy") not in ("proxy", "direct"):
            problems.append(f"datasource {datasource.get('name')!r}: access must be proxy or direct")
    if sum(1 for d in datasources if d.get("isDefault")) > 1:
        problems.append("more than one default datasource")

    providers_doc = yaml.safe_load(provider_yaml)
    if providers_doc.get("apiVersion") != 1:
        problems.append("dashboard providers: apiVersion must be 1")
    providers = providers_doc.get("providers") or []
    paths = [p.get("options", {}).get("path") for p in providers if p.get("type", "file") == "file"]
    if paths != [layout.GRAFANA_DASHBOARDS_DIR]:
        problems.append(f"dashboard provider paths {paths}, uploads go to {layout.GRAFANA_DASHBOARDS_DIR}")
    if not dashboards:
        problems.append(f"no dashboard JSON uploaded to {layout.GRAFANA_DASHBOARDS_DIR}")

    seen_uids: dict[str, str] = {}
    for name, text in sorted(dashboards.items()):
        try:
            dashboard = json.loads(text)
        except json.JSONDecodeError as error:
            problems.append(f"{name}: not JSON ({error})")
            continue
        if not isinstance(dashboard, dict):
            problems.append(f"{name}: not a JSON object")
            continue
        for key in V2_OR_EXPORT_KEYS:
            if key in dashboard:
                problems.append(
                    f"{name}: `{key}` is v2-schema/export JSON, file provisioning wants classic JSON"
                )
        if not isinstance(dashboard.get("schemaVersion"), int):
            problems.append(f"{name}: no integer schemaVersion (classic schema)")
        if not isinstance(dashboard.get("panels"), list):
            problems.append(f"{name}: no panels list (classic schema)")
        uid = dashboard.get("uid")
        if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
            problems.append(f"{name}: uid {uid!r} is not a Grafana uid (1-40 of [A-Za-z0-9_-])")
        elif uid in seen_uids:
            problems.append(f"{name}: uid {uid} also used by {seen_uids[uid]}")
        else:
            seen_uids[uid] = name
        if not dashboard.get("title"):
            problems.append(f"{name}: no title")
        for where, ref in _datasource_refs(dashboard, name):
            if isinstance(ref, dict):
                ref_uid = ref.get("uid")
                if ref_uid not in uids and ref_uid not in BUILTIN_DATASOURCE_UIDS:
                    problems.append(
                        f"{where}: uid {ref_uid!r} is not a provisioned datasource {sorted(uids)}"
                    )
            elif isinstance(ref, str):
                if ref not in names and ref not in uids and ref not in BUILTIN_DATASOURCE_UIDS:
                    problems.append(f"{where}: datasource {ref!r} is not provisioned")
            elif ref is not None:
                problems.append(f"{where}: unexpected datasource reference {ref!r}")
    return problems


def plan_grafana_files(plan: RenderedPlan) -> tuple[str, str, dict[str, str]]:
    datasource = plan.file(layout.GRAFANA, layout.GRAFANA_DATASOURCE_FILE).read_text()
    provider = plan.file(layout.GRAFANA, layout.GRAFANA_DASHBOARD_PROVIDER_FILE).read_text()
    prefix = f"{layout.GRAFANA}:{layout.GRAFANA_DASHBOARDS_DIR}/"
    dashboards = {
        key.removeprefix(prefix): path.read_text()
        for key, path in plan.uploaded_files().items()
        if key.startswith(prefix) and key.endswith(".json")
    }
    return datasource, provider, dashboards


def test_grafana_provisioning_is_consistent(dev_plan: RenderedPlan) -> None:  # noqa: F811
    assert grafana_provisioning_problems(*plan_grafana_files(dev_plan)) == []


def test_grafana_dashboards_use_the_provisioned_datasource_uid(dev_plan: RenderedPlan) -> None:  # noqa: F811
    datasource, _, dashboards = plan_grafana_files(dev_plan)
    uid = yaml.safe_load(datasource)["datasources"][0]["uid"]
    assert uid == layout.GRAFANA_DATASOURCE_UID
    for name, text in dashboards.items():
        refs = [ref for _, ref in _datasource_refs(json.loads(text), name) if isinstance(ref, dict)]
        assert refs and {r.get("uid") for r in refs} <= {uid, *BUILTIN_DATASOURCE_UIDS}, name


def test_mutation_grafana_provisioning(dev_plan: RenderedPlan) -> None:  # noqa: F811
    datasource, provider, dashboards = plan_grafana_files(dev_plan)
    renamed = datasource.replace(f'uid: "{layout.GRAFANA_DATASOURCE_UID}"', 'uid: "prom-main"')
    assert renamed != datasource
    assert any(
        "not a provisioned datasource" in p
        for p in grafana_provisioning_problems(renamed, provider, dashboards)
    )
    moved = provider.replace(layout.GRAFANA_DASHBOARDS_DIR, "/var/lib/grafana/dashboards")
    assert any(
        "dashboard provider paths" in p for p in grafana_provisioning_problems(datasource, moved, dashboards)
    )
    name, text = sorted(dashboards.items())[0]
    v2 = json.dumps({"apiVersion": "dashboard.grafana.app/v2", "kind": "Dashboard", "spec": json.loads(text)})
    problems = grafana_provisioning_problems(datasource, provider, {**dashboards, name: v2})
    assert any("v2-schema" in p for p in problems) and any("classic schema" in p for p in problems)


def test_mutation_cloud_init_schema(dev_plan: RenderedPlan, tmp_path: Path) -> None:  # noqa: F811
    text = dev_plan.cloud_init.read_text()
    assert "\npackage_upgrade: true\n" in text
    broken = tmp_path / "user-data.yaml"
    broken.write_text(text.replace("\npackage_upgrade: true\n", '\npackage_upgrade: "sure"\n'))
    with pytest.raises(AssertionError, match="package_upgrade: 'sure' is not of type 'boolean'"):
        assert_cloud_init_schema_accepts(broken)
