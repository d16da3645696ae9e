"""Strict checker and route emulator for Pingoo's ``/etc/pingoo/pingoo.yml`` (Pingoo v0.14.7).

Pingoo deserialises its configuration with serde and none of its structs use
``#[serde(deny_unknown_fields)]``, so a misspelt key (``http_prxy``, ``tls.acme.contact`` ...) is
silently ignored and the typo ships.  This module mirrors the real config structs and the validation
done by Pingoo at start-up, and is stricter:

* unknown keys are rejected at every level, as are duplicate YAML keys, YAML merge keys (``<<``; the
  serde_yaml 0.9 used by Pingoo treats ``<<`` as an ordinary, hence unknown, key) and explicit
  ``null`` values (serde maps ``route: ~`` to "no route", which silently makes a catch-all service);
* mistakes that Pingoo only reports at run time are reported here: routes referencing unknown
  variables, fields or functions (Pingoo compiles them fine, then every evaluation fails and the
  route never matches), routes comparing values of different types (always false in Pingoo), an
  http listener naming a ``tcp_proxy`` service (Pingoo panics at start-up), an empty
  ``child_process.command`` (Pingoo indexes ``command[0]``);
* a few choices Pingoo accepts but that are never what we want are rejected: listener paths,
  upstream URL paths/queries, port 0, non-https ACME directories, IPv6 bracketed hosts.

Sources mirrored (``github:pingooio/pingoo`` at v0.14.7 = ``eecc74dc``; the ``bel`` expression
language from ``github:pingooio/stdx-rs`` at ``70c3c14d``, the commit pinned by Pingoo's Cargo.lock):

* ``pingoo/config/config_file.rs``: ``ConfigFile`` & friends (key sets), ``parse_listener_address``
  (scheme/IP/port), ``parse_service`` (exactly one kind, tcp_proxy without route, static
  ``not_found.status``), ``parse_upstream`` (scheme, host, port);
* ``pingoo/config/config.rs``: ``TlsConfig``/``TlsAcmeConfig``/``ServiceDiscoveryConfig``/
  ``ListConfig``/``ChildProcess`` (key sets), ``load_and_validate`` (default services per listener,
  ACME domain checks, the port-443 warning), ``validate_listeners_config``;
* ``rules/rules.rs``: ``Action`` (``{action: block|captcha}``), ``compile_expression``;
* ``pingoo/server.rs``: listener/service kind compatibility (``unwrap``/``expect`` at start-up);
* ``pingoo/listeners/http_listener.rs``: ``serve_http_requests`` (UA check, captcha prefix, rules,
  services in order, 404) and ``get_host``; ``pingoo/services/http_utils.rs``: ``get_path``,
  ``USER_AGENT_MAX_LENGTH``/``HOSTNAME_MAX_LENGTH``; ``pingoo/services/http_proxy_service.rs``
  ``match_request`` (no route = match, evaluation error = no match);
* ``bel/src/context.rs``/``objects.rs``/``functions.rs``/``ser.rs``: variables, functions, operator
  semantics (``||``/``&&`` short-circuit left to right, ``==`` across types is ``false``,
  ``client.ip`` is an ``Ip`` value, not a string).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import yaml

__all__ = [
    "TOP_LEVEL_KEYS",
    "AcmeConfig",
    "ChildProcessConfig",
    "Expression",
    "ListConfig",
    "ListenerConfig",
    "PingooConfig",
    "PingooConfigError",
    "RouteDecision",
    "RuleConfig",
    "ServiceConfig",
    "StaticConfig",
    "Upstream",
    "check_pingoo_config",
    "compile_expression",
    "config_warnings",
    "evaluate_request",
    "route_request",
    "tls_listener_on_443",
]

# --------------------------------------------------------------------------------------------------
# Constants mirrored from Pingoo
# --------------------------------------------------------------------------------------------------

TOP_LEVEL_KEYS = frozenset(
    {"listeners", "services", "rules", "tls", "service_discovery", "lists", "child_process"}
)
_REQUIRED_TOP_LEVEL_KEYS = ("listeners", "services")  # no serde default on ConfigFile
_LISTENER_KEYS = frozenset({"address", "services"})
_SERVICE_KEYS = frozenset({"route", "http_proxy", "tcp_proxy", "static"})
_SERVICE_KINDS = ("http_proxy", "tcp_proxy", "static")
_STATIC_KEYS = frozenset({"root", "not_found"})
_STATIC_NOT_FOUND_KEYS = frozenset({"file", "status"})
_RULE_KEYS = frozenset({"expression", "actions"})
_RULE_ACTIONS = ("block", "captcha")
_TLS_KEYS = frozenset({"acme"})
_ACME_KEYS = frozenset({"directory_url", "domains"})
_SERVICE_DISCOVERY_KEYS = frozenset({"docker"})
_DOCKER_KEYS = frozenset({"socket"})
_LIST_KEYS = frozenset({"type", "file"})
_LIST_TYPES = ("String", "Int", "Ip")  # serde derive, no rename: case-sensitive
_CHILD_PROCESS_KEYS = frozenset({"command"})

LETSENCRYPT_PRODUCTION_URL = "https://acme-v02.api.letsencrypt.org/directory"
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
USER_AGENT_MAX_LENGTH = 256  # services/http_utils.rs
HOSTNAME_MAX_LENGTH = 256  # services/http_utils.rs
CAPTCHA_PATH_PREFIX = "/__pingoo/captcha"

ListenerProtocol: TypeAlias = Literal["http", "https", "tcp", "tcp+tls"]
ServiceKind: TypeAlias = Literal["http_proxy", "tcp_proxy", "static"]
_HTTP_PROTOCOLS: frozenset[str] = frozenset({"http", "https"})
_TCP_PROTOCOLS: frozenset[str] = frozenset({"tcp", "tcp+tls"})
_TLS_PROTOCOLS: frozenset[str] = frozenset({"https", "tcp+tls"})


class PingooConfigError(ValueError):
    """A pingoo.yml problem. The message starts with the offending key path, e.g.
    ``services.tracker_api.http_prxy: unknown key``."""


# --------------------------------------------------------------------------------------------------
# Result model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListenerConfig:
    name: str
    protocol: ListenerProtocol
    ip: str
    port: int
    services: tuple[str, ...]
    services_explicit: bool  # False: Pingoo's default (every compatible service, file order)

    @property
    def is_http(self) -> bool:
        return self.protocol in _HTTP_PROTOCOLS


@dataclass(frozen=True)
class Upstream:
    url: str
    scheme: Literal["http", "https", "tcp"]
    host: str
    port: int
    tls: bool  # scheme == "https"
    static_ip: bool  # IP literal or "localhost": never re-resolved by Pingoo's DNS discovery


@dataclass(frozen=True)
class StaticConfig:
    root: str
    not_found_file: str | None
    not_found_status: int


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    kind: ServiceKind
    route_source: str | None
    route: Expression | None
    upstreams: tuple[Upstream, ...]  # http_proxy / tcp_proxy
    static: StaticConfig | None


@dataclass(frozen=True)
class RuleConfig:
    name: str
    expression_source: str | None
    expression: Expression | None
    actions: tuple[Literal["block", "captcha"], ...]


@dataclass(frozen=True)
class AcmeConfig:
    directory_url: str  # trimmed, trailing "/" removed (as Pingoo does)
    domains: tuple[str, ...]


@dataclass(frozen=True)
class ListConfig:
    type: Literal["String", "Int", "Ip"]
    file: str


@dataclass(frozen=True)
class ChildProcessConfig:
    command: tuple[str, ...]


@dataclass(frozen=True)
class PingooConfig:
    listeners: Mapping[str, ListenerConfig]  # file order
    services: Mapping[str, ServiceConfig]  # file order
    rules: tuple[RuleConfig, ...]
    acme: AcmeConfig | None
    docker_socket: str | None  # None: no service_discovery section (Pingoo then uses the default socket)
    lists: Mapping[str, ListConfig] = field(default_factory=dict)
    child_process: ChildProcessConfig | None = None


# --------------------------------------------------------------------------------------------------
# YAML loading: safe_load semantics plus duplicate-key / merge-key detection
# --------------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys and ``<<`` merge keys."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise PingooConfigError(
                    f"line {key_node.start_mark.line + 1}: YAML merge key '<<' is not supported "
                    "(serde_yaml 0.9 in Pingoo treats it as an ordinary, unknown key)"
                )
        super().flatten_mapping(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        self.flatten_mapping(node)
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key; SafeLoader reports it below
                continue
            if duplicate:
                raise PingooConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str) -> object:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        raise PingooConfigError(f"<document>: invalid YAML: {err}") from err


# --------------------------------------------------------------------------------------------------
# Generic structural helpers
# --------------------------------------------------------------------------------------------------


def _err(path: str, message: str) -> PingooConfigError:
    return PingooConfigError(f"{path or '<document>'}: {message}")


def _join(path: str, key: str) -> str:
    return key if not path else f"{path}.{key}"


def _mapping(value: object, path: str, allowed: frozenset[str] | None = None) -> dict[str, object]:
    """Check that ``value`` is a mapping with string keys (and, if given, only ``allowed`` keys)."""
    if value is None:
        raise _err(path, "must not be empty/null (serde would treat it as absent; remove it or give a value)")
    if not isinstance(value, dict):
        raise _err(path, f"must be a mapping, got {type(value).__name__}")
    result: dict[str, object] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise _err(_join(path, str(key)), f"key must be a string, got {type(key).__name__}")
        if allowed is not None and key not in allowed:
            raise _err(_join(path, key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        if item is None:
            raise _err(
                _join(path, key),
                "must not be empty/null (serde would treat it as absent; remove it or give a value)",
            )
        result[key] = item
    return result


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _err(path, f"must be a string, got {type(value).__name__}")
    return value


def _string_list(value: object, path: str) -> list[str]:
    if not isinstance(value, list):
        raise _err(path, f"must be a list of strings, got {type(value).__name__}")
    return [_string(item, f"{path}[{index}]") for index, item in enumerate(value)]


def _port(text: str, path: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise _err(path, f"port {port} is out of range 1-65535")
    return port


# --------------------------------------------------------------------------------------------------
# Listener addresses (config_file.rs parse_listener_address)
# --------------------------------------------------------------------------------------------------

_LISTENER_ADDRESS_RE = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)$"
)
_AUTHORITY_RE = re.compile(r"^(?P<host>\[[^\]]*\]|[^:\[\]@]*)(?::(?P<port>[0-9]*))?$")
_DEFAULT_LISTENER_PORTS: dict[str, int] = {"http": 80, "https": 443}


def _parse_listener_address(value: object, path: str) -> tuple[ListenerProtocol, str, int]:
    address = _string(value, path)
    match = _LISTENER_ADDRESS_RE.match(address)
    if match is None:
        raise _err(
            path,
            f"{address!r} must be scheme://IP[:port] with scheme http, https, tcp or tcp+tls "
            "(Pingoo would read a scheme-less address as http)",
        )
    scheme = match["scheme"]
    if scheme not in ("http", "https", "tcp", "tcp+tls"):
        raise _err(
            path, f"protocol is not valid: {scheme} is not a valid protocol (http, https, tcp, tcp+tls)"
        )
    protocol: ListenerProtocol = scheme  # type: ignore[assignment]  # narrowed by the membership test
    if match["rest"]:
        # Pingoo builds a "path must be empty" error but never returns it (config_file.rs), we reject.
        raise _err(path, f"{address!r}: path/query must be empty")
    authority = _AUTHORITY_RE.match(match["authority"])
    if authority is None:
        raise _err(path, f"{address!r} is not valid: malformed host[:port] (no user info allowed)")
    host = authority["host"]
    if host.startswith("["):
        raise _err(
            path,
            f"{address!r} is not valid: IPv6 listeners cannot be parsed by Pingoo "
            "(http::Uri keeps the brackets, IpAddr parsing rejects them); use 0.0.0.0",
        )
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise _err(
            path, f"{address!r} is not valid: host {host!r} must be an IP literal (e.g. 0.0.0.0)"
        ) from None
    port_text = authority["port"]
    if port_text:
        port = _port(port_text, path)
    elif protocol in _DEFAULT_LISTENER_PORTS:
        port = _DEFAULT_LISTENER_PORTS[protocol]
    else:
        raise _err(path, f"listener address {address} is not valid: port is missing")
    return protocol, str(ip), port


# --------------------------------------------------------------------------------------------------
# Upstreams (config_file.rs parse_upstream)
# --------------------------------------------------------------------------------------------------

_UPSTREAM_RE = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<userinfo>[^/?#@]*@)?(?P<host>\[[^\]]*\]|[^:/?#]*)"
    r"(?::(?P<port>[0-9]*))?(?P<path>[^?#]*)(?P<query>\?[^#]*)?(?P<fragment>#.*)?$"
)
_HOSTNAME_LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?$")
_DEFAULT_UPSTREAM_PORTS: dict[str, int] = {"http": 80, "https": 443}


def _parse_upstream(value: object, path: str) -> Upstream:
    url = _string(value, path)
    match = _UPSTREAM_RE.match(url)
    if match is None:
        raise _err(path, f"{url} is not a valid URL (expected scheme://host[:port])")
    scheme = match["scheme"]
    host = match["host"]
    if not host:
        raise _err(path, f"{url} is not a valid URL: host is missing")
    if not host.isascii():
        raise _err(path, f"{url} is not a valid URL: only ascii hostnames are currently supported")
    if scheme not in ("tcp", "http", "https"):
        raise _err(path, f"{url} is not a valid URL: {scheme} is not a valid protocol (tcp, http, https)")
    if match["userinfo"]:
        raise _err(path, f"{url}: user info is not allowed in upstream URLs")
    if match["path"] not in ("", "/") or match["query"] is not None or match["fragment"] is not None:
        raise _err(path, f"{url}: upstream URLs must not have a path, query or fragment (Pingoo drops them)")
    static_ip = host == "localhost"
    if host.startswith("["):
        raise _err(
            path,
            f"{url}: bracketed IPv6 upstreams are not usable (Pingoo parses '[..]' as a DNS name); use IPv4",
        )
    try:
        ipaddress.IPv4Address(host)
        static_ip = True
    except ValueError:
        labels = host.split(".")
        if (
            not all(_HOSTNAME_LABEL_RE.match(label) for label in labels)
            or len(host) > 253
            or labels[-1].isdigit()  # "1.2.3" / "10.0.0.256": the url crate reads these as (bad) IPv4
        ):
            raise _err(path, f"{url} is not a valid URL: invalid host {host!r}") from None
    port_text = match["port"]
    if port_text:
        port = _port(port_text, path)
    elif scheme in _DEFAULT_UPSTREAM_PORTS:
        port = _DEFAULT_UPSTREAM_PORTS[scheme]
    else:
        raise _err(path, f"{url} is not a valid URL: port is missing")
    return Upstream(
        url=url,
        scheme=scheme,  # type: ignore[arg-type]  # narrowed by the membership test
        host=host,
        port=port,
        tls=scheme == "https",
        static_ip=static_ip,
    )


# --------------------------------------------------------------------------------------------------
# ACME domains (config.rs load_and_validate)
# --------------------------------------------------------------------------------------------------

_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _check_domain(domain: str, path: str) -> None:
    if "*" in domain:
        raise _err(
            path, f"acme: Pingoo currently doesn't support wildcard domains for automatic TLS ({domain})"
        )
    if not domain.isascii() or domain.lower() != domain:
        raise _err(path, f"acme: invalid domain: {domain} (must be lowercase ASCII)")
    labels = domain.split(".")
    if (
        len(domain) > 253
        or len(labels) < 2
        or not all(_DNS_LABEL_RE.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise _err(path, f"acme: invalid domain: {domain} (not a valid DNS name)")


# --------------------------------------------------------------------------------------------------
# Expressions: the subset of bel (Pingoo's CEL dialect) this checker understands
# --------------------------------------------------------------------------------------------------

ValueType: TypeAlias = Literal["string", "int", "bool", "ip", "list"]
RuntimeValue: TypeAlias = str | int | bool | ipaddress.IPv4Network | ipaddress.IPv6Network | tuple[str, ...]

# Variables registered by serve_http_requests (http_listener.rs) and their field types
# (rules.rs RequestData/ClientData as serialised by bel/src/ser.rs).
_VARIABLE_FIELDS: dict[str, dict[str, ValueType]] = {
    "http_request": {
        "host": "string",
        "url": "string",
        "path": "string",
        "method": "string",
        "user_agent": "string",
    },
    "client": {"ip": "ip", "remote_port": "int", "asn": "int", "country": "string"},
}
# Registered by Pingoo but outside this checker's subset.
_UNSUPPORTED_VARIABLES = frozenset({"lists"})
# bel/src/context.rs Context::default() (features regex, time, ip are on by default).
_BEL_FUNCTIONS = frozenset(
    {
        "contains", "length", "max", "min", "starts_with", "ends_with", "String", "Bytes", "Float", "Int",
        "matches", "Regex", "Duration", "Timestamp", "year", "month", "seconds", "milliseconds", "unix",
        "now",
        "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek", "getHours", "getMinutes", "Ip",
    }
)  # fmt: skip
_RESERVED = frozenset({"true", "false", "null", "in"})


class _Node:
    type: ValueType

    def eval(self, env: Mapping[str, Mapping[str, RuntimeValue]]) -> RuntimeValue:
        raise NotImplementedError


@dataclass(frozen=True)
class _Literal(_Node):
    value: RuntimeValue
    type: ValueType

    def eval(self, env: Mapping[str, Mapping[str, RuntimeValue]]) -> RuntimeValue:
        return self.value


@dataclass(frozen=True)
class _Field(_Node):
    variable: str
    name: str
    type: ValueType

    def eval(self, env: Mapping[str, Mapping[str, RuntimeValue]]) -> RuntimeValue:
        return env[self.variable][self.name]


@dataclass(frozen=True)
class _ListLiteral(_Node):
    items: tuple[_Node, ...]
    type: ValueType = "list"

    def eval(self, env: Mapping[str, Mapping[str, RuntimeValue]]) -> RuntimeValue:
        return tuple(str(item.eval(env)) for item in self.items)


@dataclass(frozen=True)
class _Not(_Node):
    operand: _Node
    type: ValueType = "bool"

    def eval(self, env: Mapping[str, Mapping[str, RuntimeValue]]) -> RuntimeValue:
        return not self.operand.eval(env)


@dataclass(frozen=True)
class _Logical(_Node):
    op: Literal["&&", "||"]
    left: _Node
    right: _Node
    type: ValueType = "bool"

    def eval(self, env: Mapping[str, Mapping[str, RuntimeValue]]) -> RuntimeValue:
        # bel short-circuits left to right (objects.rs LOGICAL_OR / LOGICAL_AND)
        left = bool(self.left.eval(env))
        if self.op == "||":
            return left or bool(self.right.eval(env))
        return left and bool(self.right.eval(env))


_COMPARATORS: dict[str, Callable[[RuntimeValue, RuntimeValue], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,  # type: ignore[operator]
    "<=": lambda a, b: a <= b,  # type: ignore[operator]
    ">": lambda a, b: a > b,  # type: ignore[operator]
    ">=": lambda a, b: a >= b,  # type: ignore[operator]
}


@dataclass(frozen=True)
class _Compare(_Node):
    op: str
    left: _Node
    right: _Node
    type: ValueType = "bool"

    def eval(self, env: Mapping[str, Mapping[str, RuntimeValue]]) -> RuntimeValue:
        return _COMPARATORS[self.op](self.left.eval(env), self.right.eval(env))


@dataclass(frozen=True)
class _Method(_Node):
    name: str
    target: _Node
    argument: _Node
    type: ValueType = "bool"

    def eval(self, env: Mapping[str, Mapping[str, RuntimeValue]]) -> RuntimeValue:
        target = self.target.eval(env)
        argument = self.argument.eval(env)
        if isinstance(target, str) and isinstance(argument, str):
            if self.name == "starts_with":
                return target.startswith(argument)
            if self.name == "ends_with":
                return target.endswith(argument)
            return argument in target
        if isinstance(target, tuple):
            return argument in target
        if isinstance(target, ipaddress.IPv4Network | ipaddress.IPv6Network) and isinstance(
            argument, ipaddress.IPv4Network | ipaddress.IPv6Network
        ):
            # functions.rs contains(): the argument must be a single address inside the network
            single = argument.prefixlen == argument.max_prefixlen
            return single and argument.version == target.version and argument.network_address in target
        return False


@dataclass(frozen=True)
class Expression:
    """A compiled, type-checked route or rule expression."""

    source: str
    root: _Node

    def evaluate(self, env: Mapping[str, Mapping[str, RuntimeValue]]) -> bool:
        return self.root.eval(env) is True


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[\t\r\n\f ]+|//[^\n]*)
  | (?P<string>[rR](?:"[^"\n\r]*"|'[^'\n\r]*')|"(?:[^"\\\n\r]|\\.)*"|'(?:[^'\\\n\r]|\\.)*')
  | (?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?[uU]?|0x[0-9a-fA-F]+[uU]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\].,?:+\-*/%{}`])
    """,
    re.VERBOSE,
)
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPES.update({c: c for c in "\"'\\?`"})


