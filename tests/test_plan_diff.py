"""`make plan-diff`: the diff engine on synthetic plans, and the whole tool on real git history.

The git tests copy the working tree's tracked files into a scratch repository, commit, make one
change, commit, and run `python -m tools.plan_diff --repo <scratch> --base HEAD~1` (this tree's
plan_diff; each side renders with its own tools/plan.py under this interpreter).

Secrets: the offline plan replaces every secret by a placeholder, so a changed secret *value* never
shows as a changed input. What is testable, and tested: (1) a changed `secure:` ciphertext in the
stack file is reported (values hidden) with the rendered files that embed that secret; (2) inputs
marked "[secret]" are listed for every changed resource; (3) a rendered file that changed under a
"[secret]" upload shows as "(secret changed)" while its diff carries only placeholders.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.realtools import require_real_tier
from tools import plan_diff as pd

CONTAINER = pd.CONTAINER_TYPE
SERVER = pd.SERVER_TYPE
PREFIX = "urn:pulumi:dev::torrust-hybrid-tls::"


# ---------------------------------------------------------------------------------------------
# Synthetic plans


def resource(
    type_: str, name: str, inputs: dict[str, Any], parent: str = "torrust:index:Svc", **options: Any
) -> dict[str, Any]:
    base_options: dict[str, Any] = {
        "protect": False,
        "deleteBeforeReplace": False,
        "ignoreChanges": [],
        "replaceOnChanges": [],
        "dependsOn": [],
        "provider": "",
    }
    base_options.update(options)
    return {
        "urn": f"{PREFIX}{parent}${type_}::{name}",
        "type": type_,
        "name": name,
        "parent": "",
        "inputs": inputs,
        "options": base_options,
    }


def plan(*resources: dict[str, Any], outputs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "stack": "dev",
        "project": "torrust-hybrid-tls",
        "resources": list(resources),
        "outputs": outputs or {},
    }


def container(rname: str = "grafana", /, **inputs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "image": "grafana/grafana:12.4.2",
        "restart": "unless-stopped",
        "envs": ["A=1", "[secret]"],
        "uploads": [{"file": "/etc/app.conf", "content": "x = 1\n"}],
    }
    values.update(inputs)
    return resource(CONTAINER, rname, values, deleteBeforeReplace=True)


def server(**inputs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "image": "docker-ce",
        "location": "nbg1",
        "serverType": "cx23",
        "userData": "[secret]",
    }
    values.update(inputs)
    return resource(SERVER, "host-server", values, parent="torrust:index:Host")


def only(result: pd.PlanDiff, name: str) -> pd.ResourceDiff:
    matches = [r for r in result.resources if r.name == name]
    assert len(matches) == 1, [r.name for r in result.resources]
    return matches[0]


def test_identical_plans_render_no_changes() -> None:
    result = pd.diff_plans(plan(container(), server()), plan(container(), server()))
    assert not result.changed
    markdown = pd.render_markdown(result)
    assert markdown.startswith(pd.MARKER)
    assert "No changes." in markdown


def test_container_image_change_forces_replacement() -> None:
    result = pd.diff_plans(plan(container()), plan(container(image="grafana/grafana:12.4.3")))
    diff = only(result, "grafana")
    assert diff.action == "replace"
    assert diff.delete_before_replace
    [change] = diff.changes
    assert (change.path, change.old, change.new, change.rule) == (
        "image",
        "grafana/grafana:12.4.2",
        "grafana/grafana:12.4.3",
        "ForceNew",
    )
    markdown = pd.render_markdown(result)
    assert '`image`: "grafana/grafana:12.4.2" → "grafana/grafana:12.4.3" — **forces replacement**' in markdown
    assert "SERVER" not in markdown


@pytest.mark.parametrize("key", ["ports", "volumes", "networksAdvanced", "command", "labels", "name", "envs"])
def test_container_force_new_fields(key: str) -> None:
    result = pd.diff_plans(plan(container(**{key: ["a"]})), plan(container(**{key: ["b"]})))
    assert only(result, "grafana").action == "replace"


def test_container_in_place_and_unknown_fields() -> None:
    result = pd.diff_plans(
        plan(container(restart="no", memory=256)), plan(container(restart="always", memory=512))
    )
    diff = only(result, "grafana")
    assert diff.action == "update"
    assert {c.rule for c in diff.changes} == {"in place"}
    result = pd.diff_plans(plan(container(deviceCgroupRules=["a"])), plan(container(deviceCgroupRules=["b"])))
    diff = only(result, "grafana")
    assert (diff.action, diff.maybe_replace) == ("update", True)
    assert "may replace" in pd.render_markdown(result)


def test_uploads_keyed_by_file_and_secret_inputs_listed() -> None:
    old = container(uploads=[{"file": "/a", "content": "1"}, {"file": "/b", "content": "2"}])
    new = container(uploads=[{"file": "/b", "content": "3"}, {"file": "/a", "content": "1"}])
    diff = only(pd.diff_plans(plan(old), plan(new)), "grafana")
    assert [c.path for c in diff.changes] == ["uploads[file=/b].content"]
    assert diff.secret_inputs == ["envs[1]"]
    markdown = pd.render_markdown(pd.diff_plans(plan(old), plan(new)))
    assert "secret inputs (values hidden from the plan" in markdown
    assert "`envs[1]`" in markdown


def test_secret_upload_detected_through_rendered_file() -> None:
    old = container(uploads=[{"file": "/etc/app.conf", "content": "[secret]"}])
    new = container(uploads=[{"file": "/etc/app.conf", "content": "[secret]"}])
    files_old = {"files/grafana/etc/app.conf": "token = <plan-placeholder:trackerAdminToken>\nport = 1\n"}
    files_new = {"files/grafana/etc/app.conf": "token = <plan-placeholder:trackerAdminToken>\nport = 2\n"}
    result = pd.diff_plans(plan(old), plan(new), files_old, files_new)
    diff = only(result, "grafana")
    assert diff.action == "replace"
    assert [c.path for c in diff.changes] == ["uploads[file=/etc/app.conf].content"]
    markdown = pd.render_markdown(result)
    assert "`uploads[file=/etc/app.conf].content`: [secret] (secret changed)" in markdown
    assert "-port = 1" in markdown and "+port = 2" in markdown
    assert "token = <plan-placeholder:trackerAdminToken>" in markdown


def test_secret_value_never_printed_when_marking_changes() -> None:
    result = pd.diff_plans(
        plan(container(envs=["A=1", "[secret]"])), plan(container(envs=["A=1", "B=plain"]))
    )
    [change] = only(result, "grafana").changes
    assert pd.fmt(change.old) == "[secret]"
    assert '`envs[1]`: [secret] → "B=plain"' in pd.render_markdown(result)


def test_server_replacement_is_loud_and_first() -> None:
    old, new = plan(server(), container()), plan(server(image="ubuntu-24.04"), container())
    result = pd.diff_plans(old, new)
    assert [r.name for r in result.server_replacements] == ["host-server"]
    markdown = pd.render_markdown(result)
    lines = markdown.splitlines()
    assert lines[0] == pd.MARKER
    assert lines[3].startswith("### ⚠️ SERVER REPLACED")
    assert markdown.index("⚠️ SERVER") < markdown.index("| Action |")
    # Primary IPs and the generated host key persist (decision 0007): no "new IP" scare.
    assert "new IP" not in markdown and "Primary IPs, the Pulumi-generated SSH host key" in markdown


def test_server_user_data_through_cloud_init_and_in_place_fields() -> None:
    files_old = {"cloud-init.yaml": "packages: [a]\n"}
    files_new = {"cloud-init.yaml": "packages: [a, b]\n"}
    result = pd.diff_plans(plan(server()), plan(server()), files_old, files_new)
    diff = only(result, "host-server")
    assert diff.action == "replace"
    assert [c.path for c in diff.changes] == ["userData"]
    assert result.files[0].resource == "host-server"
    result = pd.diff_plans(plan(server()), plan(server(serverType="cx33")))
    assert only(result, "host-server").action == "update"
    assert not result.server_replacements


@pytest.mark.parametrize("key", ["image", "location", "datacenter", "userData", "sshKeys"])
def test_server_force_new_fields(key: str) -> None:
    result = pd.diff_plans(plan(server(**{key: ["a"]})), plan(server(**{key: ["b"]})))
    assert only(result, "host-server").action == "replace"


# One case per class of the providers' rules (tools/plan_diff.py RULES cites the sources).
RULE_CASES = [
    # (type, input, old, new, action, rule)
    ("docker:index/remoteImage:RemoteImage", "platform", "linux/amd64", "linux/arm64", "replace", "ForceNew"),
    (CONTAINER, "memory", 256, 512, "update", "in place"),
    (SERVER, "publicNets", [{"ipv4Enabled": True}], [{"ipv4Enabled": False}], "update", "in place"),
    (CONTAINER, "destroyGraceSeconds", 10, 30, "update", "provider setting"),
    (CONTAINER, "tmpfs", {"/run": ""}, {"/tmp": ""}, "update", "not applied"),
    (CONTAINER, "init", False, True, "update", "not applied"),
    (CONTAINER, "cpuQuota", 0, 50000, "update", "not applied"),
    (CONTAINER, "wait", False, True, "update", "not applied"),
    ("hcloud:index/volume:Volume", "format", "ext4", "xfs", "update", "not applied"),
    ("hcloud:index/volume:Volume", "automount", False, True, "update", "not applied"),
    ("hcloud:index/volumeAttachment:VolumeAttachment", "automount", False, True, "update", "no update"),
]


@pytest.mark.parametrize(("type_", "key", "old", "new", "action", "rule"), RULE_CASES)
def test_provider_rule_classes(type_: str, key: str, old: Any, new: Any, action: str, rule: str) -> None:
    result = pd.diff_plans(
        plan(resource(type_, "thing", {key: old})), plan(resource(type_, "thing", {key: new}))
    )
    diff = only(result, "thing")
    assert diff.action == action
    assert {c.rule for c in diff.changes} == {rule}
    assert not diff.maybe_replace
    markdown = pd.render_markdown(result)
    if rule in ("not applied", "no update"):
        assert diff.not_applied and result.to_json()["resources"][0]["notApplied"]
        assert "⚠️ not applied" in markdown and f"**{rule}** by the provider" in markdown
        assert ("doesn't support update" in markdown) == (rule == "no update")
        assert "in place:" not in markdown, "a change the provider cannot apply is not 'in place'"
    else:
        assert not diff.not_applied and "not applied" not in markdown


def _sdk_inputs(args_class: type) -> set[str]:
    """Engine input names of a Pulumi SDK resource (its Args' snake_case names, camelCased)."""
    import inspect
    import re

    names = re.findall(r'pulumi\.set\(__self__, "(\w+)"', inspect.getsource(args_class.__init__))  # type: ignore[misc]
    return {re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name) for name in names}


