"""Docs that state what the code does: checked against the code, so they cannot drift silently."""

from __future__ import annotations

import re

import yaml

from tests.conftest import REPO_ROOT
from tools import plan_diff

DOCS = REPO_ROOT / "docs"


def text(path: str) -> str:
    return (REPO_ROOT / path).read_text()


def test_decision_0004_names_the_rendered_ssh_genkeytypes() -> None:
    template = text("templates/cloud-init/user-data.yaml.j2")
    [line] = [line for line in template.splitlines() if line.startswith("ssh_genkeytypes:")]
    rendered = yaml.safe_load(line)["ssh_genkeytypes"]
    decision = text("docs/decisions/0004-generated-host-key.md")
    assert f"`ssh_genkeytypes: [{', '.join(rendered)}]`" in decision


def test_no_doc_says_a_new_server_gets_a_new_ip_or_host_key() -> None:
    # Primary IPs and the Pulumi-generated host key outlive the server (decision 0007).
    for path in [REPO_ROOT / "README.md", *DOCS.rglob("*.md")]:
        assert not re.search(r"new IP address|new IP and|new host key", path.read_text()), path


def test_previews_are_documented_as_not_connecting() -> None:
    doc = text("docs/pr-previews.md")
    assert "previewing docker resources connects" not in doc
    assert "Previews do not connect to the server" in doc and "internal/provider/config.go" in doc


def test_readme_operator_address_and_certbot_retry() -> None:
    readme = text("README.md")
    assert "curl -4 -s https://ifconfig.me" in readme
    assert "docker kill --signal=HUP nginx-certbot" in readme
    layout = text("core/layout.py")
    assert 'NGINX = "nginx-certbot"' in layout, "the README names the container"


def test_pingoo_limits_are_recorded_next_to_the_https_urls() -> None:
    decision = text("docs/decisions/0001-hybrid-tls-edge.md")
    for source in ("listeners/https_listener.rs", "listeners/mod.rs", "tls/tls_manager.rs"):
        assert source in decision
    [endpoints] = [line for line in text("README.md").splitlines() if line.startswith("| `endpoints` |")]
    assert "TLS 1.2-only clients cannot use them" in endpoints


def test_pr_previews_lists_the_plan_diff_classes() -> None:
    doc = text("docs/pr-previews.md")
    for name in sorted(plan_diff.RULES[plan_diff.CONTAINER_TYPE].not_applied):
        assert f"`{name}`" in doc, name


def test_monitoring_image_defaults_agree_everywhere() -> None:
    from core.settings import _IMAGE_EXAMPLES, ImageSettings

    defaults = ImageSettings()
    dev = yaml.safe_load(text("Pulumi.dev.yaml"))["config"]["torrust-hybrid-tls:images"]
    readme = text("README.md")
    for key in ("prometheus", "grafana"):
        value = getattr(defaults, key)
        assert _IMAGE_EXAMPLES[key] == value and dev[key] == value
        assert f"| `images.{key}` | `{value}` |" in readme
    assert defaults.prometheus == "prom/prometheus:v3.13.3"  # 3.11 is end of life
    assert defaults.grafana == "grafana/grafana:12.4.14"