def _unquote(token: str) -> str:
    if token[0] in "rR":
        return token[2:-1]
    body = token[1:-1]
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        escape = body[index + 1]
        if escape in _ESCAPES:
            out.append(_ESCAPES[escape])
            index += 2
        elif escape in "xX" and re.fullmatch(r"[0-9a-fA-F]{2}", body[index + 2 : index + 4]):
            out.append(chr(int(body[index + 2 : index + 4], 16)))
            index += 4
        elif escape == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[index + 2 : index + 6]):
            out.append(chr(int(body[index + 2 : index + 6], 16)))
            index += 6
        elif escape == "U" and re.fullmatch(r"[0-9a-fA-F]{8}", body[index + 2 : index + 10]):
            out.append(chr(int(body[index + 2 : index + 10], 16)))
            index += 10
        elif re.fullmatch(r"[0-3][0-7]{2}", body[index + 1 : index + 4]):
            out.append(chr(int(body[index + 1 : index + 4], 8)))
            index += 4
        else:
            raise ValueError(f"invalid escape sequence \\{escape}")
    return "".join(out)


class _ExpressionError(Exception):
    pass


class _Parser:
    """Recursive-descent parser following bel's CEL.g4 precedence, restricted to our subset."""

    def __init__(self, source: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(source):
            match = _TOKEN_RE.match(source, position)
            if match is None:
                raise _ExpressionError(
                    f"syntax error: unexpected character {source[position]!r} at {position}"
                )
            position = match.end()
            kind = match.lastgroup
            assert kind is not None
            if kind != "ws":
                self.tokens.append((kind, match.group()))
        self.tokens.append(("eof", ""))
        self.index = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.index]

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect(self, text: str) -> None:
        kind, value = self.take()
        if value != text or kind != "op":
            shown = value or "end of expression"
            raise _ExpressionError(f"syntax error: expected {text!r}, found {shown!r}")

    def parse(self) -> _Node | _VariableRef:
        node = self.parse_or()
        kind, value = self.peek()
        if kind != "eof":
            if value == "?":
                raise _ExpressionError("unsupported: conditional operator ?: (outside the checked subset)")
            raise _ExpressionError(f"syntax error: unexpected {value!r}")
        return node

    def parse_or(self) -> _Node | _VariableRef:
        node = self.parse_and()
        while self.peek() == ("op", "||"):
            self.take()
            node = _Logical("||", _bool(node, "||"), _bool(self.parse_and(), "||"))
        return node

    def parse_and(self) -> _Node | _VariableRef:
        node = self.parse_relation()
        while self.peek() == ("op", "&&"):
            self.take()
            node = _Logical("&&", _bool(node, "&&"), _bool(self.parse_relation(), "&&"))
        return node

    def parse_relation(self) -> _Node | _VariableRef:
        node = self.parse_calc()
        while True:
            kind, value = self.peek()
            if kind == "ident" and value == "in":
                raise _ExpressionError("unsupported operator: in (bel has no runtime support for it)")
            if kind != "op" or value not in _COMPARATORS:
                return node
            self.take()
            right = self.parse_calc()
            node = _compare(value, node, right)

    def parse_calc(self) -> _Node | _VariableRef:
        node = self.parse_unary()
        kind, value = self.peek()
        if kind == "op" and value in ("+", "-", "*", "/", "%"):
            raise _ExpressionError(f"unsupported: arithmetic operator {value!r} (outside the checked subset)")
        return node

    def parse_unary(self) -> _Node | _VariableRef:
        kind, value = self.peek()
        if (kind, value) == ("op", "!"):
            count = 0
            while self.peek() == ("op", "!"):
                self.take()
                count += 1
            node = self.parse_member()
            for _ in range(count):
                node = _Not(_bool(node, "!"))
            return node
        if (kind, value) == ("op", "-"):
            self.take()
            number_kind, number = self.take()
            if number_kind != "number":
                raise _ExpressionError("unsupported: unary minus on a non-literal")
            return _Literal(-_int_literal(number), "int")
        return self.parse_member()

    def parse_member(self) -> _Node | _VariableRef:
        node: _Node | _VariableRef = self.parse_primary()
        while True:
            kind, value = self.peek()
            if (kind, value) == ("op", "["):
                raise _ExpressionError("unsupported: index operator [] (outside the checked subset)")
            if (kind, value) != ("op", "."):
                break
            self.take()
            name_kind, name = self.take()
            if name_kind != "ident" or name in _RESERVED:
                raise _ExpressionError(f"syntax error: expected an identifier after '.', found {name!r}")
            if self.peek() == ("op", "("):
                self.take()
                arguments = self.parse_arguments()
                node = _method(_value(node), name, arguments)
            elif isinstance(node, _VariableRef):
                node = node.select(name)
            else:
                raise _ExpressionError(f"no such key: {name!r} (a {node.type} value has no fields)")
        return node

    def parse_arguments(self) -> list[_Node]:
        arguments: list[_Node] = []
        if self.peek() == ("op", ")"):
            self.take()
            return arguments
        while True:
            arguments.append(_value(self.parse_or()))
            kind, value = self.take()
            if (kind, value) == ("op", ")"):
                return arguments
            if (kind, value) != ("op", ","):
                raise _ExpressionError(
                    f"syntax error: expected ',' or ')', found {value or 'end of expression'!r}"
                )

    def parse_primary(self) -> _Node | _VariableRef:
        kind, value = self.take()
        if kind == "string":
            try:
                return _Literal(_unquote(value), "string")
            except ValueError as err:
                raise _ExpressionError(f"syntax error: {err}") from err
        if kind == "number":
            return _Literal(_int_literal(value), "int")
        if kind == "ident":
            if value in ("true", "false"):
                return _Literal(value == "true", "bool")
            if value in _RESERVED:
                raise _ExpressionError(f"unsupported: {value!r} (outside the checked subset)")
            if self.peek() == ("op", "("):
                self.take()
                return _global_call(value, self.parse_arguments())
            if value in _VARIABLE_FIELDS:
                return _VariableRef(value)
            if value in _UNSUPPORTED_VARIABLES:
                raise _ExpressionError(f"unsupported variable {value!r} (outside the checked subset)")
            raise _ExpressionError(
                f"undeclared reference to {value!r}: Pingoo only registers http_request, client and lists; "
                "the expression would fail at run time and never match"
            )
        if (kind, value) == ("op", "("):
            node = self.parse_or()
            self.expect(")")
            return node
        if (kind, value) == ("op", "["):
            items: list[_Node] = []
            if self.peek() != ("op", "]"):
                while True:
                    items.append(_value(self.parse_or()))
                    if self.peek() == ("op", ","):
                        self.take()
                        if self.peek() == ("op", "]"):
                            break
                        continue
                    break
            self.expect("]")
            for item in items:
                if item.type != "string":
                    raise _ExpressionError("unsupported: only lists of strings are supported")
            return _ListLiteral(tuple(items))
        raise _ExpressionError(f"syntax error: unexpected {value or 'end of expression'!r}")