# Inputs of the pinned SDKs that the cited provider sources do not have yet (pulumi-docker 5.2.0 wraps
# a kreuzwerker newer than the stored v4.5.0): left "unknown" (may replace) on purpose.
UNVERIFIED = {CONTAINER: {"deviceCgroupRules"}}


def test_rules_classify_every_input_of_the_pinned_sdks() -> None:
    import pulumi_command
    import pulumi_docker
    import pulumi_hcloud

    sdk = {
        CONTAINER: pulumi_docker.ContainerArgs,
        SERVER: pulumi_hcloud.ServerArgs,
        "docker:index/remoteImage:RemoteImage": pulumi_docker.RemoteImageArgs,
        "hcloud:index/volume:Volume": pulumi_hcloud.VolumeArgs,
        "hcloud:index/volumeAttachment:VolumeAttachment": pulumi_hcloud.VolumeAttachmentArgs,
        "hcloud:index/primaryIp:PrimaryIp": pulumi_hcloud.PrimaryIpArgs,
        "hcloud:index/sshKey:SshKey": pulumi_hcloud.SshKeyArgs,
        "hcloud:index/firewall:Firewall": pulumi_hcloud.FirewallArgs,
        "command:remote:Command": pulumi_command.remote.CommandArgs,
    }
    for type_, args_class in sdk.items():
        rule = pd.RULES[type_]
        classes = [rule.force_new, rule.in_place, rule.provider, rule.not_applied]
        classified = set().union(*classes)
        assert sum(len(c) for c in classes) == len(classified), f"{type_}: an input in two classes"
        inputs = _sdk_inputs(args_class)
        assert classified <= inputs, f"{type_}: not inputs: {sorted(classified - inputs)}"
        assert inputs - classified == UNVERIFIED.get(type_, set()), f"{type_}: unclassified"


