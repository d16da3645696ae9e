"""OpenSSH keys: the public keys for authorized_keys and the operator's private key file.

Public key lines are parsed the way sshd reads authorized_keys (OpenSSH sshkey.c
`sshkey_from_blob`, wire format RFC 4253 section 6.6, RFC 5656 section 3.1, RFC 8709 section 4,
PROTOCOL.u2f for the sk- types): the base64 blob starts with the same type string as the line's
label, and holds exactly the fields of that type. RSA moduli below 2048 bits are refused (OpenSSH
refuses < 1024 since 8.8 via RequiredRSASize; NIST SP 800-131A disallows < 2048).

The private key file format is OpenSSH's PROTOCOL.key ("openssh-key-v1": ciphername, kdfname, ...);
a ciphername other than "none" means a passphrase, which Pulumi cannot type.
"""

from __future__ import annotations

import base64
import binascii
import struct
from pathlib import Path

MIN_RSA_BITS = 2048

# type -> the string fields after the type string, as (field, expected byte length or None).
_FIELDS: dict[str, tuple[tuple[str, int | None], ...]] = {
    "ssh-ed25519": (("public key", 32),),
    "ssh-rsa": (("exponent", None), ("modulus", None)),
    "ecdsa-sha2-nistp256": (("curve", None), ("point", 65)),
    "ecdsa-sha2-nistp384": (("curve", None), ("point", 97)),
    "ecdsa-sha2-nistp521": (("curve", None), ("point", 133)),
    "sk-ssh-ed25519@openssh.com": (("public key", 32), ("application", None)),
    "sk-ecdsa-sha2-nistp256@openssh.com": (("curve", None), ("point", 65), ("application", None)),
}
KEY_TYPES = tuple(_FIELDS)

_PRIVATE_MARKERS = ("PRIVATE KEY-----", "PuTTY-User-Key-File", "BEGIN SSH2 ENCRYPTED PRIVATE KEY")


class SshKeyError(ValueError):
    """A key that OpenSSH would not use; the message is for the operator."""


def looks_private(text: str) -> bool:
    return any(marker in text for marker in _PRIVATE_MARKERS)


def _strings(blob: bytes) -> list[bytes]:
    """Split an SSH wire-format blob into its length-prefixed strings; raise when it is cut short."""
    fields: list[bytes] = []
    offset = 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            raise SshKeyError("the key data is cut short (truncated copy?)")
        (length,) = struct.unpack(">I", blob[offset : offset + 4])
        offset += 4
        if offset + length > len(blob):
            raise SshKeyError("the key data is cut short (truncated copy?)")
        fields.append(blob[offset : offset + length])
        offset += length
    return fields


def parse_public_key(line: str) -> tuple[str, bytes, int | None]:
    """(type, blob, RSA bits or None) of an authorized_keys line; raise SshKeyError when sshd would not
    accept it. Options before the type (from="…") are not supported: the program writes the line."""
    if looks_private(line):
        raise SshKeyError(
            "this is a PRIVATE key, now exposed in the stack file: rotate it (ssh-keygen -t ed25519) "
            "and give the public half (the .pub file)"
        )
    parts = line.split(None, 2)
    if len(parts) < 2:
        raise SshKeyError("is not an OpenSSH public key ('ssh-ed25519 AAAA… comment')")
    label, data = parts[0], parts[1]
    if label not in _FIELDS:
        raise SshKeyError(f"key type '{label[:40]}' is not one of {', '.join(KEY_TYPES)}")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SshKeyError("the base64 key data is damaged (not valid base64)") from None
    fields = _strings(blob)
    if not fields or fields[0] != label.encode():
        inner = fields[0][:40].decode(errors="replace") if fields else "nothing"
        raise SshKeyError(f"the line says '{label}' but the key data is a '{inner}' key")
    expected = _FIELDS[label]
    if len(fields) - 1 != len(expected):
        raise SshKeyError(
            f"the key data has {len(fields) - 1} fields, a {label} key has {len(expected)} "
            "(truncated or corrupted copy?)"
        )
    for value, (name, length) in zip(fields[1:], expected, strict=True):
        if length is not None and len(value) != length:
            raise SshKeyError(f"the {name} is {len(value)} bytes, a {label} key has {length}")
        if name == "curve" and label.split("-")[-1].split("@")[0] != value.decode(errors="replace"):
            raise SshKeyError(f"the key data names curve '{value.decode(errors='replace')}', not {label}'s")
    bits = None
    if label == "ssh-rsa":
        bits = int.from_bytes(fields[2], "big").bit_length()
        if bits < MIN_RSA_BITS:
            raise SshKeyError(f"is a {bits}-bit RSA key; use at least {MIN_RSA_BITS} bits, or ed25519")
    return label, blob, bits


def private_key_problem(path: Path) -> tuple[str | None, bool]:
    """(problem, passphrase protected) for the operator's private key file."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"'{path}' cannot be read ({exc.strerror})", False
    if path.suffix == ".pub" or text.lstrip().startswith(KEY_TYPES):
        return f"'{path}' is a public key; ssh.privateKeyFile is the private half (without .pub)", False
    if not looks_private(text):
        return f"'{path}' is not a private key file (no '-----BEGIN … PRIVATE KEY-----')", False
    if "Proc-Type: 4,ENCRYPTED" in text or "BEGIN ENCRYPTED PRIVATE KEY" in text:
        return None, True
    if "BEGIN OPENSSH PRIVATE KEY" in text:
        body = "".join(
            line.strip() for line in text.splitlines() if line.strip() and not line.startswith("-----")
        )
        try:
            raw = base64.b64decode(body)
        except (binascii.Error, ValueError):
            return f"'{path}' is a damaged OpenSSH private key (bad base64)", False
        magic = b"openssh-key-v1\0"
        if not raw.startswith(magic):
            return f"'{path}' is a damaged OpenSSH private key (no openssh-key-v1 header)", False
        try:
            (length,) = struct.unpack(">I", raw[len(magic) : len(magic) + 4])
        except struct.error:
            return f"'{path}' is a damaged OpenSSH private key (cut short)", False
        cipher = raw[len(magic) + 4 : len(magic) + 4 + length]
        return None, cipher != b"none"
    return None, False