@dataclass(frozen=True)
class _VariableRef:
    """A bare ``http_request`` or ``client`` map, only valid as the operand of ``.field``."""

    variable: str

    def select(self, name: str) -> _Node:
        fields = _VARIABLE_FIELDS[self.variable]
        if name not in fields:
            raise _ExpressionError(
                f"no such key: {self.variable}.{name} (known fields: {', '.join(fields)}); "
                "the expression would fail at run time and never match"
            )
        return _Field(self.variable, name, fields[name])


def _value(node: _Node | _VariableRef) -> _Node:
    if isinstance(node, _VariableRef):
        raise _ExpressionError(
            f"{node.variable} is a map; use one of its fields ({', '.join(_VARIABLE_FIELDS[node.variable])})"
        )
    return node


def _bool(node: _Node | _VariableRef, operator: str) -> _Node:
    checked = _value(node)
    if checked.type != "bool":
        raise _ExpressionError(
            f"operator {operator} needs bool operands, got {checked.type} (no such overload)"
        )
    return checked


def _int_literal(text: str) -> int:
    if not re.fullmatch(r"[0-9]+|0x[0-9a-fA-F]+", text):
        raise _ExpressionError(f"unsupported numeric literal {text!r} (only ints are supported)")
    return int(text, 0) if text.startswith("0x") else int(text)