def test_healthcheck_change_replaces_with_replace_on_changes() -> None:
    """Containers carry `replaceOnChanges: ["healthcheck"]`: kreuzwerker neither replaces nor updates
    on a health check change, so without the option the edit never reaches the container."""
    old_check = {"tests": ["CMD", "true"], "interval": "30s", "retries": 3}
    new_check = {**old_check, "interval": "10s"}
    option = {"replaceOnChanges": ["healthcheck"]}
    result = pd.diff_plans(
        plan(container(healthcheck=old_check), container("tracker", healthcheck=old_check)),
        plan(container(healthcheck=new_check), container("tracker", healthcheck=new_check)),
    )
    assert only(result, "grafana").action == "update" and only(result, "grafana").not_applied
    old, new = container(healthcheck=old_check), container(healthcheck=new_check)
    old["options"].update(option)
    new["options"].update(option)
    result = pd.diff_plans(plan(old), plan(new))
    diff = only(result, "grafana")
    assert diff.action == "replace" and not diff.not_applied
    [change] = diff.changes
    assert (change.path, change.rule) == ("healthcheck.interval", "replaceOnChanges `healthcheck`")
    assert "**forces replacement** (replaceOnChanges `healthcheck`)" in pd.render_markdown(result)
    # The option is read from plan.json generically: any resource type, any path.
    thing_old = resource("custom:index:Thing", "t", {"probe": {"a": 1}}, replaceOnChanges=["probe"])
    thing_new = resource("custom:index:Thing", "t", {"probe": {"a": 2}}, replaceOnChanges=["probe"])
    assert only(pd.diff_plans(plan(thing_old), plan(thing_new)), "t").action == "replace"


