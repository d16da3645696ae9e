"""Validation that matches the consumers: each kind with refused AND accepted cases.

- names and the ACME contact: Let's Encrypt's boulder, policy/pa.go ValidDomain / ValidEmail
- SSH public keys: OpenSSH's authorized_keys parsing (sshkey.c, RFC 4253 6.6, RFC 5656, RFC 8709)
- backup.schedule: systemd's OnCalendar grammar (tests/data/oncalendar.tsv is systemd-analyze's answer)
- SSH from anywhere, IPv6 host bits, derived name lengths, unknown and misspelt keys
"""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from core import oncalendar
from core.examples import PLACEHOLDER_KEY_FINGERPRINTS, documentation_values, fingerprint
from core.names import domain_problem, email_problem
from core.oncalendar import CalendarError, check_fallback
from core.settings import PROJECT, ConfigError, StackSettings, check_config_keys, load_settings
from core.sshkeys import SshKeyError, parse_public_key, private_key_problem
from tests.conftest import DEV_STACK, REPO_ROOT, dev_config


def load(config: dict[str, Any], stack: str = "dev") -> StackSettings:
    return load_settings(stack, config.get)


def error_of(config: dict[str, Any], stack: str = "dev") -> str:
    with pytest.raises(ConfigError) as error:
        load(config, stack)
    return str(error.value)


# --- names (boulder policy/pa.go ValidDomain) ----------------------------------------------------

REFUSED_NAMES = [
    ("tracker.local", "special-use"),  # RFC 6762
    ("tracker.test", "special-use"),  # RFC 6761
    ("api.example", "special-use"),  # RFC 2606
    ("api.invalid", "special-use"),
    ("api.localhost", "special-use"),
    ("api.internal", "special-use"),
    ("api.alt", "special-use"),  # RFC 9476
    ("abcdefghijklmnop.onion", "special-use"),  # RFC 7686
    ("api.home.arpa", "special-use"),
    ("ab--cd.example.org", "positions 3-4"),  # R-LDH label that is not xn--
    ("xn--abc.example.org", "not valid punycode"),  # A-label that does not decode
    ("xn--zz.example.org", "not valid punycode"),
    ("bücher.example.org", "xn--bcher-kva.example.org"),  # Unicode: punycode suggested
    ("a" * 64 + ".example.org", "label 1"),  # length error names the label
    ("api." + "b" * 64 + ".org", "label 2"),
    (".".join(["a"] * 11) + ".org", "at most 10"),  # boulder maxLabels
    ("api..example.org", "empty label"),
    ("-api.example.org", "label '-api'"),
    ("api_1.example.org", "label 'api_1'"),
    ("192.0.2.1", "IP address"),
    ("api.example.org.", "must not end with a dot"),
    ("API.example.org", "lowercase"),
    ("*.example.org", "wildcard"),
    ("tracker", "fully qualified"),
]
ACCEPTED_NAMES = [
    "grafana.example.net",  # documentation names plan fine; `pulumi up` refuses them (core.examples)
    "tracker.torrust.org",
    "xn--bcher-kva.example.org",  # a valid A-label
    "a1-b2.c3.example.co.uk",
    "a" * 63 + ".example.org",
    ".".join(["a"] * 9) + ".org",  # 10 labels
    "9tracker.io",
]


@pytest.mark.parametrize(("name", "expected"), REFUSED_NAMES)
def test_names_lets_encrypt_refuses(name: str, expected: str) -> None:
    problem = domain_problem(name)
    assert problem is not None and expected in problem
    message = error_of({**dev_config(), "domains": {**dev_config()["domains"], "grafana": name}})
    assert f"{PROJECT}:domains.grafana: " in message and expected in message
    assert "fix: pulumi config set --path 'domains.grafana'" in message


def test_unicode_name_gets_its_punycode_as_the_fix() -> None:
    message = error_of(
        {**dev_config(), "domains": {**dev_config()["domains"], "grafana": "grafana.bücher.de"}}
    )
    assert "fix: pulumi config set --path 'domains.grafana' grafana.xn--bcher-kva.de" in message


@pytest.mark.parametrize("name", ACCEPTED_NAMES)
def test_names_lets_encrypt_accepts(name: str) -> None:
    assert domain_problem(name) is None
    config = {**dev_config(), "domains": {**dev_config()["domains"], "grafana": name}}
    config.pop("dns", None)  # manual DNS: a name outside the example's managed zone is fine
    load(config)


# --- acme.email (boulder ValidEmail) -------------------------------------------------------------