def _compare(op: str, left_raw: _Node | _VariableRef, right_raw: _Node | _VariableRef) -> _Node:
    left, right = _value(left_raw), _value(right_raw)
    if left.type != right.type:
        raise _ExpressionError(
            f"comparison {left.type} {op} {right.type} mixes types: bel's == is always false across types"
            + (' (compare client.ip with Ip("..."))' if "ip" in (left.type, right.type) else "")
        )
    if op not in ("==", "!=") and left.type not in ("string", "int"):
        raise _ExpressionError(f"operator {op} is not supported on {left.type} values")
    if left.type == "list":
        raise _ExpressionError("comparing lists is outside the checked subset")
    return _Compare(op, left, right)


_METHOD_SIGNATURES: dict[str, dict[ValueType, ValueType]] = {
    "starts_with": {"string": "string"},
    "ends_with": {"string": "string"},
    "contains": {"string": "string", "list": "string", "ip": "ip"},
}


def _method(target: _Node, name: str, arguments: list[_Node]) -> _Node:
    if name not in _METHOD_SIGNATURES:
        if name in _BEL_FUNCTIONS:
            raise _ExpressionError(
                f"unsupported function {name!r} (exists in bel, outside the checked subset)"
            )
        raise _ExpressionError(
            f"undeclared reference to function {name!r}: the expression would fail at run time "
            "and never match"
        )
    if len(arguments) != 1:
        raise _ExpressionError(f"{name}() takes exactly 1 argument, got {len(arguments)}")
    signature = _METHOD_SIGNATURES[name]
    if target.type not in signature:
        raise _ExpressionError(f"{name}() cannot be called on a {target.type} value")
    argument = arguments[0]
    if argument.type != signature[target.type]:
        raise _ExpressionError(f"{name}() on {target.type} needs a {signature[target.type]} argument")
    return _Method(name, target, argument)


