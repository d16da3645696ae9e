"""`make plan`: the offline plan a reviewer reads (plan.json, uploaded files, cloud-init)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.realtools import require_real_tier
from tools.mocks import GENERATED_PASSWORD

EXPECTED_FILES = {
    "files/pingoo/etc/pingoo/pingoo.yml",
    "files/nginx-certbot/etc/nginx/conf.d/redirector.conf",
    "files/nginx-certbot/etc/nginx/user_conf.d/grafana.conf",
    "files/tracker/etc/torrust/tracker/tracker.toml",
    "files/prometheus/etc/prometheus/prometheus.yml",
    "files/prometheus/etc/prometheus/rules/torrust.yml",
    "files/blackbox-exporter/etc/blackbox_exporter/config.yml",
    "files/alertmanager/etc/alertmanager/alertmanager.yml",
    "files/json-exporter/etc/json_exporter/config.yml",
    "files/grafana/etc/grafana/provisioning/datasources/prometheus.yaml",
    "files/grafana/etc/grafana/provisioning/dashboards/torrust.yaml",
    "files/grafana/etc/grafana/dashboards/torrust/tracker-overview.json",
    "files/grafana/etc/grafana/dashboards/torrust/tracker-protocols.json",
    "files/grafana/etc/grafana/dashboards/torrust/endpoints.json",
    "files/backups-install/usr/local/sbin/torrust-backup",
    "files/backups-install/etc/systemd/system/torrust-backup.service",
    "files/backups-install/etc/systemd/system/torrust-backup.timer",
    "cloud-init.yaml",
    "plan.json",
}


def run_plan(out: Path, stack_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    # A subprocess keeps Pulumi's process-global runtime state out of the test process.
    require_real_tier()  # the shipped tool as a process: `make check`
    args = [sys.executable, "-m", "tools.plan", "--stack", "dev", "--out", str(out)]
    if stack_file:
        args += ["--stack-file", str(stack_file)]
    return subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan") / "dev"
    result = run_plan(out)
    assert result.returncode == 0, result.stderr
    assert "Endpoints:" in result.stdout and "grafana.example.com" in result.stdout
    assert "torrust:index:Host  host" in result.stdout
    return out


def load_plan(plan_dir: Path) -> dict[str, Any]:
    plan: dict[str, Any] = json.loads((plan_dir / "plan.json").read_text())
    return plan


def test_plan_writes_every_file(plan_dir: Path) -> None:
    written = {str(p.relative_to(plan_dir)) for p in plan_dir.rglob("*") if p.is_file()}
    assert written == EXPECTED_FILES


def test_plan_json_shape(plan_dir: Path) -> None:
    plan = load_plan(plan_dir)
    assert plan["stack"] == "dev" and plan["project"] == "torrust-hybrid-tls"
    assert set(plan) == {"stack", "project", "resources", "outputs", "notes"}
    for resource in plan["resources"]:
        assert set(resource) == {"urn", "type", "name", "parent", "inputs", "options"}
        assert {
            "protect",
            "deleteBeforeReplace",
            "ignoreChanges",
            "replaceOnChanges",
            "dependsOn",
            "provider",
        } <= set(resource["options"])
    urns = [r["urn"] for r in plan["resources"]]
    # incl. generated secrets, backup job, 9 RRsets, 2 rDNS, the gate, 3 alerting services (+networks),
    # json_exporter
    assert len(urns) == len(set(urns)) == 65
    server = next(r for r in plan["resources"] if r["type"] == "hcloud:index/server:Server")
    assert server["inputs"]["serverType"] == "cx23"  # camelCase, as the engine sees them
    assert server["inputs"]["userData"] == "[secret]"


def test_plan_masks_secrets(plan_dir: Path) -> None:
    plan = load_plan(plan_dir)
    assert plan["outputs"]["trackerAdminToken"] == "[secret]"
    assert plan["outputs"]["grafanaAdminPassword"] == "[secret]"
    tracker = next(r for r in plan["resources"] if r["name"] == "tracker" and r["type"].startswith("docker:"))
    assert "[secret]" in tracker["inputs"]["envs"]
    prometheus = next(r for r in plan["resources"] if r["name"] == "prometheus")
    assert prometheus["inputs"]["uploads"] == "[secret]" or "[secret]" in json.dumps(
        prometheus["inputs"]["uploads"]
    )
    # Files only ever hold placeholders.
    scrape = (plan_dir / "files/prometheus/etc/prometheus/prometheus.yml").read_text()
    target = yaml.safe_load(scrape)["scrape_configs"][0]["params"]["target"]
    assert target == [f"http://tracker:1212/api/v1/stats?token={GENERATED_PASSWORD}"]


def test_plan_files_equal_the_uploads(plan_dir: Path) -> None:
    plan = load_plan(plan_dir)
    pingoo = next(r for r in plan["resources"] if r["name"] == "pingoo" and r["type"].endswith("Container"))
    upload = pingoo["inputs"]["uploads"][0]
    assert upload["file"] == "/etc/pingoo/pingoo.yml"
    assert (plan_dir / "files/pingoo/etc/pingoo/pingoo.yml").read_text() == upload["content"]
    cloud_init = yaml.safe_load((plan_dir / "cloud-init.yaml").read_text())
    assert "PLAN-PLACEHOLDER" in cloud_init["ssh_keys"]["ed25519_private"]


def test_plan_exits_non_zero_with_the_config_message(tmp_path: Path) -> None:
    document = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())
    document["config"]["torrust-hybrid-tls:domains"]["grafana"] = "Grafana.Example.com"
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(yaml.safe_dump(document))
    result = run_plan(tmp_path / "out", stack_file)
    assert result.returncode == 2
    assert "torrust-hybrid-tls:domains.grafana" in result.stderr
    assert "pulumi config set --path 'domains.grafana'" in result.stderr
    assert not (tmp_path / "out" / "plan.json").exists()


def test_plan_replaces_secure_values_by_placeholders(tmp_path: Path) -> None:
    document = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())
    document["config"]["torrust-hybrid-tls:trackerAdminToken"] = {"secure": "AAABAExampleCiphertextOnly"}
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(yaml.safe_dump(document))
    result = run_plan(tmp_path / "out", stack_file)
    assert result.returncode == 0, result.stderr
    text = json.dumps(json.loads((tmp_path / "out/plan.json").read_text()))
    assert "AAABAExampleCiphertextOnly" not in text
    assert "trackerAdminToken is not set" not in result.stderr
    assert "grafanaAdminPassword is not set in Pulumi.dev.yaml: the program generates it" in result.stderr
    scrape = (tmp_path / "out/files/prometheus/etc/prometheus/prometheus.yml").read_text()
    assert "<plan-placeholder:trackerAdminToken>" in scrape


def test_plan_is_deterministic(plan_dir: Path, tmp_path: Path) -> None:
    """Two runs give the same plan (registration order may differ; content may not)."""
    result = run_plan(tmp_path / "again")
    assert result.returncode == 0, result.stderr

    def by_urn(directory: Path) -> dict[str, Any]:
        return {r["urn"]: r for r in load_plan(directory)["resources"]}

    assert by_urn(tmp_path / "again") == by_urn(plan_dir)


def test_plan_labels_mock_addresses(plan_dir: Path, tmp_path: Path) -> None:
    plan = load_plan(plan_dir)
    assert "mock addresses" in plan["notes"]["mockAddresses"]
    assert plan["outputs"]["serverIpv4"] in plan["notes"]["mockAddresses"]
    result = run_plan(tmp_path / "out")
    assert "DNS records to create (mock addresses):" in result.stdout
    assert "refused by `pulumi up`): domains.trackerApi, domains.grafana" in result.stderr
    assert f"{plan['outputs']['serverIpv4']} and {plan['outputs']['serverIpv6']} are mock" in result.stdout


def test_plan_writes_the_backup_script_and_units(plan_dir: Path) -> None:
    from core.settings import load_settings
    from services.backups.backup import render_backup_script, render_backup_service, render_backup_timer
    from tests.conftest import dev_config

    settings = load_settings("dev", dev_config().get)
    base = plan_dir / "files/backups-install"
    assert (base / "usr/local/sbin/torrust-backup").read_text() == render_backup_script(settings)
    assert (base / "etc/systemd/system/torrust-backup.service").read_text() == render_backup_service(settings)
    assert (base / "etc/systemd/system/torrust-backup.timer").read_text() == render_backup_timer(settings)


def test_plan_stderr_is_clean(tmp_path: Path) -> None:
    """Only notes, warnings and the config message: no Python or asyncio traceback."""
    good = run_plan(tmp_path / "good")
    document = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())
    document["config"]["torrust-hybrid-tls:backup"] = {"schedule": "99:99"}
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(yaml.safe_dump(document))
    bad = run_plan(tmp_path / "bad", stack_file)
    assert (good.returncode, bad.returncode) == (0, 2)
    for stderr in (good.stderr, bad.stderr):
        for marker in ("Traceback", "Task exception", "Task was destroyed", "asyncio", "Exception ignored"):
            assert marker not in stderr, stderr
    assert "torrust-hybrid-tls:backup.schedule: '99:99'" in bad.stderr


def test_plan_refuses_a_duplicate_key(tmp_path: Path) -> None:
    text = (
        (REPO_ROOT / "Pulumi.dev.yaml")
        .read_text()
        .replace("    location: nbg1\n", "    location: nbg1\n    location: fsn1\n")
    )
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(text)
    result = run_plan(tmp_path / "out", stack_file)
    assert result.returncode == 2
    assert "key 'location' is given twice" in result.stderr and "Traceback" not in result.stderr


def test_plan_survives_an_alias_bomb_in_another_namespace(tmp_path: Path) -> None:
    lines = ["  other:bomb:", '    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghijk":
        lines.append(f"    {name}: &{name} [{', '.join(['*' + previous] * 9)}]")
        previous = name
    text = (REPO_ROOT / "Pulumi.dev.yaml").read_text() + "\n".join(lines) + "\n"
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "tools.plan", "--out", str(tmp_path / "out"), "--stack-file", str(stack_file)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,  # 9**10 expanded strings would not finish in time (or memory)
        check=False,
    )
    assert result.returncode == 0, result.stderr