def test_replace_on_changes_and_ignore_changes_options() -> None:
    old = resource("command:remote:Command", "ready", {"triggers": ["1"], "create": "a"})
    new = resource(
        "command:remote:Command",
        "ready",
        {"triggers": ["2"], "create": "a"},
        replaceOnChanges=["triggers[*]"],
    )
    diff = only(pd.diff_plans(plan(old), plan(new)), "ready")
    assert diff.action == "replace"
    assert any("replaceOnChanges" in c.rule for c in diff.changes)
    old = resource("custom:index:Thing", "thing", {"a": {"b": 1}}, ignoreChanges=["a.b"])
    new = resource("custom:index:Thing", "thing", {"a": {"b": 2}}, ignoreChanges=["a.b"])
    assert pd.diff_plans(plan(old), plan(new)).resources == []


def test_urn_change_is_delete_and_create() -> None:
    old = container()
    new = dict(container(), urn=f"{PREFIX}torrust:index:Other$docker:index/container:Container::grafana")
    result = pd.diff_plans(plan(old), plan(new))
    diff = only(result, "grafana")
    assert diff.action == "replace"
    assert diff.old_urn == old["urn"]
    assert "URN changed" in pd.render_markdown(result)


def test_create_delete_protect_and_dependents() -> None:
    net = resource("docker:index/network:Network", "net", {"name": "edge"})
    app = container("app", image="x:1")
    app["options"]["dependsOn"] = [net["urn"]]
    gone = resource("hcloud:index/sshKey:SshKey", "key", {"publicKey": "ssh-ed25519 A"}, protect=True)
    old = plan(net, app, gone)
    new_net = resource("docker:index/network:Network", "net", {"name": "edge2"})
    extra = resource("hcloud:index/firewall:Firewall", "fw", {"rules": []})
    result = pd.diff_plans(old, plan(new_net, app, extra))
    assert only(result, "net").action == "replace"
    assert only(result, "fw").action == "create"
    deleted = only(result, "key")
    assert deleted.action == "delete"
    assert "protected" in deleted.reasons[0]
    assert [name for _, name, _ in result.consequences] == ["app"]
    summary = result.to_json()
    assert summary["counts"] == {"create": 1, "delete": 1, "replace": 1, "update": 0, "options": 0}
    json.dumps(summary)


def test_option_only_changes() -> None:
    old = container()
    new = container()
    new["options"]["protect"] = True
    diff = only(pd.diff_plans(plan(old), plan(new)), "grafana")
    assert diff.action == "options"
    assert [c.path for c in diff.option_changes] == ["protect"]


def test_outputs_and_values_are_truncated() -> None:
    long = "x" * 500
    result = pd.diff_plans(plan(outputs={"a": long}), plan(outputs={"a": long + "y"}))
    [change] = result.outputs
    text = pd.fmt(change.new)
    assert len(text) < 100 and "(501 chars)" in text
    assert pd.fmt("line1\nline2\nline3") == '"line1 …" (3 lines)'
    assert pd.fmt(2.0) == "2"
    assert pd.fmt("[unknown]") == "(known after apply)"