def _global_call(name: str, arguments: list[_Node]) -> _Node:
    if name == "Ip":
        if len(arguments) != 1 or not isinstance(arguments[0], _Literal) or arguments[0].type != "string":
            raise _ExpressionError('Ip() takes exactly one string literal, e.g. Ip("10.0.0.0/8")')
        try:
            network = ipaddress.ip_network(str(arguments[0].value), strict=False)
        except ValueError as err:
            raise _ExpressionError(f"Ip(): {err}") from err
        return _Literal(network, "ip")
    if name in _BEL_FUNCTIONS:
        raise _ExpressionError(f"unsupported function {name!r} (exists in bel, outside the checked subset)")
    raise _ExpressionError(
        f"undeclared reference to function {name!r}: the expression would fail at run time and never match"
    )


def compile_expression(source: str) -> Expression:
    """Parse and type-check a route/rule expression. Raises ``ValueError`` (without key path)."""
    if not source.strip():
        raise ValueError("expression is empty")
    try:
        root = _value(_Parser(source).parse())
    except _ExpressionError as err:
        raise ValueError(str(err)) from None
    if root.type != "bool":
        raise ValueError(f"expression evaluates to {root.type}, not bool: it would never match")
    return Expression(source=source, root=root)


def _compile_at(source: object, path: str) -> Expression:
    text = _string(source, path)
    try:
        return compile_expression(text)
    except ValueError as err:
        raise _err(path, f"expression is not valid: {err}") from None