REFUSED_EMAILS = [
    ("admin", "not an e-mail address"),
    ("admin@", "not an e-mail address"),
    ("@tracker.org", "not an e-mail address"),
    ("Admin <admin@tracker.org>", "not an e-mail address"),
    ("admin@tracker.local", "special-use"),
    ("admin@localhost", "fully qualified"),
    ("admin@192.0.2.1", "IP address"),
    ("admin@tracker_org.net", "label 'tracker_org'"),
    ("admin@tracker.test", "special-use"),
]
ACCEPTED_EMAILS = ["admin@torrust.org", "ops+acme@tracker.torrust.org", "admin@example.com"]


@pytest.mark.parametrize(("email", "expected"), REFUSED_EMAILS)
def test_acme_email_lets_encrypt_refuses(email: str, expected: str) -> None:
    problem = email_problem(email)
    assert problem is not None and expected in problem
    message = error_of({**dev_config(), "acme": {"email": email}})
    assert f"{PROJECT}:acme.email: " in message and "fix: pulumi config set --path 'acme.email'" in message


@pytest.mark.parametrize("email", ACCEPTED_EMAILS)
def test_acme_email_lets_encrypt_accepts(email: str) -> None:
    assert email_problem(email) is None
    load({**dev_config(), "acme": {"email": email}})


# --- SSH public keys (OpenSSH wire format) -------------------------------------------------------


def wire(*fields: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(field)) + field for field in fields)


def key_line(label: str, blob: bytes, comment: str = "op@host") -> str:
    return f"{label} {base64.b64encode(blob).decode()} {comment}"