def test_markdown_size_limit_drops_file_diffs_first() -> None:
    files_old = {f"files/grafana/f{i}": "a\n" * 2000 for i in range(3)}
    files_new = {f"files/grafana/f{i}": "b\n" * 2000 for i in range(3)}
    result = pd.diff_plans(plan(container()), plan(container()), files_old, files_new)
    markdown = pd.render_markdown(result, max_chars=5000)
    assert len(markdown) <= 5000
    assert "diff omitted" in markdown
    assert "files/grafana/f0" in markdown


def test_paths_patterns_and_masking() -> None:
    flat = pd.flatten(
        {"uploads": [{"file": "/a", "content": "1"}], "ports": [{"internal": 1}, {"internal": 1}]}
    )
    assert set(map(pd.dotted, flat)) == {
        "uploads[file=/a].file",
        "uploads[file=/a].content",
        "ports[0].internal",
        "ports[1].internal",
    }
    assert pd.parse_pattern("triggers[*]") == ("triggers", "[*]")
    assert pd.path_matches(("triggers", "[0]"), pd.parse_pattern("triggers[*]"))
    assert pd.path_matches(("a", "b", "c"), pd.parse_pattern("a.*"))
    assert not pd.path_matches(("a", "[1]"), pd.parse_pattern("a[0]"))
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nREALKEYMATERIAL\n-----END OPENSSH PRIVATE KEY-----\n"
    assert "REALKEYMATERIAL" not in pd.mask_text(pem)
    placeholder = pem.replace("REALKEYMATERIAL", "PLAN-PLACEHOLDER-x")
    assert pd.mask_text(placeholder) == placeholder
    assert pd._fence("a ```` b") == "`````"


def test_secure_values_and_secret_config_report() -> None:
    doc = {"config": {"p:token": {"secure": "v1:A"}, "p:nested": {"pw": {"secure": "v1:B"}}, "p:plain": "x"}}
    assert pd.secure_values(doc) == {"p:token": "v1:A", "p:nested.pw": "v1:B"}
    result = pd.diff_plans(plan(container()), plan(container()))
    files = {"files/prometheus/etc/prometheus.yml": 'token: ["\\u003cplan-placeholder:token\\u003e"]\n'}
    pd.add_secret_config(result, {"p:token": "v1:A"}, {"p:token": "v1:C"}, plan(container()), files)
    assert [(s.key, s.status, s.files) for s in result.secret_config] == [
        ("p:token", "changed", ["files/prometheus/etc/prometheus.yml"])
    ]
    assert result.secret_consumers == [("grafana", ["envs[1]"])]
    markdown = pd.render_markdown(result)
    assert "No changes to resources." in markdown
    assert "v1:A" not in markdown and "v1:C" not in markdown


def test_masks_match_the_plan_tool() -> None:
    from tools import mocks

    assert pd.SECRET_MASK == mocks.SECRET_MASK
    assert pd.UNKNOWN_MASK == mocks.UNKNOWN_MASK


# ---------------------------------------------------------------------------------------------
# Real git history in a scratch repository

GIT = [
    "git",
    "-c",
    "user.name=plan-diff test",
    "-c",
    "user.email=test@example.com",
    "-c",
    "commit.gpgsign=false",
]


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_real_tier()  # plan-diff as a process, over a scratch git history
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path_factory.mktemp("plan-diff-repo")
    tracked = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-z"], capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        source = REPO_ROOT / name
        if source.is_file():
            target = repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    git(repo, "tag", "base")
    return repo


Edit = Callable[[Path], None]


def replace_in(path: str, old: str, new: str) -> Edit:
    def edit(repo: Path) -> None:
        text = (repo / path).read_text()
        assert old in text, f"{old!r} not in {path}"
        (repo / path).write_text(text.replace(old, new, 1))

    return edit


def run_diff(repo: Path, *edits: Edit, branch: str) -> tuple[str, dict[str, Any]]:
    """Branch from `base`, commit each edit, diff HEAD~1 against the working tree."""
    git(repo, "checkout", "-q", "-f", "-B", branch, "base")
    for index, edit in enumerate(edits):
        edit(repo)
        git(repo, "commit", "-q", "--allow-empty", "-am", f"{branch} {index}")
    out = repo.parent / f"{branch}.md"
    summary = repo.parent / f"{branch}.json"
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "tools.plan_diff", "--repo", str(repo), "--base", "HEAD~1"),
            *("--markdown-file", str(out), "--json-file", str(summary)),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == out.read_text()
    assert "worktree" not in git(repo, "worktree", "list").split("\n", 1)[1], "temporary worktree left behind"
    result: dict[str, Any] = json.loads(summary.read_text())
    return completed.stdout, result