# --------------------------------------------------------------------------------------------------
# check_pingoo_config
# --------------------------------------------------------------------------------------------------


def _parse_service(name: str, raw: object) -> ServiceConfig:
    path = f"services.{name}"
    data = _mapping(raw, path, _SERVICE_KEYS)
    kinds = [kind for kind in _SERVICE_KINDS if kind in data]
    if len(kinds) != 1:
        raise _err(
            path,
            f"invalid service definition for {name}: services must have exactly 1 http_proxy, tcp_proxy or "
            f"static field (found {', '.join(kinds) or 'none'})",
        )
    kind: ServiceKind = kinds[0]  # type: ignore[assignment]  # element of _SERVICE_KINDS
    static: StaticConfig | None = None
    upstreams: tuple[Upstream, ...] = ()
    if kind == "static":
        static_data = _mapping(data["static"], f"{path}.static", _STATIC_KEYS)
        root = _string(static_data.get("root", ""), f"{path}.static.root")
        not_found = _mapping(
            static_data.get("not_found", {}), f"{path}.static.not_found", _STATIC_NOT_FOUND_KEYS
        )
        file = not_found.get("file")
        status = not_found.get("status", 404)
        status_path = f"{path}.static.not_found.status"
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999:
            raise _err(status_path, "Not a valid HTTP status code (100-999)")
        static = StaticConfig(
            root=root,
            not_found_file=None if file is None else _string(file, f"{path}.static.not_found.file"),
            not_found_status=status,
        )
    else:
        urls = data[kind]
        if not isinstance(urls, list):
            raise _err(f"{path}.{kind}", f"must be a list of upstream URLs, got {type(urls).__name__}")
        upstreams = tuple(_parse_upstream(url, f"{path}.{kind}[{index}]") for index, url in enumerate(urls))
        if kind == "tcp_proxy":
            if "route" in data:
                raise _err(
                    f"{path}.route", f"Invalid service definition for {name}: TCP proxy can't have a route"
                )
            for upstream in upstreams:
                if upstream.scheme != "tcp":
                    # parse_upstream accepts it, but a tcp_proxy only ever opens raw TCP connections.
                    raise _err(f"{path}.tcp_proxy", f"{upstream.url}: tcp_proxy upstreams must use tcp://")
        elif any(upstream.scheme == "tcp" for upstream in upstreams):
            raise _err(f"{path}.http_proxy", "http_proxy upstreams must use http:// or https://, not tcp://")
    route_source: str | None = None
    route: Expression | None = None
    if "route" in data:
        route_source = _string(data["route"], f"{path}.route")
        route = _compile_at(route_source, f"{path}.route")
    return ServiceConfig(
        name=name, kind=kind, route_source=route_source, route=route, upstreams=upstreams, static=static
    )


def _parse_rules(raw: object) -> tuple[RuleConfig, ...]:
    rules: list[RuleConfig] = []
    for name, rule_raw in _mapping(raw, "rules").items():
        path = f"rules.{name}"
        data = _mapping(rule_raw, path, _RULE_KEYS)
        if "actions" not in data:
            raise _err(f"{path}.actions", "missing required key")
        actions_raw = data["actions"]
        if not isinstance(actions_raw, list):
            raise _err(f"{path}.actions", f"must be a list, got {type(actions_raw).__name__}")
        actions: list[Literal["block", "captcha"]] = []
        for index, action_raw in enumerate(actions_raw):
            action_path = f"{path}.actions[{index}]"
            action = _mapping(action_raw, action_path, frozenset({"action"}))
            if "action" not in action:
                raise _err(f"{action_path}.action", "missing required key")
            value = action["action"]
            if value not in _RULE_ACTIONS:
                raise _err(f"{action_path}.action", f"unknown action {value!r} (block, captcha)")
            actions.append(value)  # type: ignore[arg-type]  # narrowed by the membership test
        source: str | None = None
        expression: Expression | None = None
        if "expression" in data:
            source = _string(data["expression"], f"{path}.expression")
            expression = _compile_at(source, f"{path}.expression")
        rules.append(
            RuleConfig(name=name, expression_source=source, expression=expression, actions=tuple(actions))
        )
    return tuple(rules)