def rsa_blob(bits: int) -> bytes:
    modulus = (1 << (bits - 1)) | 1
    return wire(b"ssh-rsa", b"\x01\x00\x01", b"\x00" + modulus.to_bytes((bits + 7) // 8, "big"))


ED25519 = wire(b"ssh-ed25519", b"\x11" * 32)
ECDSA256 = wire(b"ecdsa-sha2-nistp256", b"nistp256", b"\x04" + b"\x22" * 64)
SK_ED25519 = wire(b"sk-ssh-ed25519@openssh.com", b"\x33" * 32, b"ssh:")
DEV_KEY = DEV_STACK[f"{PROJECT}:ssh"]["publicKeys"][0]

REFUSED_KEYS = [
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleOperatorKey00 x", "damaged"),  # the old placeholder
    (key_line("ssh-rsa", ED25519), "says 'ssh-rsa' but the key data is a 'ssh-ed25519'"),
    (key_line("ssh-ed25519", ED25519[:-5]), "cut short"),
    (key_line("ssh-ed25519", wire(b"ssh-ed25519", b"\x11" * 31)), "31 bytes"),
    (key_line("ssh-ed25519", ED25519 + wire(b"extra")), "2 fields"),
    (key_line("ssh-rsa", rsa_blob(1024)), "1024-bit RSA"),
    (key_line("ssh-rsa", rsa_blob(2047)), "2047-bit RSA"),
    (key_line("ecdsa-sha2-nistp256", wire(b"ecdsa-sha2-nistp256", b"nistp384", b"\x04" * 65)), "curve"),
    ("ssh-dss AAAAB3NzaC1kc3M= x", "not one of"),
    ("ssh-ed25519 !!!notbase64 x", "not valid base64"),
    ("ssh-ed25519", "not an OpenSSH public key"),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
        "rotate it",
    ),
]
ACCEPTED_KEYS = [
    (DEV_KEY, None),
    (key_line("ssh-ed25519", ED25519), None),
    (key_line("ssh-rsa", rsa_blob(2048)), 2048),
    (key_line("ssh-rsa", rsa_blob(4096)), 4096),
    (key_line("ecdsa-sha2-nistp256", ECDSA256), None),
    (key_line("sk-ssh-ed25519@openssh.com", SK_ED25519), None),
    (key_line("ssh-ed25519", ED25519, comment="with spaces in the comment"), None),
]


@pytest.mark.parametrize(("line", "expected"), REFUSED_KEYS)
def test_ssh_public_keys_sshd_refuses(line: str, expected: str) -> None:
    with pytest.raises(SshKeyError, match=expected):
        parse_public_key(line)
    message = error_of({**dev_config(), "ssh": {**dev_config()["ssh"], "publicKeys": [line]}})
    assert f"{PROJECT}:ssh.publicKeys: key 0: " in message
    if "PRIVATE" in line:
        assert "b3BlbnNzaC1rZXkt" not in message  # the pasted secret is not echoed


@pytest.mark.parametrize(("line", "bits"), ACCEPTED_KEYS)
def test_ssh_public_keys_sshd_accepts(line: str, bits: int | None) -> None:
    assert parse_public_key(line)[2] == bits
    load({**dev_config(), "ssh": {**dev_config()["ssh"], "publicKeys": [line]}})


def test_the_same_key_with_another_comment_is_a_duplicate() -> None:
    keys = [key_line("ssh-ed25519", ED25519, "laptop"), key_line("ssh-ed25519", ED25519, "desktop")]
    message = error_of({**dev_config(), "ssh": {**dev_config()["ssh"], "publicKeys": keys}})
    assert "keys 0 and 1 are the same public key" in message


def openssh_private(cipher: bytes) -> str:
    body = b"openssh-key-v1\0" + wire(cipher, b"none" if cipher == b"none" else b"bcrypt", b"")
    encoded = base64.b64encode(body + b"\0" * 8).decode()
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\n{encoded}\n-----END OPENSSH PRIVATE KEY-----\n"


PRIVATE_FILES: list[tuple[str, str, str | None, bool]] = [
    # (file name, content, expected problem part, passphrase protected)
    ("id_ed25519", openssh_private(b"none"), None, False),
    ("id_ed25519", openssh_private(b"aes256-ctr"), None, True),
    ("id_rsa", "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END", None, True),
    ("id_ed25519.pub", DEV_KEY + "\n", "is a public key", False),
    ("key", DEV_KEY + "\n", "is a public key", False),
    ("notes.txt", "hello\n", "not a private key", False),
    (
        "id_bad",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        "damaged",
        False,
    ),
]


@pytest.mark.parametrize(("name", "content", "expected", "encrypted"), PRIVATE_FILES)
def test_private_key_file(
    tmp_path: Path, name: str, content: str, expected: str | None, encrypted: bool
) -> None:
    path = tmp_path / name
    path.write_text(content)
    problem, protected = private_key_problem(path)
    assert (problem is None) if expected is None else (problem is not None and expected in problem)
    assert protected is encrypted


# --- SSH from anywhere, CIDRs --------------------------------------------------------------------

CIDR_CASES: list[tuple[list[str], bool, str | None]] = [
    # (allowedCidrs, allowFromAnywhere, expected error part or None)
    (["0.0.0.0/0"], False, "whole internet"),
    (["::/0"], False, "whole internet"),
    (["198.51.100.7/32", "::/0"], False, "ssh.allowFromAnywhere"),
    (["0.0.0.0/0", "::/0"], True, None),
    (["198.51.100.7/32", "2001:db8::/48"], False, None),
    (["2001:db8::1/48"], False, "fix: pulumi config set --path 'ssh.allowedCidrs[0]' 2001:db8::/48"),
    (["198.51.100.7/24"], False, "fix: pulumi config set --path 'ssh.allowedCidrs[0]' 198.51.100.0/24"),
    (["2001:db8::/129"], False, "such as '2001:db8::/48'"),
    (["2001:db8::/129"], False, "curl -s -6 https://ifconfig.me)/128"),
    (["198.51.100.0/33"], False, "curl -s -4 https://ifconfig.me)/32"),
]


@pytest.mark.parametrize(("cidrs", "anywhere", "expected"), CIDR_CASES)
def test_ssh_cidrs(cidrs: list[str], anywhere: bool, expected: str | None) -> None:
    config = {**dev_config(), "ssh": {**dev_config()["ssh"], "allowedCidrs": cidrs}}
    if anywhere:
        config["ssh"]["allowFromAnywhere"] = True
    if expected is None:
        load(config)
    else:
        message = error_of(config)
        assert expected in message and f"{PROJECT}:ssh.allowedCidrs" in message
        if ":" in cidrs[0] and "/0" not in cidrs[0]:
            fix = message.split("fix: ", 1)[1]
            assert not re.search(r"\d+\.\d+\.\d+\.\d+", fix)  # an IPv6 fix, not an IPv4 one


# --- backup.schedule (systemd OnCalendar) --------------------------------------------------------


def oncalendar_table() -> list[tuple[str, bool]]:
    rows = []
    for line in (REPO_ROOT / "tests" / "data" / "oncalendar.tsv").read_text().splitlines():
        if line.startswith("#"):
            continue
        expression, verdict = line.rsplit("\t", 1)
        rows.append((expression, verdict == "OK"))
    return rows


@pytest.mark.parametrize(("expression", "accepted"), oncalendar_table())
def test_oncalendar_fallback_matches_systemd(expression: str, accepted: bool) -> None:
    if accepted:
        check_fallback(expression)
    else:
        with pytest.raises(CalendarError):
            check_fallback(expression)


@pytest.mark.parametrize("tool", ["systemd-analyze", None])
@pytest.mark.parametrize(
    ("schedule", "accepted"),
    [("yearly", True), ("minutely", True), ("Mon..Fri 02:30", True), ("99:99", False), ("24:00", False)],
)
def test_backup_schedule_both_paths(
    monkeypatch: pytest.MonkeyPatch, tool: str | None, schedule: str, accepted: bool
) -> None:
    if tool is not None and oncalendar.systemd_analyze() is None:
        pytest.skip("systemd-analyze is not installed here (tests/test_real_validators.py requires it)")
    calls: list[str] = []
    real_fallback = oncalendar.check_fallback

    def recording_fallback(expression: str) -> None:
        calls.append(expression)
        real_fallback(expression)

    monkeypatch.setattr(oncalendar, "check_fallback", recording_fallback)
    if tool is None:
        monkeypatch.setattr(oncalendar, "systemd_analyze", lambda: None)
    config = {**dev_config(), "backup": {"schedule": schedule}}
    if accepted:
        assert load(config).backup.schedule == schedule
    else:
        message = error_of(config)
        assert f"{PROJECT}:backup.schedule: '{schedule}'" in message
        assert "systemd-analyze" in message if tool else "systemd-analyze" not in message
    assert calls == ([] if tool else [schedule])


# --- derived names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "server_name", "ok"),
    [
        ("dev", None, True),
        ("a" * 43, None, True),  # torrust- + 43 + -operator-99 = 63
        ("a" * 44, None, False),
        ("averyveryveryverylongstacknamethatgoesonandonandon", "torrust-prod", True),
        ("dev", "t" * 52, False),
    ],
)
def test_derived_names_fit_hetzner(stack: str, server_name: str | None, ok: bool) -> None:
    config = dev_config()
    if server_name:
        config["server"]["name"] = server_name
    if ok:
        assert len(load(config, stack).server_name + "-operator-99") <= 63
    else:
        message = error_of(config, stack)
        assert f"{PROJECT}:server.name: " in message and "at most 63" in message
        assert "fix: pulumi config set --path 'server.name' torrust-prod" in message


