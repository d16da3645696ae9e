"""GitHub workflows: minimal permissions, fork-safe, secrets only behind the credentials gate,
deploys behind an environment, and actionlint clean (tools/run_actionlint.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tools import plan_diff
from tools.run_actionlint import find_actionlint

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
GATE = "steps.gate.outputs.enabled == 'true'"


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return document


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # PyYAML (YAML 1.1) reads the bare key `on` as True.
    value = workflow.get("on", workflow.get(True))
    if isinstance(value, str):
        return {value: None}
    if isinstance(value, list):
        return dict.fromkeys(value)
    assert isinstance(value, dict)
    return value


def steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = workflow["jobs"][job]["steps"]
    return result


def uses(step: dict[str, Any]) -> str:
    return str(step.get("uses", ""))


def step_using(workflow: dict[str, Any], job: str, action: str) -> dict[str, Any]:
    [step] = [s for s in steps(workflow, job) if uses(s).startswith(action)]
    return step


def mentions_secrets(value: Any) -> bool:
    return "secrets." in yaml.safe_dump(value)


ALL = sorted(p.name for p in WORKFLOWS.glob("*.yml"))


def test_expected_workflows_exist() -> None:
    assert set(ALL) >= {"ci.yml", "preview.yml", "deploy.yml", "plan-diff.yml", "plan-diff-comment.yml"}


@pytest.mark.parametrize("name", ALL)
def test_top_level_permissions_are_read_only(name: str) -> None:
    workflow = load(name)
    assert "permissions" in workflow, "set top-level permissions; the default token may write"
    permissions = workflow["permissions"] or {}
    assert all(level in ("read", "none") for level in permissions.values()), permissions


@pytest.mark.parametrize("name", ALL)
def test_no_privileged_pull_request_trigger(name: str) -> None:
    assert "pull_request_target" not in triggers(load(name))


@pytest.mark.parametrize("name", ALL)
def test_run_scripts_do_not_interpolate_event_data(name: str) -> None:
    # Script injection: event fields go through env:, never ${{ }} inside a shell script.
    for job in load(name)["jobs"].values():
        for step in job.get("steps", []):
            script = str(step.get("run", ""))
            assert not re.search(r"\$\{\{\s*(github\.event|github\.head_ref|inputs\.)", script), step


@pytest.mark.parametrize("name", ALL)
def test_host_key_checking_never_relaxed(name: str) -> None:
    text = (WORKFLOWS / name).read_text()
    assert "StrictHostKeyChecking=no" not in text
    assert "UserKnownHostsFile=/dev/null" not in text
    assert "ssh-keyscan" not in text


def write_permissions(name: str) -> dict[str, dict[str, str]]:
    return {
        job_name: {k: v for k, v in (job.get("permissions") or {}).items() if v == "write"}
        for job_name, job in load(name)["jobs"].items()
        if any(v == "write" for v in (job.get("permissions") or {}).values())
    }


def test_only_commenting_jobs_may_write() -> None:
    granted = {name: write_permissions(name) for name in ALL}
    assert granted == {
        "ci.yml": {},
        "deploy.yml": {},
        "doctor.yml": {"notify": {"issues": "write"}},
        "plan-diff.yml": {},
        "plan-diff-comment.yml": {"comment": {"pull-requests": "write"}},
        "preview.yml": {"preview": {"pull-requests": "write"}},
    }


def test_ci_runs_the_ci_entry_point() -> None:
    workflow = load("ci.yml")
    assert {"push", "pull_request"} <= set(triggers(workflow))
    assert any(s.get("run") == ".ci/run" for s in steps(workflow, "check"))


def test_preview_is_gated_on_credentials() -> None:
    workflow = load("preview.yml")
    assert set(triggers(workflow)) == {"pull_request"}
    preview = steps(workflow, "preview")
    gate = preview[0]
    assert gate["id"] == "gate" and "if" not in gate
    script = gate["run"]
    assert 'echo "enabled=true" >> "$GITHUB_OUTPUT"' in script
    assert 'echo "enabled=false" >> "$GITHUB_OUTPUT"' in script
    assert "::notice" in script and "GITHUB_STEP_SUMMARY" in script and "forks" in script
    env = gate["env"]
    for secret in ("PULUMI_ACCESS_TOKEN", "PULUMI_CONFIG_PASSPHRASE"):
        # The gate only learns whether a secret exists, never its value.
        assert f"secrets.{secret} != ''" in yaml.safe_dump(env)
    for step in preview[1:]:
        assert GATE in str(step.get("if", "")), f"step not behind the credentials gate: {step}"
    # The check job runs without secrets.
    assert not mentions_secrets(workflow["jobs"]["check"])
    assert workflow["jobs"]["preview"]["needs"] == "check"


def test_preview_step_configuration() -> None:
    workflow = load("preview.yml")
    step = step_using(workflow, "preview", "pulumi/actions@v7")
    inputs = step["with"]
    assert inputs["command"] == "preview"
    assert inputs["comment-on-pr"] is True and inputs["diff"] is True
    assert inputs["stack-name"] == "${{ vars.PULUMI_STACK }}"
    assert inputs["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"
    assert step["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    assert step["env"]["PULUMI_ACCESS_TOKEN"] == "${{ secrets.PULUMI_ACCESS_TOKEN }}"


def test_preview_needs_no_ssh() -> None:
    # kreuzwerker's configure() only stores settings; the daemon is dialled in CRUD/Read, which a
    # preview without --refresh never calls (docs/pr-previews.md). No key, no port 22 for PRs.
    workflow = load("preview.yml")
    assert "SSH_PRIVATE_KEY" not in yaml.safe_dump(workflow)
    assert not any("ssh-agent" in str(s.get("run", "")) for s in steps(workflow, "preview"))
    assert step_using(workflow, "preview", "pulumi/actions@v7")["with"].get("refresh") in (None, False)


def test_deploy_opens_ssh_for_the_runner_and_always_closes_it() -> None:
    workflow = load("deploy.yml")
    deploy = steps(workflow, "deploy")
    gate = deploy[0]
    assert "secrets.HCLOUD_TOKEN != ''" in yaml.safe_dump(gate["env"])
    assert 'missing+=("secret HCLOUD_TOKEN")' in gate["run"]
    names = [s.get("name", uses(s)) for s in deploy]
    [opening] = [s for s in deploy if "tools.runner_firewall open" in str(s.get("run", ""))]
    [closing] = [s for s in deploy if "tools.runner_firewall close" in str(s.get("run", ""))]
    up = step_using(workflow, "deploy", "pulumi/actions@v7")
    assert deploy.index(opening) < deploy.index(up) < deploy.index(closing), names
    assert opening["if"] == GATE
    assert closing["if"] == f"always() && {GATE}", "a failed or cancelled up must still close port 22"
    for step in (opening, closing):
        assert step["env"] == {
            "HCLOUD_TOKEN": "${{ secrets.HCLOUD_TOKEN }}",
            "STACK": "${{ vars.PULUMI_STACK }}",
        }
        assert '--stack "$STACK"' in step["run"]
    # The module the steps run exists and takes these arguments.
    from tools import runner_firewall

    assert runner_firewall.server_selector("org/prod") == "app=torrust-tracker,stack=prod"


@pytest.mark.parametrize(("name", "job"), [("deploy.yml", "deploy")])
def test_ssh_agent_without_third_party_action(name: str, job: str) -> None:
    workflow = load(name)
    [agent] = [s for s in steps(workflow, job) if "ssh-agent -a" in str(s.get("run", ""))]
    assert "ssh-add -" in agent["run"]
    assert agent["env"]["SSH_PRIVATE_KEY"] == "${{ secrets.SSH_PRIVATE_KEY }}"
    assert "SSH_AUTH_SOCK" in agent["run"] and "GITHUB_ENV" in agent["run"]
    assert not any("webfactory" in uses(s) for s in steps(workflow, job))


def test_deploy_behind_environment_and_serialised() -> None:
    workflow = load("deploy.yml")
    assert triggers(workflow)["push"] == {"branches": ["main"]}
    assert "pull_request" not in triggers(workflow)
    deploy = workflow["jobs"]["deploy"]
    assert deploy["environment"] == "production"
    assert deploy["needs"] == "check"
    concurrency = workflow["concurrency"]
    assert concurrency["group"] and concurrency["cancel-in-progress"] is False
    step = step_using(workflow, "deploy", "pulumi/actions@v7")
    assert step["with"]["command"] == "up"
    assert GATE in step["if"]
    assert not mentions_secrets(workflow["jobs"]["check"])


def test_plan_diff_runs_for_forks_without_secrets() -> None:
    workflow = load("plan-diff.yml")
    assert set(triggers(workflow)) == {"pull_request"}
    assert not mentions_secrets(workflow)
    assert workflow["permissions"] == {"contents": "read"}
    job = steps(workflow, "plan-diff")
    checkout = step_using(workflow, "plan-diff", "actions/checkout@")
    assert checkout["with"]["fetch-depth"] == 0
    [render] = [s for s in job if "tools.plan_diff" in str(s.get("run", ""))]
    assert render["env"]["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    assert "GITHUB_STEP_SUMMARY" in render["run"]
    assert plan_diff.MARKER in render["run"]  # the failure comment carries the marker too
    upload = step_using(workflow, "plan-diff", "actions/upload-artifact@")
    assert upload["with"]["name"] == "plan-diff" and upload["if"] == "always()"


def test_plan_diff_comment_workflow() -> None:
    workflow = load("plan-diff-comment.yml")
    assert triggers(workflow)["workflow_run"] == {
        "workflows": [load("plan-diff.yml")["name"]],
        "types": ["completed"],
    }
    assert workflow["permissions"] == {}
    job = workflow["jobs"]["comment"]
    assert job["permissions"] == {"actions": "read", "pull-requests": "write"}
    assert "workflow_run.event == 'pull_request'" in job["if"]
    assert not any(uses(s).startswith("actions/checkout") for s in job["steps"]), (
        "never check out PR code here"
    )
    download = step_using(workflow, "comment", "actions/download-artifact@")
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    script = step_using(workflow, "comment", "actions/github-script@")["with"]["script"]
    assert f"'{plan_diff.MARKER}'" in script
    assert "pr.head.sha !== run.head_sha" in script  # the artifact's PR number is verified
    assert "updateComment" in script and "createComment" in script


def test_actionlint_is_clean() -> None:
    if find_actionlint() is None and not os.environ.get("REQUIRE_REAL_TOOLS"):
        pytest.skip("actionlint is not installed (pip install -r requirements-dev.txt)")
    completed = subprocess.run(
        [sys.executable, "-m", "tools.run_actionlint"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_run_actionlint_skips_or_fails_without_binary(tmp_path: Path) -> None:
    script = (
        "import sys; sys.executable = sys.argv[1]"
        "; from tools import run_actionlint as r; sys.exit(r.main([]))"
    )
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    fake = str(tmp_path / "python")
    skipped = subprocess.run(
        [sys.executable, "-c", script, fake],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert skipped.returncode == 0 and "skipped" in skipped.stderr
    failed = subprocess.run(
        [sys.executable, "-c", script, fake],
        cwd=REPO_ROOT,
        env={**env, "REQUIRE_REAL_TOOLS": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 1 and "REQUIRE_REAL_TOOLS" in failed.stderr


def test_doctor_runs_on_a_schedule_and_reports_failures() -> None:
    workflow = load("doctor.yml")
    on = triggers(workflow)
    assert set(on) == {"schedule", "workflow_dispatch"} and on["schedule"][0]["cron"]
    doctor = workflow["jobs"]["doctor"]
    # A schedule cannot wait for reviewers: a separate environment from `production`.
    assert doctor["environment"] == "monitoring" and doctor["permissions"] == {"contents": "read"}
    [run_step] = [s for s in steps(workflow, "doctor") if s.get("name") == "make doctor"]
    assert 'make doctor OUTPUTS="$RUNNER_TEMP/outputs.json"' in run_step["run"]
    assert "set -o pipefail" in run_step["run"]  # tee must not hide the doctor's exit code
    gated = [s for s in steps(workflow, "doctor")[1:]]
    assert all(GATE in str(s.get("if", "")) for s in gated)
    [read] = [s for s in steps(workflow, "doctor") if s.get("name") == "Read the stack outputs"]
    assert "--show-secrets" in read["run"] and "umask 077" in read["run"]
    notify = workflow["jobs"]["notify"]
    assert notify["needs"] == "doctor" and notify["if"].startswith("failure()")
    assert notify["permissions"] == {"issues": "write"}
    assert "gh issue create" in steps(workflow, "notify")[0]["run"]
    assert not mentions_secrets(notify)


def test_make_doctor_target_passes_outputs_or_stack() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "$(PYTHON) -m tools.doctor $(if $(OUTPUTS),--outputs $(OUTPUTS),--stack $(STACK))" in makefile
    dry = subprocess.run(
        ["make", "-n", "doctor", "STACK=prod"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert dry.returncode == 0 and "-m tools.doctor --stack prod" in dry.stdout