def _parse_acme(raw: object) -> AcmeConfig:
    data = _mapping(raw, "tls.acme", _ACME_KEYS)
    directory_url = _string(data.get("directory_url", LETSENCRYPT_PRODUCTION_URL), "tls.acme.directory_url")
    directory_url = directory_url.strip().rstrip("/")
    if not re.fullmatch(r"https://[^/\s?#]+(/\S*)?", directory_url):
        raise _err("tls.acme.directory_url", f"{directory_url!r} must be an https:// URL")
    if "domains" not in data:
        raise _err("tls.acme.domains", "missing required key")
    domains = _string_list(data["domains"], "tls.acme.domains")
    seen: set[str] = set()
    for index, domain in enumerate(domains):
        if domain in seen:
            raise _err(f"tls.acme.domains[{index}]", f"acme: duplicate domain: {domain}")
        seen.add(domain)
    for index, domain in enumerate(domains):
        _check_domain(domain, f"tls.acme.domains[{index}]")
    return AcmeConfig(directory_url=directory_url, domains=tuple(domains))


def _validate_listeners(
    listeners: Mapping[str, ListenerConfig], services: Mapping[str, ServiceConfig]
) -> None:
    """config.rs validate_listeners_config, plus the kind compatibility that server.rs assumes."""
    by_port: dict[int, str] = {}
    for listener in listeners.values():
        other = by_port.get(listener.port)
        if other is not None:
            raise _err(
                f"listeners.{listener.name}.address",
                f"config: listeners: {other} and {listener.name} can't listen on the same port "
                f"({listener.port})",
            )
        by_port[listener.port] = listener.name
    for listener in listeners.values():
        path = f"listeners.{listener.name}.services"
        if not listener.services:
            raise _err(path, f"config: listeners: {listener.name}: no service found for this listener")
        if not listener.is_http and len(listener.services) > 1:
            raise _err(
                path, f"config: listeners: {listener.name}: TCP listeners can only have 1 associated service"
            )
        seen: set[str] = set()
        for index, service_name in enumerate(listener.services):
            if service_name not in services:
                raise _err(
                    f"{path}[{index}]",
                    f"config: listeners: {listener.name}: service {service_name} doesn't exist",
                )
            if service_name in seen:
                raise _err(
                    f"{path}[{index}]",
                    f"config: listeners: {listener.name}: duplicate services are not allowed "
                    f"({service_name})",
                )
            seen.add(service_name)
            kind = services[service_name].kind
            if listener.is_http == (kind == "tcp_proxy"):
                raise _err(
                    f"{path}[{index}]",
                    f"{listener.protocol} listener {listener.name} cannot use {kind} service {service_name} "
                    "(Pingoo panics at start-up)",
                )


def check_pingoo_config(text: str) -> PingooConfig:
    """Parse ``text`` as pingoo.yml and validate it; raise :class:`PingooConfigError` on any problem."""
    document = _load_yaml(text)
    if document is None:
        raise _err("<document>", "empty document (listeners and services are required)")
    top = _mapping(document, "", TOP_LEVEL_KEYS)
    for key in _REQUIRED_TOP_LEVEL_KEYS:
        if key not in top:
            raise _err(key, "missing required key")

    # Structure of listeners first (serde parses addresses while deserialising).
    raw_listeners = _mapping(top["listeners"], "listeners")
    if not raw_listeners:
        raise _err("listeners", "no listener defined (Pingoo would start and serve nothing)")
    parsed_listeners: list[tuple[str, ListenerProtocol, str, int, list[str] | None]] = []
    for name, raw in raw_listeners.items():
        data = _mapping(raw, f"listeners.{name}", _LISTENER_KEYS)
        if "address" not in data:
            raise _err(f"listeners.{name}.address", "missing required key")
        protocol, ip, port = _parse_listener_address(data["address"], f"listeners.{name}.address")
        names = _string_list(data["services"], f"listeners.{name}.services") if "services" in data else None
        parsed_listeners.append((name, protocol, ip, port, names))

    services = {
        name: _parse_service(name, raw) for name, raw in _mapping(top["services"], "services").items()
    }

    # config.rs: default services = every compatible service in file order.
    http_services = tuple(name for name, service in services.items() if service.kind != "tcp_proxy")
    tcp_services = tuple(name for name, service in services.items() if service.kind == "tcp_proxy")
    listeners: dict[str, ListenerConfig] = {}
    for name, protocol, ip, port, names in parsed_listeners:
        default = http_services if protocol in _HTTP_PROTOCOLS else tcp_services
        listeners[name] = ListenerConfig(
            name=name,
            protocol=protocol,
            ip=ip,
            port=port,
            services=tuple(names) if names is not None else default,
            services_explicit=names is not None,
        )
    _validate_listeners(listeners, services)

    rules = _parse_rules(top["rules"]) if "rules" in top else ()

    acme: AcmeConfig | None = None
    if "tls" in top:
        tls = _mapping(top["tls"], "tls", _TLS_KEYS)
        if "acme" in tls:
            acme = _parse_acme(tls["acme"])

    docker_socket: str | None = None
    if "service_discovery" in top:
        discovery = _mapping(top["service_discovery"], "service_discovery", _SERVICE_DISCOVERY_KEYS)
        if "docker" not in discovery:
            raise _err("service_discovery.docker", "missing required key (no serde default)")
        docker = _mapping(discovery["docker"], "service_discovery.docker", _DOCKER_KEYS)
        docker_socket = _string(
            docker.get("socket", DEFAULT_DOCKER_SOCKET), "service_discovery.docker.socket"
        )

    lists: dict[str, ListConfig] = {}
    if "lists" in top:
        for name, raw in _mapping(top["lists"], "lists").items():
            data = _mapping(raw, f"lists.{name}", _LIST_KEYS)
            for key in ("type", "file"):
                if key not in data:
                    raise _err(f"lists.{name}.{key}", "missing required key")
            list_type = data["type"]
            if list_type not in _LIST_TYPES:
                raise _err(
                    f"lists.{name}.type", f"{list_type!r} is not one of String, Int, Ip (case-sensitive)"
                )
            lists[name] = ListConfig(
                type=list_type,  # type: ignore[arg-type]  # narrowed by the membership test
                file=_string(data["file"], f"lists.{name}.file"),
            )

    child_process: ChildProcessConfig | None = None
    if "child_process" in top:
        data = _mapping(top["child_process"], "child_process", _CHILD_PROCESS_KEYS)
        if "command" not in data:
            raise _err("child_process.command", "missing required key")
        command = _string_list(data["command"], "child_process.command")
        if not command:
            raise _err("child_process.command", "must not be empty (Pingoo indexes command[0])")
        child_process = ChildProcessConfig(command=tuple(command))

    return PingooConfig(
        listeners=listeners,
        services=services,
        rules=rules,
        acme=acme,
        docker_socket=docker_socket,
        lists=lists,
        child_process=child_process,
    )


