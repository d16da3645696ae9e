"""Strict key check of a `tracker.toml` against configuration schema 2.0.0, as torrust/tracker v3.0.0
(the release the deployment pins) reads it.

Kept only for what the real binary does not catch (tests/test_real_tracker.py runs it): v3.0.0 loads
its configuration with figment + serde and none of its structs has `deny_unknown_fields`, so a
misspelled key or table is silently ignored and the default applies (e.g. `on_reverse_proxi = true`
leaves the tracker reading the proxy's address as every peer's IP) -- the binary starts happily.
The real binary does reject wrong types, bad enum values, bad socket addresses, a missing mandatory
option and a wrong schema_version; this module checks those too, so that the message names the key.

Source, read at tag v3.0.0 (commit 850e95e3, 2024-10-02) of torrust/torrust-tracker:
`packages/configuration/src/v2_0_0/` -- `mod.rs` (Configuration, Configuration::load,
check_mandatory_options), `core.rs` (Core, PrivateMode), `network.rs`, `database.rs` (Driver),
`logging.rs` (Threshold), `http_tracker.rs` (bind_address, tsl_config), `udp_tracker.rs`
(bind_address only), `tracker_api.rs`, `health_check_api.rs`; Metadata, AnnouncePolicy,
TrackerPolicy, TslConfig in `packages/configuration/src/lib.rs`. Keys added after v3.0.0
(`tracker_usage_statistics` and `cookie_lifetime` per tracker) are unknown to v3.0.0 and reported.
"""

from __future__ import annotations

import difflib
import ipaddress
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "2.0.0"
# Configuration::check_mandatory_options (mod.rs): the tracker refuses to start without them.
MANDATORY = ("metadata.schema_version", "logging.threshold", "core.private", "core.listed")

Check = Callable[[Any], str | None]  # a problem description, or None


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected a boolean, got {value!r}"


def _uint(bits: int) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
            return f"expected an unsigned {bits}-bit integer, got {value!r}"
        return None

    return check


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {value!r}"


def _enum(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"expected one of {', '.join(choices)}, got {value!r}"

    return check


def _exact(expected: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value == expected else f"must be {expected!r}, got {value!r}"

    return check


def _ip(value: Any) -> str | None:
    """Rust `IpAddr` from a string: a bare IPv4 or IPv6 address (no brackets, no zone)."""
    if not isinstance(value, str):
        return f"expected an IP address string, got {value!r}"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"not an IP address: {value!r}"
    return None


def _socket_addr(value: Any) -> str | None:
    """Rust `SocketAddr` from a string: `a.b.c.d:port` or `[v6]:port`, port 0..65535."""
    if not isinstance(value, str):
        return f"expected an `ip:port` string, got {value!r}"
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        return f"not a socket address (ip:port): {value!r}"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"not a socket address ([ipv6]:port): {value!r}"
        return None
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return f"not a socket address (IPv4 ip:port, or [IPv6]:port): {value!r}"
    return None


@dataclass(frozen=True)
class Table:
    keys: dict[str, Any]  # name -> Check | Table | ArrayOf | MapOf


@dataclass(frozen=True)
class ArrayOf:
    table: Table  # [[name]] arrays of tables


@dataclass(frozen=True)
class MapOf:
    value: Check  # a map with free keys (access_tokens: label -> token)


TSL_CONFIG = Table({"ssl_cert_path": _string, "ssl_key_path": _string})

SCHEMA = Table(
    {
        "metadata": Table(
            {
                "app": _exact("torrust-tracker"),
                "purpose": _exact("configuration"),
                "schema_version": _exact(SCHEMA_VERSION),
            }
        ),
        "logging": Table({"threshold": _enum("off", "error", "warn", "info", "debug", "trace")}),
        "core": Table(
            {
                "announce_policy": Table({"interval": _uint(32), "interval_min": _uint(32)}),
                "database": Table({"driver": _enum("sqlite3", "mysql"), "path": _string}),
                "inactive_peer_cleanup_interval": _uint(64),
                "listed": _bool,
                "net": Table({"external_ip": _ip, "on_reverse_proxy": _bool}),
                "private": _bool,
                "private_mode": Table({"check_keys_expiration": _bool}),
                "tracker_policy": Table(
                    {
                        "max_peer_timeout": _uint(32),
                        "persistent_torrent_completed_stat": _bool,
                        "remove_peerless_torrents": _bool,
                    }
                ),
                "tracker_usage_statistics": _bool,
            }
        ),
        "udp_trackers": ArrayOf(Table({"bind_address": _socket_addr})),
        "http_trackers": ArrayOf(Table({"bind_address": _socket_addr, "tsl_config": TSL_CONFIG})),
        "http_api": Table(
            {"bind_address": _socket_addr, "tsl_config": TSL_CONFIG, "access_tokens": MapOf(_string)}
        ),
        "health_check_api": Table({"bind_address": _socket_addr}),
    }
)


def _kind(node: Any) -> str:
    if isinstance(node, Table):
        return "a table"
    if isinstance(node, ArrayOf):
        return "an array of tables ([[...]])"
    if isinstance(node, MapOf):
        return "a table of strings"
    return "a value"


def _walk(value: Any, node: Any, path: str, problems: list[str]) -> None:
    if isinstance(node, Table):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected {_kind(node)}, got {value!r}")
            return
        for key, child in value.items():
            where = f"{path}.{key}" if path else key
            if key not in node.keys:
                close = difflib.get_close_matches(key, list(node.keys), n=1, cutoff=0.6)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                problems.append(
                    f"{where}: unknown key in tracker configuration schema {SCHEMA_VERSION}{hint}"
                )
                continue
            _walk(child, node.keys[key], where, problems)
    elif isinstance(node, ArrayOf):
        if not isinstance(value, list):
            problems.append(f"{path}: expected {_kind(node)}, got {value!r}")
            return
        for index, item in enumerate(value):
            _walk(item, node.table, f"{path}[{index}]", problems)
    elif isinstance(node, MapOf):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected {_kind(node)}, got {value!r}")
            return
        for key, item in value.items():
            problem = node.value(item)
            if problem:
                problems.append(f"{path}.{key}: {problem}")
    else:
        if isinstance(value, dict | list):
            problems.append(
                f"{path}: expected a value, got a {'table' if isinstance(value, dict) else 'list'}"
            )
            return
        problem = node(value)
        if problem:
            problems.append(f"{path}: {problem}")


def _lookup(document: dict[str, Any], dotted: str) -> Any:
    current: Any = document
    for part in dotted.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def check_tracker_toml(text: str) -> list[str]:
    """Every problem of `text` as a schema-2.0.0 tracker.toml; [] when it is clean."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        return [f"not valid TOML: {error}"]
    problems: list[str] = []
    _walk(document, SCHEMA, "", problems)
    for option in MANDATORY:
        if _lookup(document, option) is None:
            problems.append(f"{option}: mandatory option missing (the tracker refuses to start)")
    # SemanticValidationError::UselessPrivateModeSection (core.rs).
    if _lookup(document, "core.private_mode") is not None and _lookup(document, "core.private") is not True:
        problems.append("core.private_mode: only allowed when core.private = true")
    return problems


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    status = 0
    for path in paths:
        for problem in check_tracker_toml(Path(path).read_text()):
            print(f"{path}: {problem}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
