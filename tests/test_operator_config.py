"""The program refuses what would fail after money is spent, before any resource exists.

Runs __main__.py under mocks: `preview=True` is `pulumi preview` (and the offline plan),
`preview=False` is `pulumi up` (pulumi.runtime.is_dry_run() is false).
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pulumi
import pytest

from core.settings import PROJECT
from tests.conftest import Deploy

REAL_ED25519 = (
    "ssh-ed25519 "
    + base64.b64encode(
        b"".join(struct.pack(">I", len(f)) + f for f in (b"ssh-ed25519", b"\x42" * 32))
    ).decode()
    + " ops@torrust.org"
)

REAL_VALUES: dict[str, Any] = {
    "domains": {
        "trackerApi": "api.tracker.torrust.org",
        "httpTrackers": ["http1.tracker.torrust.org"],
        "grafana": "grafana.tracker.torrust.org",
    },
    "acme": {"email": "admin@torrust.org", "staging": True},
    "ssh": {"publicKeys": [REAL_ED25519], "allowedCidrs": ["192.0.3.0/24"]},
    "dns": {"zone": "torrust.org"},
}


def test_preview_accepts_the_example_stack(deploy: Deploy) -> None:
    run = deploy(preview=True)
    assert run.monitor.registrations


def test_up_refuses_the_example_stacks_documentation_values(deploy: Deploy) -> None:
    with pytest.raises(Exception) as error:
        deploy(preview=False)
    message = str(error.value)
    assert type(error.value).__name__ == "RunError"
    for key in ("domains.trackerApi", "acme.email", "ssh.allowedCidrs[0]", "ssh.allowedCidrs[1]"):
        assert f"{PROJECT}:{key}: " in message and "documentation-only" in message
    assert f"{PROJECT}:ssh.publicKeys[0]: 'operator@example.com (the example key)'" in message


def test_up_accepts_real_values(deploy: Deploy) -> None:
    run = deploy(REAL_VALUES, preview=False)
    assert any(r.type == "hcloud:index/server:Server" for r in run.monitor.registrations)


@pytest.mark.parametrize(
    ("extra", "secret_keys", "expected"),
    [
        (
            {f"{PROJECT}:domian": "{}"},
            [],
            f"{PROJECT}:domian: is not a known setting; did you mean 'domains'?",
        ),
        ({"hcloud:token": "plain-token-value"}, [], "hcloud:token: is stored in plain text"),
    ],
)
def test_keys_refused_before_any_resource(
    deploy: Deploy, extra: dict[str, str], secret_keys: list[str], expected: str
) -> None:
    with pytest.raises(Exception, match="Invalid stack configuration") as error:
        deploy(extra=extra, extra_secret_keys=secret_keys)
    assert expected in str(error.value)
    assert "plain-token-value" not in str(error.value)


def test_secret_provider_token_is_accepted(deploy: Deploy) -> None:
    deploy(extra={"hcloud:token": "secret-token"}, extra_secret_keys=["hcloud:token"])


def test_values_of_other_namespaces_are_never_parsed(deploy: Deploy) -> None:
    # What an alias bomb becomes once the CLI hands it over: a huge, deeply nested JSON value. Parsing
    # it would exhaust memory or the recursion limit; the program only looks at our namespace.
    nested = "[" * 200_000 + "]" * 200_000
    run = deploy(extra={"other:bomb": nested, "other:big": json.dumps(["lol"] * 200_000)})
    assert run.monitor.registrations


def test_known_bad_pingoo_warns(deploy: Deploy, monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warnings.append(message))
    deploy({"images": {"pingoo": "pingooio/pingoo:0.14.9"}})
    assert any("0.14.9" in w and "pingoo PR #24" in w for w in warnings)
    warnings.clear()
    deploy()
    assert not any("pingoo" in w for w in warnings)


def private_key_config(path: Path) -> dict[str, Any]:
    from tests.conftest import dev_config

    ssh = dev_config()["ssh"]
    ssh["privateKeyFile"] = str(path)
    return {"ssh": ssh}


def openssh_private(cipher: bytes) -> str:
    def wire(*fields: bytes) -> bytes:
        return b"".join(struct.pack(">I", len(f)) + f for f in fields)

    body = b"openssh-key-v1\0" + wire(cipher, b"bcrypt" if cipher != b"none" else b"none", b"")
    encoded = base64.b64encode(body + b"\0" * 8).decode()
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\n{encoded}\n-----END OPENSSH PRIVATE KEY-----\n"


def test_public_key_as_private_key_file_is_refused(deploy: Deploy, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519.pub"
    key.write_text(REAL_ED25519 + "\n")
    with pytest.raises(Exception, match=r"ssh\.privateKeyFile: '.*id_ed25519\.pub' is a public key"):
        deploy(private_key_config(key))


def test_passphrase_protected_key_needs_ssh_agent(
    deploy: Deploy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text(openssh_private(b"aes256-ctr"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(Exception, match="is passphrase-protected and no ssh-agent is running") as error:
        deploy(private_key_config(key))
    assert f"ssh-add {key}" in str(error.value)
    # With an agent: a warning, and the key content is not handed to the SSH connection.
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warnings.append(message))
    run = deploy(private_key_config(key))
    assert any("passphrase-protected" in w for w in warnings)
    ready = next(r for r in run.monitor.registrations if r.name == "docker-ready")
    assert "privateKey" not in json.dumps(ready.inputs["connection"])


def test_unencrypted_private_key_file_is_used(deploy: Deploy, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text(openssh_private(b"none"))
    run = deploy(private_key_config(key))
    ready = next(r for r in run.monitor.registrations if r.name == "docker-ready")
    assert "privateKey" in json.dumps(ready.inputs["connection"])


def test_ssh_command_names_the_key_file(deploy: Deploy, tmp_path: Path) -> None:
    import shlex

    key = tmp_path / "id_ed25519"
    key.write_text(openssh_private(b"none"))
    with_key = shlex.split(deploy(private_key_config(key)).outputs["sshCommand"])
    assert with_key[with_key.index("-i") + 1] == str(key)
    without = shlex.split(deploy().outputs["sshCommand"])
    assert "-i" not in without and without[-1].startswith("root@")