# --------------------------------------------------------------------------------------------------
# Warnings
# --------------------------------------------------------------------------------------------------


def tls_listener_on_443(config: PingooConfig) -> bool:
    """True if an https or tcp+tls listener uses port 443.

    Pingoo (config.rs) only *warns* when ``tls.acme`` is set and this is False, because TLS-ALPN-01
    needs port 443 publicly but the container port may be re-mapped (``-p 443:8443``).
    """
    return any(
        listener.protocol in _TLS_PROTOCOLS and listener.port == 443 for listener in config.listeners.values()
    )


def config_warnings(config: PingooConfig) -> list[str]:
    """Non-fatal findings: ACME without a TLS listener on 443, and services shadowed by a route-less one."""
    warnings: list[str] = []
    if config.acme is not None and not tls_listener_on_443(config):
        warnings.append("tls.acme: no https/tcp+tls listener on port 443 (TLS-ALPN-01 needs 443 publicly)")
    for listener in config.listeners.values():
        if not listener.is_http:
            continue
        for index, name in enumerate(listener.services[:-1]):
            if config.services[name].route is None:
                shadowed = ", ".join(listener.services[index + 1 :])
                warnings.append(
                    f"listeners.{listener.name}: service {name} has no route and catches every request; "
                    f"unreachable: {shadowed}"
                )
                break
    return warnings


# --------------------------------------------------------------------------------------------------
# Request routing emulation (http_listener.rs serve_http_requests)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteDecision:
    """Outcome of one emulated request.

    ``outcome``: ``service`` (``service`` names the handler), ``blocked`` (403 "Permission Denied":
    empty/too long User-Agent, or a ``block`` rule), ``captcha`` (a ``captcha`` rule matched, no
    verified cookie), ``pingoo`` (``/__pingoo/captcha*`` served by Pingoo itself), ``not_found`` (404).
    """

    outcome: Literal["service", "blocked", "captcha", "pingoo", "not_found"]
    service: str | None = None
    reason: str = ""


def _header_value(value: str, max_length: int) -> str:
    """HeaderValue::to_str (visible ASCII + tab, else "") -> trim -> heapless::String<N> (too long -> "")."""
    if any(not (32 <= ord(char) <= 126 or char == "\t") for char in value):
        return ""
    value = value.strip()
    return "" if len(value.encode()) > max_length else value


def _uri_host(authority: str) -> str:
    """http::Uri::host(): the authority without port (IPv6 keeps its brackets)."""
    if authority.startswith("["):
        return authority[: authority.find("]") + 1] if "]" in authority else authority
    return authority.rsplit(":", 1)[0] if ":" in authority else authority


def evaluate_request(
    config: PingooConfig,
    listener: str,
    host: str,
    path: str = "/",
    method: str = "GET",
    user_agent: str = "curl/8",
    *,
    http2: bool = False,
    client_ip: str = "203.0.113.10",
) -> RouteDecision:
    """Emulate how Pingoo v0.14.7 handles one HTTP request on ``listener``.

    ``host`` is the HTTP/1.1 ``Host`` header verbatim (a ``:443`` suffix is kept, comparison is
    case-sensitive) or, with ``http2=True``, the ``:authority`` (Pingoo then uses ``uri.host()``,
    which drops the port). ``path`` is the request target; a query string is allowed and only
    appears in ``http_request.url``. Raises ``ValueError`` for an unknown or non-HTTP listener.
    """
    if listener not in config.listeners:
        raise ValueError(f"unknown listener {listener!r}")
    listener_config = config.listeners[listener]
    if not listener_config.is_http:
        raise ValueError(f"listener {listener!r} is {listener_config.protocol}: no HTTP routing")

    request_host = _header_value(_uri_host(host) if http2 else host, HOSTNAME_MAX_LENGTH)
    agent = _header_value(user_agent, USER_AGENT_MAX_LENGTH)
    if not agent or len(agent.encode()) >= USER_AGENT_MAX_LENGTH:
        return RouteDecision(
            "blocked", reason="empty or >= 256-byte User-Agent (checked before rules/routing)"
        )

    raw_path = path.split("?", 1)[0]
    request_path = raw_path.rstrip("/")  # get_path: trim_end_matches('/')
    if request_path.startswith(CAPTCHA_PATH_PREFIX):
        return RouteDecision("pingoo", reason="captcha endpoint served by Pingoo")
    scheme = "https" if listener_config.protocol == "https" else "http"
    url = f"{scheme}://{host}{path}" if http2 else path
    env: dict[str, dict[str, RuntimeValue]] = {
        "http_request": {
            "host": request_host,
            "url": url,
            "path": request_path,
            "method": method,
            "user_agent": agent,
        },
        "client": {
            "ip": ipaddress.ip_network(client_ip),
            "remote_port": 50000,
            "asn": 0,
            "country": "XX",  # GeoipRecord::default()
        },
    }
    for rule in config.rules:
        if rule.expression is None or rule.expression.evaluate(env):
            for action in rule.actions:
                if action == "block":
                    return RouteDecision("blocked", reason=f"rule {rule.name}")
                return RouteDecision("captcha", reason=f"rule {rule.name}")
    for name in listener_config.services:
        route = config.services[name].route
        if route is None or route.evaluate(env):
            return RouteDecision(
                "service", service=name, reason="no route" if route is None else "route matched"
            )
    return RouteDecision("not_found", reason="no service matched (404 Not Found.)")


def route_request(
    config: PingooConfig,
    listener: str,
    host: str,
    path: str = "/",
    method: str = "GET",
    user_agent: str = "curl/8",
) -> str | None:
    """Name of the service Pingoo would hand the request to, or ``None``.

    ``None`` covers every case where no service handles the request: 404 (no route matched), 403
    (empty or >= 256-byte User-Agent, checked before routing; or a ``block`` rule), a ``captcha``
    rule, and Pingoo's own ``/__pingoo/captcha`` endpoint. Use :func:`evaluate_request` to tell
    them apart.
    """
    return evaluate_request(config, listener, host, path, method, user_agent).service
