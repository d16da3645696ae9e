"""The operator-facing checks against the real programs that consume the values.

- SSH keys: OpenSSH's `ssh-keygen -l` reads what we accept (the example key too), refuses what we
  refuse, and reports the same RSA size; `ssh-keygen -N` keys are seen as passphrase-protected.
- backup.schedule: the pure-Python OnCalendar check agrees with `systemd-analyze calendar` on the
  whole table in tests/data/oncalendar.tsv.
- sshCommand: parses in bash as one command, and `ssh -G` (OpenSSH's own option parser) reads the
  host key pinning, strict checking and the identity file from it.
"""

from __future__ import annotations

import base64
import shlex
import struct
import subprocess
from pathlib import Path

import pytest

from components.docker_host import ssh_command
from core.examples import PLACEHOLDER_KEY_FINGERPRINTS, fingerprint
from core.oncalendar import CalendarError, check_fallback, check_with_systemd
from core.settings import PROJECT
from core.sshkeys import SshKeyError, parse_public_key, private_key_problem
from tests.conftest import DEV_STACK
from tests.realtools import require_tool
from tests.test_validation import oncalendar_table


def keygen(tmp_path: Path, kind: str, bits: int | None = None, passphrase: str = "") -> Path:
    tool = require_tool("ssh-keygen")
    path = tmp_path / f"id_{kind}_{bits or 'default'}_{len(passphrase)}"
    args = [tool, "-q", "-t", kind, "-N", passphrase, "-C", "test@torrust", "-f", str(path)]
    if bits:
        args += ["-b", str(bits)]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    return path


def keygen_fingerprint(public_key: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("ssh-keygen")
    file = tmp_path / "check.pub"
    file.write_text(public_key + "\n")
    return subprocess.run(
        [tool, "-l", "-f", str(file)], capture_output=True, text=True, timeout=30, check=False
    )


def test_example_key_is_a_real_public_key(tmp_path: Path) -> None:
    key = DEV_STACK[f"{PROJECT}:ssh"]["publicKeys"][0]
    result = keygen_fingerprint(key, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == fingerprint(key)
    assert fingerprint(key) in PLACEHOLDER_KEY_FINGERPRINTS  # so `pulumi up` refuses it


@pytest.mark.parametrize(
    ("kind", "bits", "accepted"),
    [
        ("ed25519", None, True),
        ("rsa", 2048, True),
        ("rsa", 3072, True),
        ("rsa", 1024, False),  # ssh-keygen makes it; we refuse it as too small
        ("ecdsa", 256, True),
        ("ecdsa", 384, True),
        ("ecdsa", 521, True),
    ],
)
def test_generated_keys_agree_with_ssh_keygen(
    tmp_path: Path, kind: str, bits: int | None, accepted: bool
) -> None:
    path = keygen(tmp_path, kind, bits)
    line = path.with_suffix(".pub").read_text().strip()
    reported = keygen_fingerprint(line, tmp_path)
    assert reported.returncode == 0, reported.stderr
    size = int(reported.stdout.split()[0])
    if accepted:
        label, _, rsa_bits = parse_public_key(line)
        assert label == line.split()[0]
        assert rsa_bits == (size if kind == "rsa" else None)
        assert fingerprint(line) == reported.stdout.split()[1]
    else:
        with pytest.raises(SshKeyError, match=f"{size}-bit RSA"):
            parse_public_key(line)
    assert private_key_problem(path) == (None, False)
    assert private_key_problem(path.with_suffix(".pub"))[0] is not None  # the .pub is refused


def test_passphrase_protected_key_is_detected(tmp_path: Path) -> None:
    for kind in ("ed25519", "rsa"):
        path = keygen(tmp_path, kind, 2048 if kind == "rsa" else None, passphrase="correct horse")
        assert private_key_problem(path) == (None, True)


def corruptions(line: str) -> list[str]:
    label, data, comment = line.split(" ", 2)
    blob = base64.b64decode(data)
    extra = blob + struct.pack(">I", 5) + b"extra"
    return [
        f"ssh-rsa {data} {comment}",  # label does not match the blob
        f"{label} {data[:40]} {comment}",  # truncated copy
        f"{label} {base64.b64encode(blob[:-3]).decode()} {comment}",  # blob cut short
        f"{label} {base64.b64encode(extra).decode()} {comment}",  # a field too many
    ]


def test_corrupted_keys_are_refused_by_both(tmp_path: Path) -> None:
    line = keygen(tmp_path, "ed25519").with_suffix(".pub").read_text().strip()
    for bad in corruptions(line):
        assert keygen_fingerprint(bad, tmp_path).returncode != 0, bad
        with pytest.raises(SshKeyError):
            parse_public_key(bad)


def test_oncalendar_fallback_agrees_with_systemd_analyze() -> None:
    tool = require_tool("systemd-analyze")
    disagreements = []
    for expression, recorded in oncalendar_table():
        try:
            check_with_systemd(expression, tool)
            real = True
        except CalendarError:
            real = False
        try:
            check_fallback(expression)
            fallback = True
        except CalendarError:
            fallback = False
        if not real == fallback == recorded:
            disagreements.append(f"{expression!r}: systemd {real}, fallback {fallback}, table {recorded}")
    assert disagreements == []


@pytest.mark.parametrize("with_key_file", [False, True])
def test_ssh_command_output_works_as_pasted(tmp_path: Path, with_key_file: bool) -> None:
    ssh = require_tool("ssh")
    key_file = None
    if with_key_file:
        # ssh drops an -i file that does not exist; a folder with a space tests the quoting.
        (tmp_path / "my keys").mkdir()
        key_file = str(tmp_path / "my keys" / "id_ed25519")
        Path(key_file).write_text("placeholder\n")
    host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPK4zplO3z7zop9mHostKeyForTheTest00 root@host\n"
    command = ssh_command("root", "203.0.113.10", host_key, key_file)
    assert "\n" not in command
    subprocess.run(["bash", "-n", "-c", command], check=True, timeout=30)
    # What bash runs when the line is pasted, with OpenSSH's own parser printing the configuration.
    printed = subprocess.run(
        ["bash", "-c", command.replace("ssh ", f"{shlex.quote(ssh)} -G -F /dev/null ", 1)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert printed.returncode == 0, printed.stderr
    options = printed.stdout.splitlines()
    key = " ".join(host_key.split()[:2])
    assert f"knownhostscommand /bin/echo %H {key}" in options
    assert "stricthostkeychecking true" in options
    assert "userknownhostsfile /dev/null" in options
    assert "hostname 203.0.113.10" in options and "user root" in options
    identities = [line for line in options if line.startswith("identityfile ")]
    if key_file:
        # One argument, spaces and all (ssh -G also lists its default identities after it).
        assert identities[0] == f"identityfile {key_file}"
        assert "identitiesonly yes" in options
    else:
        assert "identitiesonly no" in options
