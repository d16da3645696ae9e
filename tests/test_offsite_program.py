"""Off-site backups in the program (under mocks) and the plan: settings, the Storage Box and its
options, the secret credentials Command, the rendered units and install script, `make plan`."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from core.settings import ConfigError, StackSettings, load_settings
from services.backups import backup
from tests.conftest import REPO_ROOT, Deploy, dev_config
from tests.realtools import require_real_tier, require_tool
from tools.mocks import (
    EXAMPLE_HOST_PRIVATE_KEY,
    EXAMPLE_HOST_PUBLIC_KEY,
    EXAMPLE_STORAGE_BOX_SERVER,
    EXAMPLE_STORAGE_BOX_USER,
    GENERATED_PASSWORD,
    is_secret,
    reveal,
)

STORAGE_BOX = "hcloud:index/storageBox:StorageBox"
COMMAND = "command:remote:Command"
BOX = {"offsite": {"kind": "storageBox", "storageBox": {"type": "bx21", "location": "hel1"}}}
S3 = {
    "offsite": {
        "kind": "restic",
        "repository": "s3:https://s3.example.com/bucket/torrust",
        "credentials": {"AWS_ACCESS_KEY_ID": "offsiteAwsKeyId", "AWS_SECRET_ACCESS_KEY": "offsiteAwsSecret"},
    }
}
S3_SECRETS: dict[str, str | None] = {
    "offsiteAwsKeyId": "CANARY-key-id-81f3",
    "offsiteAwsSecret": "CANARY-secret-7d2e9a",
}


def stack_settings(backup_config: dict[str, Any]) -> StackSettings:
    config = dev_config()
    config["backup"] = backup_config
    return load_settings("dev", config.get)


# --- Settings --------------------------------------------------------------------------------


def test_offsite_is_off_by_default() -> None:
    offsite = load_settings("dev", dev_config().get).backup.offsite
    assert offsite.kind == "none" and not offsite.enabled
    assert (offsite.keep_daily, offsite.keep_weekly, offsite.keep_monthly) == (7, 5, 12)


@pytest.mark.parametrize(
    ("offsite", "key", "message"),
    [
        ({"kind": "restic"}, "backup.offsite", "needs a repository"),
        (
            {"kind": "storageBox", "storageBox": {"location": "nbg1"}},
            "backup.offsite.storageBox.location",
            "no Storage Boxes",
        ),
        (
            {"kind": "storageBox", "storageBox": {"type": "cx23"}},
            "backup.offsite.storageBox.type",
            "not a Storage Box type",
        ),
        (
            {"kind": "restic", "repository": "/srv/repo"},
            "backup.offsite.repository",
            "not a restic repository",
        ),
        (
            {"kind": "restic", "repository": "s3:h/b", "credentials": {"lower": "k1x"}},
            "backup.offsite.credentials",
            "environment variable",
        ),
        (
            {"kind": "restic", "repository": "s3:h/b", "credentials": {"RESTIC_PASSWORD": "k1x"}},
            "backup.offsite.credentials",
            "reserved",
        ),
        (
            {"kind": "restic", "repository": "s3:h/b", "credentials": {"A": "trackerAdminToken"}},
            "backup.offsite.credentials",
            "free top-level",
        ),
        ({"kind": "none", "repository": "s3:h/b"}, "backup.offsite", "only used with kind 'restic'"),
        ({"checkSubset": "150%"}, "backup.offsite.checkSubset", "read-data-subset"),
        ({"checkSchedule": "never"}, "backup.offsite.checkSchedule", "OnCalendar"),
        ({"keepDaily": 0}, "backup.offsite.keepDaily", "greater than or equal to 1"),
        ({"kind": "s3"}, "backup.offsite.kind", "'none', 'storageBox' or 'restic'"),
    ],
)
def test_invalid_offsite_settings_name_the_key_and_the_fix(
    offsite: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        stack_settings({"offsite": offsite})
    text = str(error.value)
    assert f"torrust-hybrid-tls:{key}: " in text, text
    assert message in text, text
    assert "fix: pulumi config" in text


# --- Rendering -------------------------------------------------------------------------------


def test_units_and_install_script_with_offsite() -> None:
    stack = stack_settings(
        {"offsite": {"kind": "storageBox", "checkSchedule": "Sat *-*-* 06:00:00", "checkSubset": "1/7"}}
    )
    service = backup.render_backup_service(stack)
    assert "PrivateNetwork" not in service.replace("# restic", "")  # restic needs the network
    assert f"\nReadWritePaths=/srv/torrust {backup.METRICS_DIR} {backup.OFFSITE_DIR}\n" in service
    check = backup.render_check_service(stack)
    assert re.findall(r"^ExecStart=(.*)$", check, re.MULTILINE) == [f"{backup.SCRIPT_PATH} check"]
    timer = backup.render_check_timer(stack)
    assert re.findall(r"^OnCalendar=(.*)$", timer, re.MULTILINE) == ["Sat *-*-* 06:00:00"]
    assert f"\nUnit={backup.CHECK_SERVICE_NAME}\n" in timer
    script = backup.render_backup_script(stack)
    defaults = dict(re.findall(r"^([A-Z_0-9]+)=\$\{TORRUST_\w+:-(.*)\}$", script, re.MULTILINE))
    assert defaults["OFFSITE"] == "1"
    assert defaults["OFFSITE_ENV"] == backup.OFFSITE_ENV
    assert defaults["RESTIC"] == backup.RESTIC_PATH
    assert defaults["RESTIC_SNAPSHOT_HOST"] == "torrust-dev"
    assert defaults["CHECK_SUBSET"] == "1/7"
    assert (defaults["KEEP_DAILY"], defaults["KEEP_WEEKLY"], defaults["KEEP_MONTHLY"]) == ("7", "5", "12")
    install = backup.backup_install_script(stack)
    for path in (backup.RESTORE_PATH, backup.CHECK_SERVICE_PATH, backup.CHECK_TIMER_PATH):
        assert f"/dev/stdin {path} <<'" in install
    assert f"systemctl enable --now {backup.CHECK_TIMER_NAME}\n" in install
    # The pinned release, verified before it is installed.
    assert backup.RESTIC_RELEASE_URL.endswith(
        f"/v{backup.RESTIC_VERSION}/restic_{backup.RESTIC_VERSION}_linux_amd64.bz2"
    )
    assert f"echo '{backup.RESTIC_RELEASE_SHA256}  '" in install and "sha256sum -c -" in install
    assert install.index("sha256sum -c -") < install.index(
        f'install -m 0755 -o root -g root "$restic_tmp/restic" {backup.RESTIC_PATH}'
    )


def test_turning_offsite_off_removes_the_check_but_keeps_the_repository() -> None:
    install = backup.backup_install_script(stack_settings({}))
    assert "restic" not in backup.render_backup_service(stack_settings({}))
    assert f"systemctl disable --now {backup.CHECK_TIMER_NAME}" in install
    assert backup.RESTIC_RELEASE_URL not in install
    assert f"/dev/stdin {backup.OFFSITE_ENV}" not in install  # the credentials Command's business


def test_offsite_scripts_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    stack = stack_settings({"offsite": {"kind": "storageBox"}})
    files = {
        "torrust-backup": backup.render_backup_script(stack),
        "torrust-restore": backup.render_restore_script(stack),
        "install.sh": backup.backup_install_script(stack),
        "remove.sh": backup.backup_remove_script(),
        "credentials.sh": backup.offsite_credentials_script(),
        "remove-credentials.sh": "#!/bin/bash\n" + backup.offsite_credentials_remove_script(),
    }
    paths = []
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text if text.startswith("#!") else "#!/bin/bash\n" + text)
        paths.append(str(path))
    result = subprocess.run([shellcheck, "--shell=bash", *paths], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_env_file_is_sourced_verbatim(tmp_path: Path) -> None:
    bash = require_tool("bash")
    nasty = "a b'c\"$(touch pwned)`x`\\"
    env = tmp_path / "offsite.env"
    env.write_text(backup.offsite_env_file("s3:https://h/b", {"AWS_SECRET_ACCESS_KEY": nasty}, None, "/p"))
    out = subprocess.run(
        [bash, "-c", f'set -a; . {env}; printf "%s|%s|%s" "$RESTIC_REPOSITORY" "$RESTIC_PASSWORD_FILE" '
         '"$AWS_SECRET_ACCESS_KEY"'],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout  # fmt: skip
    assert out == f"s3:https://h/b|/p|{nasty}"
    assert not (tmp_path / "pwned").exists()


# --- The program under mocks -----------------------------------------------------------------


def unpack(payload: str) -> dict[str, str]:
    """The files of a credentials payload (what `base64 -d | tar -x` writes), name -> text."""
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(payload))) as archive:
        files = {}
        for member in archive.getmembers():
            assert member.mode == 0o600 and member.uid == 0 and member.gid == 0, member.name
            extracted = archive.extractfile(member)
            assert extracted is not None
            files[member.name] = extracted.read().decode()
    return files


def credentials_script(run: Any) -> str:
    """Every credential file the Command writes, as one text (name, then content)."""
    command = run.monitor.one(COMMAND, "backups-offsite-credentials")
    # The command text is plain and the same for every stack: pulumi-command prints it on failure.
    assert command.inputs["create"] == backup.offsite_credentials_script()
    assert is_secret(command.inputs["stdin"]), "the credentials travel as a secret stdin"
    assert command.inputs["addPreviousOutputInEnv"] is False
    files = unpack(reveal(command.inputs["stdin"]))
    return "".join(f"== {name}\n{text}" for name, text in files.items())


def test_storage_box_is_protected_and_its_keys_never_replace_it(deploy: Deploy) -> None:
    run = deploy({"backup": BOX})
    [box] = run.monitor.by_type(STORAGE_BOX)
    assert box.inputs["storageBoxType"] == "bx21" and box.inputs["location"] == "hel1"
    assert box.inputs["name"] == "torrust-dev-backups"
    assert box.inputs["deleteProtection"] is True and box.options["protect"] is True
    # ssh_keys forces a replacement of the box (provider docs): set once, changes ignored.
    assert box.options["ignoreChanges"] == ["sshKeys"]
    assert box.inputs["sshKeys"] == [EXAMPLE_HOST_PUBLIC_KEY]
    assert is_secret(box.inputs["password"])
    assert box.inputs["accessSettings"] == {
        "sshEnabled": True,
        "reachableExternally": False,
        "sambaEnabled": False,
        "webdavEnabled": False,
        "zfsEnabled": False,
    }
    key = run.monitor.one("tls:index/privateKey:PrivateKey", "backups-offsite-ssh-key")
    assert key.inputs["algorithm"] == "ED25519"
    assert key.urn in box.options["dependsOn"]
    password = run.monitor.one(
        "random:index/randomPassword:RandomPassword", "backups-offsite-storage-box-password"
    )
    assert (
        password.inputs["minSpecial"] >= 1
        and password.inputs["minUpper"] >= 1
        and password.inputs["length"] >= 12
    )


def test_unprotected_throwaway_stack_can_destroy_its_box(deploy: Deploy) -> None:
    run = deploy({"backup": BOX, "data": {"deleteProtection": False}})
    [box] = run.monitor.by_type(STORAGE_BOX)
    assert box.inputs["deleteProtection"] is False and box.options["protect"] is False


def test_credentials_reach_the_server_as_a_secret_command(deploy: Deploy) -> None:
    run = deploy({"backup": BOX})
    script = credentials_script(run)
    repository = f"sftp://{EXAMPLE_STORAGE_BOX_USER}@{EXAMPLE_STORAGE_BOX_SERVER}:23/torrust-dev"
    assert f"RESTIC_REPOSITORY={repository}\n" in script
    assert f"RESTIC_PASSWORD_FILE={backup.RESTIC_PASSWORD_FILE}\n" in script
    assert f"== restic-password\n{GENERATED_PASSWORD}\n" in script
    assert f"== ssh/id_ed25519\n{EXAMPLE_HOST_PRIVATE_KEY}" in script
    assert "-o StrictHostKeyChecking=accept-new" in script and f"-i {backup.SSH_KEY_FILE}" in script
    assert "umask 077" in backup.offsite_credentials_script()
    command = run.monitor.one(COMMAND, "backups-offsite-credentials")
    install = run.monitor.one(COMMAND, "backups-install")
    ready = run.monitor.one(COMMAND, "docker-ready")
    assert command.urn in install.options["dependsOn"], "the timer starts only once credentials are there"
    assert ready.urn in command.options["dependsOn"]
    assert command.inputs["triggers"] == [run.monitor.resources[ready.urn].id]
    assert "restic version" in install.inputs["create"]
    # Outputs: what the operator needs, the password only as a secret.
    assert run.outputs["offsiteResticPassword"] == "[secret]"
    offsite = run.outputs["offsite"]
    assert offsite["repository"] == repository
    assert offsite["sshPublicKey"] == EXAMPLE_HOST_PUBLIC_KEY
    assert offsite["storageBox"] == {"type": "bx21", "location": "hel1"}
    assert offsite["backupSchedule"] == "*-*-* 03:15:00" and offsite["checkSchedule"] == "Sun *-*-* 05:00:00"


def test_own_repository_with_secret_credentials(deploy: Deploy) -> None:
    run = deploy({"backup": S3}, secrets=dict(S3_SECRETS))
    assert run.monitor.by_type(STORAGE_BOX) == []
    assert [r.name for r in run.monitor.by_type("tls:index/privateKey:PrivateKey")] == ["host-host-key"]
    script = credentials_script(run)
    assert "RESTIC_REPOSITORY=s3:https://s3.example.com/bucket/torrust\n" in script
    assert "AWS_ACCESS_KEY_ID=CANARY-key-id-81f3\n" in script
    assert "AWS_SECRET_ACCESS_KEY=CANARY-secret-7d2e9a\n" in script
    assert "TORRUST_RESTIC_SFTP_ARGS" not in script
    masked_all = json.dumps(run.outputs) + json.dumps(
        [{k: v for k, v in r.inputs.items() if not is_secret(v)} for r in run.monitor.registrations]
    )
    for value in S3_SECRETS.values():
        assert value and value in script and value not in masked_all
    assert run.outputs["offsite"]["credentials"] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]


def test_configured_restic_password_is_used_not_generated(deploy: Deploy) -> None:
    old = "the-old-stacks-restic-password-0123456789"
    run = deploy({"backup": BOX}, secrets={"offsiteResticPassword": old})
    names = [r.name for r in run.monitor.by_type("random:index/randomPassword:RandomPassword")]
    assert "backups-offsite-restic-password" not in names
    assert f"== restic-password\n{old}\n" in credentials_script(run)


def test_missing_or_plain_credentials_stop_the_program(deploy: Deploy) -> None:
    with pytest.raises(
        Exception, match=r"offsiteAwsSecret: is required by backup\.offsite\.credentials"
    ) as error:
        deploy({"backup": S3}, secrets={"offsiteAwsKeyId": "id"})
    assert "fix: pulumi config set --secret offsiteAwsSecret" in str(error.value)
    with pytest.raises(Exception, match="offsiteAwsSecret: is stored in plain text") as error:
        deploy({"backup": S3, "offsiteAwsSecret": "plain"}, secrets={"offsiteAwsKeyId": "id"})
    assert "plain" not in str(error.value).split("plain text")[0]
    with pytest.raises(Exception, match="offsiteResticPassword: is too short"):
        deploy({"backup": BOX}, secrets={"offsiteResticPassword": "short"})


def test_no_offsite_resources_by_default(deploy: Deploy) -> None:
    run = deploy()
    assert run.monitor.by_type(STORAGE_BOX) == []
    assert not [r for r in run.monitor.registrations if "offsite" in r.name]
    assert "offsite" not in run.outputs and "offsiteResticPassword" not in run.outputs


# --- make plan -------------------------------------------------------------------------------


def run_plan(stack: str, out: Path) -> subprocess.CompletedProcess[str]:
    require_real_tier()  # the shipped tool as a process
    return subprocess.run(
        [sys.executable, "-m", "tools.plan", "--stack", stack, "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_plan_of_the_offsite_example_shows_box_keys_and_schedule(tmp_path: Path) -> None:
    result = run_plan("offsite-example", tmp_path / "plan")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "hcloud:index/storageBox:StorageBox  backups-offsite-storage-box  [protect]" in out
    assert "tls:index/privateKey:PrivateKey  backups-offsite-ssh-key" in out
    assert "command:remote:Command  backups-offsite-credentials" in out
    summary = json.loads(out[out.index("Off-site backups:\n") + len("Off-site backups:\n") :])
    assert summary["kind"] == "storageBox"
    assert summary["repository"].endswith(":23/torrust-offsite-example")
    assert summary["sshPublicKey"].startswith("ssh-ed25519 ")
    assert summary["backupSchedule"] == "*-*-* 03:15:00" and summary["checkSchedule"] == "Sun *-*-* 05:00:00"
    assert summary["keep"] == {"daily": 7, "weekly": 5, "monthly": 12}
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["outputs"]["offsiteResticPassword"] == "[secret]"
    [box] = [r for r in plan["resources"] if r["type"] == STORAGE_BOX]
    assert box["inputs"]["password"] == "[secret]" and box["options"]["ignoreChanges"] == ["sshKeys"]
    [creds] = [r for r in plan["resources"] if r["name"] == "backups-offsite-credentials"]
    assert creds["inputs"]["stdin"] == "[secret]"
    assert creds["inputs"]["create"] == backup.offsite_credentials_script()
    assert GENERATED_PASSWORD not in (tmp_path / "plan" / "plan.json").read_text()


def test_plan_without_offsite_says_so(tmp_path: Path) -> None:
    result = run_plan("dev", tmp_path / "plan")
    assert result.returncode == 0, result.stderr
    assert "Off-site backups:\n  none (backup.offsite.kind is 'none')" in result.stdout


def test_offsite_example_is_the_dev_stack_plus_backup_offsite() -> None:
    import yaml

    dev = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())["config"]
    example = yaml.safe_load((REPO_ROOT / "Pulumi.offsite-example.yaml").read_text())["config"]
    backup_key = "torrust-hybrid-tls:backup"
    assert example[backup_key]["offsite"]["kind"] == "storageBox"
    assert {k: v for k, v in example.items() if k != backup_key} == {
        k: v for k, v in dev.items() if k != backup_key
    }


def test_runbook_names_exactly_the_metrics_the_script_writes() -> None:
    script = backup.render_backup_script(stack_settings({"offsite": {"kind": "storageBox"}}))
    written = set(re.findall(r"^(torrust_backup_\w+) \$", script, re.MULTILINE))
    documented = set(
        re.findall(r"`(torrust_backup_\w+)`", (REPO_ROOT / "docs/backup-restore.md").read_text())
    )
    assert len(written) == 13
    assert written == documented


def test_decision_record_names_the_pinned_restic() -> None:
    decision = (REPO_ROOT / "docs/decisions/0013-offsite-backups-restic.md").read_text()
    assert f"restic {backup.RESTIC_VERSION}" in decision or f"**restic {backup.RESTIC_VERSION}**" in decision
    assert backup.RESTIC_RELEASE_SHA256 in decision
    assert f"restic_{backup.RESTIC_VERSION}_linux_amd64.bz2" in decision


def run_restic_install(tmp_path: Path, served: bytes) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """The install snippet with a stand-in `curl` that serves `served` (this machine has no GitHub)."""
    bash = require_tool("bash")
    require_tool("bzip2")
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    calls = tmp_path / "curl-calls"
    payload = tmp_path / "payload.bz2"
    payload.write_bytes(served)
    (stubs / "curl").write_text(
        f'#!/bin/sh\necho "$*" >>{calls}\nwhile [ "$1" != -o ]; do shift; done\ncp {payload} "$2"\n'
    )
    (stubs / "curl").chmod(0o755)
    target = tmp_path / "bin" / "restic"
    target.parent.mkdir(exist_ok=True)
    script = "set -euo pipefail\n" + backup._restic_install(str(target))
    env = {"PATH": f"{stubs}:/usr/local/bin:/usr/bin:/bin"}
    result = subprocess.run(
        [bash, "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    return result, target, calls


def test_restic_download_with_a_wrong_checksum_is_not_installed(tmp_path: Path) -> None:
    import bz2

    result, target, calls = run_restic_install(
        tmp_path, bz2.compress(b"#!/bin/sh\necho 'restic 0.19.1 compiled'\n")
    )
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
    assert not target.exists()
    assert backup.RESTIC_RELEASE_URL in calls.read_text()


def test_restic_of_the_pinned_version_is_not_downloaded_again(tmp_path: Path) -> None:
    target = tmp_path / "bin" / "restic"
    target.parent.mkdir()
    target.write_text(
        f"#!/bin/sh\necho 'restic {backup.RESTIC_VERSION} compiled with go1.25.10 on linux/amd64'\n"
    )
    target.chmod(0o755)
    result, _, calls = run_restic_install(tmp_path, b"")
    assert result.returncode == 0, result.stderr
    assert not calls.exists()
    assert result.stdout.startswith(f"restic {backup.RESTIC_VERSION} ")


def test_the_backup_script_writes_what_the_alerts_and_the_node_exporter_read() -> None:
    from core import layout
    from services.monitoring import alerts

    script = backup.render_backup_script(stack_settings({}))
    assert re.search(rf"^{alerts.BACKUP_METRIC} \$last_success$", script, re.MULTILINE)
    assert backup.METRICS_DIR == layout.NODE_TEXTFILE_DIR
    assert re.search(
        r"^METRICS_DIR=\$\{TORRUST_METRICS_DIR:-" + re.escape(layout.NODE_TEXTFILE_DIR) + r"\}$",
        script,
        re.MULTILINE,
    )