def actions(summary: dict[str, Any]) -> dict[str, str]:
    return {r["name"]: r["action"] for r in summary["resources"]}


def test_git_no_op(scratch: Path) -> None:
    markdown, summary = run_diff(
        scratch, replace_in("Pulumi.dev.yaml", "config:", "# touched\nconfig:"), branch="noop"
    )
    assert "No changes." in markdown
    assert summary["changed"] is False


def test_git_grafana_host_rename(scratch: Path) -> None:
    markdown, summary = run_diff(
        scratch,
        replace_in("Pulumi.dev.yaml", "grafana: grafana.example.com", "grafana: dash.example.com"),
        branch="rn",
    )
    found = actions(summary)
    assert found["nginx-certbot"] == "replace"
    assert found["grafana"] == "replace"
    assert found["pingoo"] == "replace", "Pingoo serves the Grafana redirect name"
    assert "host-server" not in found
    assert summary["serverReplaced"] is False
    assert "⚠️ SERVER" not in markdown
    changed_files = {f["path"] for f in summary["files"]}
    assert "files/pingoo/etc/pingoo.yml" in changed_files or any("pingoo.yml" in f for f in changed_files)
    assert any(f.startswith("files/nginx-certbot/") for f in changed_files)
    assert "cloud-init.yaml" not in changed_files
    assert '+    route: http_request.host == "dash.example.com"' in markdown
    assert "```diff" in markdown


def test_git_image_bump(scratch: Path) -> None:
    markdown, summary = run_diff(
        scratch,
        replace_in("Pulumi.dev.yaml", "grafana/grafana:12.4.14", "grafana/grafana:12.4.15"),
        branch="img",
    )
    replaced = [r for r in summary["resources"] if r["action"] == "replace" and r["type"] == CONTAINER]
    assert [r["name"] for r in replaced] == ["grafana"]
    assert actions(summary)["grafana-image"] == "replace"
    assert summary["serverReplaced"] is False
    assert '`image`: "grafana/grafana:12.4.14" → "grafana/grafana:12.4.15"' in markdown


def test_git_secret_change(scratch: Path) -> None:
    key = "torrust-hybrid-tls:trackerAdminToken"
    add = replace_in("Pulumi.dev.yaml", "config:\n", f"config:\n  {key}:\n    secure: v1:AAAAold\n")
    change = replace_in("Pulumi.dev.yaml", "v1:AAAAold", "v1:BBBBnew")
    markdown, summary = run_diff(scratch, add, change, branch="secret")
    # The placeholder-based plan is identical; the ciphertext change is what shows.
    assert summary["resources"] == [] and summary["files"] == []
    [secret] = summary["secretConfig"]
    assert (secret["key"], secret["status"]) == (key, "changed")
    assert "files/prometheus/etc/prometheus/prometheus.yml" in secret["files"]
    assert "tracker" in {c["name"] for c in summary["secretConsumers"]}
    assert "No changes to resources." in markdown and "Secret configuration changed" in markdown
    assert "AAAAold" not in markdown and "BBBBnew" not in markdown


def test_git_server_image_change(scratch: Path) -> None:
    markdown, summary = run_diff(
        scratch, replace_in("Pulumi.dev.yaml", "image: docker-ce", "image: ubuntu-24.04"), branch="srv"
    )
    assert summary["serverReplaced"] is True
    assert actions(summary)["host-server"] == "replace"
    lines = markdown.splitlines()
    assert lines[3].startswith("### ⚠️ SERVER REPLACED"), lines[:5]
    assert '`image`: "docker-ce" → "ubuntu-24.04"' in markdown
    # Everything on the server is re-created there; the volume and the IPs are not touched.
    assert actions(summary)["tracker"] == "replace"
    assert actions(summary)["host-volume-attachment"] == "replace"
    assert not {"host-volume", "host-ipv4", "host-ipv6"} & set(actions(summary))


def test_git_bad_ref_fails_cleanly(scratch: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tools.plan_diff", "--repo", str(scratch), "--base", "no-such-ref"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "not a commit" in completed.stderr
