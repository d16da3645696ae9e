"""Remote Commands carry no secret in their command text, and never ask for PULUMI_COMMAND_STDOUT.

pulumi-command v1.2.1 (provider/pkg/provider/remote/commandOutputs.go, `run`) returns, for a
command that fails, `fmt.Errorf("%w: running %q:\n%s", err, cmd, stdouterrbuf)`: the whole command
text and everything it printed. The engine masks secret *config* values in what it prints, not a
secret Output rendered into a script, so a secret in `create` ends up in clear in the CLI, CI logs
and the backend's update logs. Secrets go on `stdin` (`session.Stdin = strings.NewReader(*c.Stdin)`)
instead. The same function sets PULUMI_COMMAND_STDOUT/STDERR with `session.Setenv` unless
`addPreviousOutputInEnv` is false, and warns "Unable to set ..." on every run when sshd has no
AcceptEnv (ours has none).
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from services.backups import backup
from tests.conftest import Deploy
from tests.realtools import require_tool
from tests.test_offsite_program import BOX, S3, S3_SECRETS
from tools.mocks import is_secret, reveal

COMMAND = "command:remote:Command"
CANARIES = {
    "trackerAdminToken": "CANARY-tracker-token-5a1c9e0b7d3f",
    "grafanaAdminPassword": "CANARY-grafana-pw-77e1",
    "offsiteResticPassword": "CANARY-restic-password-0b9d4e2f6a81c3",
}


def command_texts(run: object) -> dict[str, dict[str, object]]:
    commands = run.monitor.by_type(COMMAND)  # type: ignore[attr-defined]
    assert commands, "the program has remote Commands"
    return {c.name: c.inputs for c in commands}


@pytest.mark.parametrize(
    ("offsite", "credentials"), [(S3, S3_SECRETS), (BOX, {})], ids=["own-repository", "storage-box"]
)
def test_no_secret_in_any_command_text(
    deploy: Deploy, offsite: dict[str, object], credentials: dict[str, str | None]
) -> None:
    run = deploy({"backup": offsite}, secrets={**credentials, **CANARIES})
    for name, inputs in command_texts(run).items():
        for field in ("create", "update", "delete"):
            text = inputs.get(field)
            if text is None:
                continue
            assert not is_secret(text), f"{name}.{field} is a secret: a failure would print it"
            for canary in [*CANARIES.values(), *filter(None, S3_SECRETS.values())]:
                assert canary not in str(text), f"{name}.{field} carries a secret"
        assert inputs.get("addPreviousOutputInEnv") is False, f"{name}: PULUMI_COMMAND_STDOUT warning"
    # The secrets that must reach the server do, through stdin.
    stdin = reveal(command_texts(run)["backups-offsite-credentials"]["stdin"])
    files = _unpack(stdin)
    assert files["restic-password"] == CANARIES["offsiteResticPassword"] + "\n"


def _unpack(payload: str) -> dict[str, str]:
    from tests.test_offsite_program import unpack

    return unpack(payload)


# --- The script, run by the real bash with the payload on stdin ----------------------------------

CANARY_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nCANARY-key-body-3f9a\n-----END OPENSSH PRIVATE KEY-----\n"
CANARY_SECRET = "CANARY-aws-secret-d41d8cd98f"


def run_credentials(
    directory: Path, stdin: str, script: str | None = None
) -> subprocess.CompletedProcess[str]:
    """As pulumi-command runs it: the command text through the login shell, stdin from the input."""
    bash = require_tool("bash")
    require_tool("tar")
    require_tool("base64")
    return subprocess.run(
        [bash, "-c", script or backup.offsite_credentials_script()],
        input=stdin,
        env={**os.environ, "TORRUST_OFFSITE_DIR": str(directory)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def pulumi_command_error(script: str, result: subprocess.CompletedProcess[str]) -> str:
    """What pulumi-command v1.2.1 reports for a failed run: `running %q:\\n<stdout and stderr>`."""
    return f"exit status {result.returncode}: running {script!r}:\n{result.stdout}{result.stderr}"


def payload(ssh_key: str | None = CANARY_KEY) -> str:
    env = backup.offsite_env_file("s3:https://h/b", {"AWS_SECRET_ACCESS_KEY": CANARY_SECRET}, None)
    return backup.offsite_credentials_payload(env, CANARIES["offsiteResticPassword"], ssh_key)


def test_the_script_writes_each_file_0600_from_stdin(tmp_path: Path) -> None:
    result = run_credentials(tmp_path, payload())
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "restic-password").read_text() == CANARIES["offsiteResticPassword"] + "\n"
    assert (tmp_path / "ssh/id_ed25519").read_text() == CANARY_KEY
    assert f"AWS_SECRET_ACCESS_KEY={CANARY_SECRET}\n" in (tmp_path / "offsite.env").read_text()
    for name in ("offsite.env", "restic-password", "ssh/id_ed25519"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o600, f"{name}: {oct(mode)}"
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    for secret in (CANARY_SECRET, CANARIES["offsiteResticPassword"], "CANARY-key-body"):
        assert secret not in result.stdout + result.stderr, "the script echoes a secret"
    # A switch to a backend without SFTP removes the old key.
    result = run_credentials(tmp_path, payload(ssh_key=None))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "ssh/id_ed25519").exists()


def test_a_failed_run_prints_no_secret(tmp_path: Path) -> None:
    # Truncated stdin (a broken transfer): tar fails, and so does the command.
    broken = payload()[:200] + "\n"
    script = backup.offsite_credentials_script()
    result = run_credentials(tmp_path, broken)
    assert result.returncode != 0
    error = pulumi_command_error(script, result)
    for secret in (CANARY_SECRET, CANARIES["offsiteResticPassword"], "CANARY-key-body"):
        assert secret not in error
    # Empty stdin: the files are missing, said so, and it fails.
    result = run_credentials(tmp_path / "empty", "")
    assert result.returncode != 0 and "tar" in result.stderr


def test_mutation_secrets_in_the_command_text_reach_the_error(tmp_path: Path) -> None:
    """The check above can fail: the previous form (heredocs in `create`) leaks on any failure."""
    script = (
        "set -euo pipefail\n"
        + f"cat > {tmp_path}/restic-password <<'EOF'\n{CANARIES['offsiteResticPassword']}\nEOF\n"
        + "false\n"
    )
    result = run_credentials(tmp_path, "", script)
    assert result.returncode != 0
    assert CANARIES["offsiteResticPassword"] in pulumi_command_error(script, result)