# --- unknown keys, did you mean --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "suggestion"),
    [
        ("ssh", "publicKey", "publicKeys"),
        ("ssh", "allowedCIDRs", "allowedCidrs"),
        ("domains", "trackerAPI", "trackerApi"),
        ("acme", "stagging", "staging"),
        ("backup", "retentionDay", "retentionDays"),
        ("server", "locaton", "location"),
    ],
)
def test_misspelt_nested_key_suggests_the_right_one(section: str, key: str, suggestion: str) -> None:
    config = dev_config()
    config.setdefault(section, {})[key] = "x"
    message = error_of(config)
    assert f"{PROJECT}:{section}.{key}: is not a known setting; did you mean '{suggestion}'?" in message
    assert f"fix: pulumi config rm --path '{section}.{key}'" in message


KEY_CASES: list[tuple[list[str], list[str], str | None]] = [
    # (configured keys, secret keys, expected problem part or None)
    ([f"{PROJECT}:domain"], [], "did you mean 'domains'?"),
    ([f"{PROJECT}:trackerAdminTokn"], [], "did you mean 'trackerAdminToken'?"),
    ([f"{PROJECT}:Backup"], [], "did you mean 'backup'?"),
    (["hcloud:token"], [], "hcloud:token: is stored in plain text"),
    (["cloudflare:apiToken"], [], "stored in plain text"),
    (["hcloud:token"], ["hcloud:token"], None),
    ([f"{PROJECT}:ssh", f"{PROJECT}:backup", f"{PROJECT}:trackerAdminToken"], [], None),
    (["hcloud:endpoint", "pulumi:tags"], [], None),
]


@pytest.mark.parametrize(("keys", "secret", "expected"), KEY_CASES)
def test_configured_keys(keys: list[str], secret: list[str], expected: str | None) -> None:
    problems = check_config_keys(keys, lambda key: key in secret)
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and expected in problems[0] and "\n      fix: " in problems[0]


# --- documentation-only values -------------------------------------------------------------------


def test_example_stack_values_are_documentation_only() -> None:
    found = dict(documentation_values(load(dev_config())))
    assert set(found) == {
        "domains.trackerApi",
        "domains.httpTrackers[0]",
        "domains.grafana",
        "domains.udpTracker",
        "acme.email",
        "ssh.allowedCidrs[0]",
        "ssh.allowedCidrs[1]",
        "ssh.publicKeys[0]",
        "dns.zone",
    }
    assert fingerprint(DEV_KEY) in PLACEHOLDER_KEY_FINGERPRINTS


def test_real_values_are_not_documentation() -> None:
    config = dev_config()
    config["domains"] = {
        "trackerApi": "api.torrust.org",
        "httpTrackers": ["http1.torrust.org"],
        "grafana": "grafana.torrust.org",
    }
    config["acme"] = {"email": "admin@torrust.org"}
    config["dns"] = {"zone": "torrust.org"}
    config["ssh"] = {
        "publicKeys": [key_line("ssh-ed25519", ED25519)],
        "allowedCidrs": ["192.0.3.0/24", "2a01:4f8::/32"],
    }
    assert documentation_values(load(config)) == []
