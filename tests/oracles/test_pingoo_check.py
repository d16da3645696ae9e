"""Tests of the strict pingoo.yml checker and route emulator (Pingoo v0.14.7) in pingoo_check.py."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.oracles.pingoo_check import (
    PingooConfig,
    PingooConfigError,
    check_pingoo_config,
    compile_expression,
    config_warnings,
    evaluate_request,
    route_request,
    tls_listener_on_443,
)

EXAMPLE = """\
listeners:
  https:
    address: https://0.0.0.0:443
    services: ["tracker_api", "http_tracker_1", "grafana_redirect"]
tls:
  acme:
    directory_url: https://acme-staging-v02.api.letsencrypt.org/directory
    domains: ["api.example.com", "http1.example.com", "grafana.example.com"]
services:
  tracker_api:
    route: http_request.host == "api.example.com" || http_request.host == "api.example.com:443"
    http_proxy: ["http://172.30.1.2:1212"]
  http_tracker_1:
    route: http_request.host == "http1.example.com" || http_request.host == "http1.example.com:443"
    http_proxy: ["http://172.30.1.2:7070"]
  grafana_redirect:
    route: http_request.host == "grafana.example.com" || http_request.host == "grafana.example.com:443"
    http_proxy: ["http://172.30.1.3:8080"]
"""

BASE: dict[str, Any] = yaml.safe_load(EXAMPLE)


def variant(mutate: Callable[[dict[str, Any]], None]) -> str:
    """The example config, deep-copied, mutated and re-rendered as YAML."""
    data = copy.deepcopy(BASE)
    mutate(data)
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def example() -> PingooConfig:
    return check_pingoo_config(EXAMPLE)


# --------------------------------------------------------------------------------------------------
# The deployment's example config
# --------------------------------------------------------------------------------------------------


def test_example_passes(example: PingooConfig) -> None:
    listener = example.listeners["https"]
    assert (listener.protocol, listener.ip, listener.port) == ("https", "0.0.0.0", 443)
    assert listener.services == ("tracker_api", "http_tracker_1", "grafana_redirect")
    assert [s.kind for s in example.services.values()] == ["http_proxy"] * 3
    upstream = example.services["tracker_api"].upstreams[0]
    assert (upstream.scheme, upstream.host, upstream.port, upstream.tls, upstream.static_ip) == (
        "http",
        "172.30.1.2",
        1212,
        False,
        True,
    )
    assert example.acme is not None
    assert example.acme.directory_url == "https://acme-staging-v02.api.letsencrypt.org/directory"
    assert tls_listener_on_443(example)
    assert config_warnings(example) == []


# Host comparison is a plain bel string `==` on the raw Host header (http_listener.rs get_host only
# trims it), so it is case-sensitive and keeps any port: "API.example.com" and ":8443" do not match.
@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.example.com", "tracker_api"),
        ("api.example.com:443", "tracker_api"),
        ("http1.example.com", "http_tracker_1"),
        ("http1.example.com:443", "http_tracker_1"),
        ("grafana.example.com", "grafana_redirect"),
        ("grafana.example.com:443", "grafana_redirect"),
        ("  api.example.com  ", "tracker_api"),  # header value is trimmed
        ("unknown.example.com", None),
        ("api.example.com:8443", None),
        ("API.example.com", None),
        ("api.example.com.", None),
        ("", None),
        ("api.example.com" + "x" * 300, None),  # > 256 bytes: Pingoo sees an empty host
    ],
)
def test_example_routing_http1(example: PingooConfig, host: str, expected: str | None) -> None:
    assert route_request(example, "https", host) == expected


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("api.example.com", "tracker_api"),
        ("api.example.com:8443", "tracker_api"),  # HTTP/2: uri.host() drops the port
        ("API.example.com", None),
    ],
)
def test_example_routing_http2(example: PingooConfig, authority: str, expected: str | None) -> None:
    assert evaluate_request(example, "https", authority, http2=True).service == expected


def test_not_found_decision(example: PingooConfig) -> None:
    decision = evaluate_request(example, "https", "unknown.example.com")
    assert decision.outcome == "not_found"
    assert decision.service is None


# --------------------------------------------------------------------------------------------------
# Bad configs: each rejected with a message naming the key
# --------------------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def _rename(path: str, new_key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[new_key] = node.pop(last)

    return mutate


def _add_service(name: str, service: dict[str, Any], listed: bool = True) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["services"][name] = service
        if listed:
            data["listeners"]["https"]["services"].append(name)

    return mutate


def _add_listener(name: str, listener: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return _set(f"listeners.{name}", listener)


TRACKER_API = "services.tracker_api"

BAD_CONFIGS: list[tuple[str, str, str, str]] = [
    # (id, yaml text, expected key path at the start of the message, expected message fragment)
    ("top_level_typo", variant(_rename("services", "service")), "service:", "unknown key"),
    ("top_level_extra", variant(_set("logging", {"level": "info"})), "logging:", "unknown key"),
    (
        "listener_typo",
        variant(_rename("listeners.https.address", "adress")),
        "listeners.https.adress:",
        "unknown",
    ),
    (
        "service_typo",
        variant(_rename(f"{TRACKER_API}.http_proxy", "http_prxy")),
        f"{TRACKER_API}.http_prxy:",
        "",
    ),
    ("service_route_typo", variant(_rename(f"{TRACKER_API}.route", "routes")), f"{TRACKER_API}.routes:", ""),
    ("tls_typo", variant(_rename("tls.acme", "acmee")), "tls.acmee:", "unknown key"),
    (
        "acme_contact",
        variant(_set("tls.acme.contact", "admin@example.com")),
        "tls.acme.contact:",
        "unknown key",
    ),
    ("missing_listeners", variant(_delete("listeners")), "listeners:", "missing required key"),
    ("missing_services", variant(_delete("services")), "services:", "missing required key"),
    ("empty_listeners", variant(_set("listeners", {})), "listeners:", "no listener"),
    ("listener_missing_address", variant(_delete("listeners.https.address")), "listeners.https.address:", ""),
    (
        "localhost",
        variant(_set("listeners.https.address", "https://localhost:443")),
        "listeners.https.address:",
        "IP",
    ),
    (
        "ipv6",
        variant(_set("listeners.https.address", "https://[::]:443")),
        "listeners.https.address:",
        "IPv6",
    ),
    (
        "no_scheme",
        variant(_set("listeners.https.address", "0.0.0.0:443")),
        "listeners.https.address:",
        "scheme",
    ),
    (
        "bad_scheme",
        variant(_set("listeners.https.address", "udp://0.0.0.0:53")),
        "listeners.https.address:",
        "udp",
    ),
    (
        "listener_path",
        variant(_set("listeners.https.address", "https://0.0.0.0:443/x")),
        "listeners.https",
        "path",
    ),
    (
        "listener_port_range",
        variant(_set("listeners.https.address", "https://0.0.0.0:70000")),
        "listeners.https",
        "",
    ),
    (
        "tcp_listener_no_port",
        variant(_add_listener("raw", {"address": "tcp://0.0.0.0"})),
        "listeners.raw",
        "port",
    ),
    (
        "duplicate_port",
        variant(_add_listener("other", {"address": "http://127.0.0.1:443", "services": ["tracker_api"]})),
        "listeners.other.address:",
        "same port",
    ),
    (
        "duplicate_default_port",
        variant(_add_listener("plain", {"address": "https://0.0.0.0"})),  # https defaults to 443
        "listeners.plain.address:",
        "same port",
    ),
    (
        "missing_service",
        variant(_set("listeners.https.services", ["tracker_api", "tracker_apii"])),
        "listeners.https.services[1]:",
        "service tracker_apii doesn't exist",
    ),
    (
        "duplicate_listener_service",
        variant(_set("listeners.https.services", ["tracker_api", "tracker_api"])),
        "listeners.https.services[1]:",
        "duplicate services",
    ),
    (
        "listener_no_service",
        variant(_set("listeners.https.services", [])),
        "listeners.https.services:",
        "no service",
    ),
    (
        "listener_services_null",
        variant(_set("listeners.https.services", None)),
        "listeners.https.services:",
        "null",
    ),
    (
        "http_listener_tcp_service",
        variant(_add_service("raw", {"tcp_proxy": ["tcp://172.30.1.2:6969"]})),
        "listeners.https.services[3]:",
        "panics",
    ),
    (
        "tcp_listener_two_services",
        variant(
            lambda d: (
                d["services"].update(
                    {"t1": {"tcp_proxy": ["tcp://10.0.0.1:1"]}, "t2": {"tcp_proxy": ["tcp://10.0.0.1:2"]}}
                )
                or d["listeners"].update({"raw": {"address": "tcp://0.0.0.0:9000"}})
            )
        ),
        "listeners.raw.services:",
        "only have 1",
    ),
    (
        "two_kinds",
        variant(_set(f"{TRACKER_API}.static", {"root": "/var/www"})),
        f"{TRACKER_API}:",
        "exactly 1 http_proxy, tcp_proxy or static",
    ),
    ("no_kind", variant(_delete(f"{TRACKER_API}.http_proxy")), f"{TRACKER_API}:", "exactly 1 http_proxy"),
    (
        "upstream_path",
        variant(_set(f"{TRACKER_API}.http_proxy", ["http://172.30.1.2:1212/api"])),
        TRACKER_API,
        "path",
    ),
    (
        "upstream_query",
        variant(_set(f"{TRACKER_API}.http_proxy", ["http://tracker:1212?x=1"])),
        TRACKER_API,
        "query",
    ),
    (
        "upstream_scheme",
        variant(_set(f"{TRACKER_API}.http_proxy", ["ftp://172.30.1.2:21"])),
        f"{TRACKER_API}.http_proxy[0]:",
        "ftp is not a valid protocol",
    ),
    (
        "upstream_not_a_list",
        variant(_set(f"{TRACKER_API}.http_proxy", "http://172.30.1.2:1212")),
        f"{TRACKER_API}.http_proxy:",
        "list",
    ),
    (
        "upstream_no_host",
        variant(_set(f"{TRACKER_API}.http_proxy", ["http://:1212"])),
        f"{TRACKER_API}.http_proxy[0]:",
        "host is missing",
    ),
    (
        "upstream_bad_ipv4",
        variant(_set(f"{TRACKER_API}.http_proxy", ["http://172.30.1.256:1212"])),
        f"{TRACKER_API}.http_proxy[0]:",
        "invalid host",
    ),
    (
        "upstream_ipv6",
        variant(_set(f"{TRACKER_API}.http_proxy", ["http://[fd00::2]:1212"])),
        f"{TRACKER_API}.http_proxy[0]:",
        "IPv6",
    ),
    (
        "upstream_non_ascii",
        variant(_set(f"{TRACKER_API}.http_proxy", ["http://trackér:1212"])),
        f"{TRACKER_API}.http_proxy[0]:",
        "ascii",
    ),
    (
        "tcp_upstream_no_port",
        variant(_add_service("raw", {"tcp_proxy": ["tcp://172.30.1.2"]}, listed=False)),
        "services.raw.tcp_proxy[0]:",
        "port is missing",
    ),
    (
        "tcp_proxy_with_route",
        variant(
            _add_service("raw", {"route": "client.asn == 1", "tcp_proxy": ["tcp://1.2.3.4:1"]}, listed=False)
        ),
        "services.raw.route:",
        "TCP proxy can't have a route",
    ),
    (
        "uppercase_domain",
        variant(_set("tls.acme.domains", ["API.example.com"])),
        "tls.acme.domains[0]:",
        "invalid",
    ),
    (
        "wildcard_domain",
        variant(_set("tls.acme.domains", ["*.example.com"])),
        "tls.acme.domains[0]:",
        "wildcard",
    ),
    (
        "duplicate_domain",
        variant(_set("tls.acme.domains", ["api.example.com", "api.example.com"])),
        "tls.acme.domains[1]:",
        "duplicate domain",
    ),
    ("bad_dns_name", variant(_set("tls.acme.domains", ["api..example.com"])), "tls.acme.domains[0]:", "DNS"),
    ("single_label_domain", variant(_set("tls.acme.domains", ["localhost"])), "tls.acme.domains[0]:", "DNS"),
    ("domain_not_string", variant(_set("tls.acme.domains", [443])), "tls.acme.domains[0]:", "string"),
    ("domains_missing", variant(_delete("tls.acme.domains")), "tls.acme.domains:", "missing"),
    (
        "http_directory_url",
        variant(_set("tls.acme.directory_url", "http://acme.example.com/directory")),
        "tls.acme.directory_url:",
        "https",
    ),
    (
        "route_unknown_variable",
        variant(_set(f"{TRACKER_API}.route", 'host.starts_with("api")')),
        f"{TRACKER_API}.route:",
        "undeclared reference to 'host'",
    ),
    (
        "route_doc_erratum",
        variant(_set(f"{TRACKER_API}.route", 'http_request.starts_with("/api")')),
        f"{TRACKER_API}.route:",
        "http_request is a map",
    ),
    (
        "route_unknown_field",
        variant(_set(f"{TRACKER_API}.route", 'http_request.hostname == "api.example.com"')),
        f"{TRACKER_API}.route:",
        "no such key",
    ),
    (
        "route_unknown_function",
        variant(_set(f"{TRACKER_API}.route", 'http_request.host.lower() == "api.example.com"')),
        f"{TRACKER_API}.route:",
        "lower",
    ),
    (
        "route_syntax_error",
        variant(_set(f"{TRACKER_API}.route", 'http_request.host = "api.example.com"')),
        f"{TRACKER_API}.route:",
        "syntax error",
    ),
    (
        "route_unclosed_paren",
        variant(_set(f"{TRACKER_API}.route", '(http_request.host == "api.example.com"')),
        f"{TRACKER_API}.route:",
        "syntax error",
    ),
    (
        "route_unterminated_string",
        variant(_set(f"{TRACKER_API}.route", 'http_request.host == "api.example.com')),
        f"{TRACKER_API}.route:",
        "syntax error",
    ),
    (
        "route_ip_vs_string",
        variant(_set(f"{TRACKER_API}.route", 'client.ip == "10.0.0.1"')),
        f"{TRACKER_API}.route:",
        "mixes types",
    ),
    (
        "route_not_bool",
        variant(_set(f"{TRACKER_API}.route", "http_request.host")),
        f"{TRACKER_API}.route:",
        "bool",
    ),
    ("route_null", variant(_set(f"{TRACKER_API}.route", None)), f"{TRACKER_API}.route:", "null"),
    ("route_empty", variant(_set(f"{TRACKER_API}.route", "")), f"{TRACKER_API}.route:", "empty"),
    (
        "route_in_operator",
        variant(_set(f"{TRACKER_API}.route", '"a" in ["a"]')),
        f"{TRACKER_API}.route:",
        "in",
    ),
    (
        "rule_bad_action",
        variant(_set("rules", {"waf": {"expression": "true", "actions": [{"action": "allow"}]}})),
        "rules.waf.actions[0].action:",
        "unknown action",
    ),
    (
        "rule_typo",
        variant(_set("rules", {"waf": {"expresion": "true", "actions": [{"action": "block"}]}})),
        "rules.waf.expresion:",
        "unknown key",
    ),
    (
        "rule_action_parameters",
        variant(_set("rules", {"waf": {"actions": [{"action": "block", "parameters": {}}]}})),
        "rules.waf.actions[0].parameters:",
        "unknown key",
    ),
    (
        "rule_no_actions",
        variant(_set("rules", {"waf": {"expression": "true"}})),
        "rules.waf.actions:",
        "missing",
    ),
    (
        "static_typo",
        variant(_add_service("site", {"static": {"roots": "/var/www"}})),
        "services.site.static.roots:",
        "unknown key",
    ),
    (
        "static_bad_status",
        variant(_add_service("site", {"static": {"root": "/w", "not_found": {"status": 1000}}})),
        "services.site.static.not_found.status:",
        "status",
    ),
    (
        "discovery_without_docker",
        variant(_set("service_discovery", {"socket": "/var/run/docker.sock"})),
        "service_discovery.socket:",
        "unknown key",
    ),
    (
        "discovery_docker_typo",
        variant(_set("service_discovery", {"docker": {"sock": "/run/docker.sock"}})),
        "service_discovery.docker.sock:",
        "unknown key",
    ),
    (
        "list_type_lowercase",
        variant(_set("lists", {"blocked": {"type": "ip", "file": "/etc/pingoo/lists/b.csv"}})),
        "lists.blocked.type:",
        "case-sensitive",
    ),
    (
        "child_process_empty",
        variant(_set("child_process", {"command": []})),
        "child_process.command:",
        "empty",
    ),
    (
        "duplicate_yaml_key",
        EXAMPLE + "  tracker_api:\n    http_proxy: []\n",
        "line",
        "duplicate key 'tracker_api'",
    ),
    (
        "yaml_merge_key",
        EXAMPLE + "  extra:\n    <<: {http_proxy: []}\n",
        "line",
        "merge key",
    ),
    ("not_a_mapping", "- listeners\n", "<document>:", "mapping"),
    ("empty_document", "", "<document>:", "empty"),
    ("invalid_yaml", "listeners: [\n", "<document>:", "invalid YAML"),
]


@pytest.mark.parametrize(
    ("text", "path", "fragment"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_rejected(text: str, path: str, fragment: str) -> None:
    with pytest.raises(PingooConfigError) as info:
        check_pingoo_config(text)
    message = str(info.value)
    assert message.startswith(path), message
    assert fragment in message, message


def test_enough_bad_configs() -> None:
    assert len(BAD_CONFIGS) >= 20
    assert len({c[0] for c in BAD_CONFIGS}) == len(BAD_CONFIGS)


def test_error_is_value_error() -> None:
    assert issubclass(PingooConfigError, ValueError)
    with pytest.raises(ValueError, match=r"^services\.tracker_api\.http_prxy: unknown key"):
        check_pingoo_config(variant(_rename(f"{TRACKER_API}.http_proxy", "http_prxy")))


# --------------------------------------------------------------------------------------------------
# Good configs beyond the example
# --------------------------------------------------------------------------------------------------

PINGOO_DEFAULT_FILE = """\
listeners:
  http:
    address: http://0.0.0.0
services:
  s:
    static:
      root: /var/www
rules:
  basic_waf:
    expression: http_request.path.starts_with("/.env") || http_request.path.starts_with("/.git")
    actions:
      - action: block
"""

TORRUST_EXPERIMENT_2 = """\
listeners:
  https:
    address: https://0.0.0.0:443
tls:
  acme:
    domains: ["api.torrust-tracker.com"]
services:
  tracker-api:
    http_proxy: ["http://tracker:1212"]
"""

TCP_AND_DISCOVERY = """\
listeners:
  raw:
    address: tcp+tls://0.0.0.0:6969
  web:
    address: http://0.0.0.0:8080
services:
  udp_like:
    tcp_proxy: ["tcp://10.0.0.2:6969"]
  api:
    route: Ip("10.0.0.0/8").contains(client.ip) && http_request.method != "DELETE"
    http_proxy: []
service_discovery:
  docker: {}
lists:
  blocked:
    type: Ip
    file: /etc/pingoo/lists/blocked.csv
child_process:
  command: ["node", "server.js"]
"""

UPSTREAM_VARIANTS = """\
listeners:
  h:
    address: http://127.0.0.1:80
services:
  a:
    http_proxy: ["http://localhost:3000", "https://api.example.net", "http://tracker_1.internal:80/"]
"""

GOOD_CONFIGS: list[tuple[str, str]] = [
    ("pingoo_default_file", PINGOO_DEFAULT_FILE),
    ("torrust_experiment_2", TORRUST_EXPERIMENT_2),
    ("tcp_and_discovery", TCP_AND_DISCOVERY),
    ("upstream_variants", UPSTREAM_VARIANTS),
]


@pytest.mark.parametrize("text", [c[1] for c in GOOD_CONFIGS], ids=[c[0] for c in GOOD_CONFIGS])
def test_good_config_accepted(text: str) -> None:
    check_pingoo_config(text)


def test_default_services_and_upstream_defaults() -> None:
    config = check_pingoo_config(TCP_AND_DISCOVERY)
    assert config.listeners["raw"].services == ("udp_like",)  # tcp listener: tcp_proxy services only
    assert config.listeners["web"].services == ("api",)  # http listener: http_proxy + static only
    assert not config.listeners["web"].services_explicit
    assert config.docker_socket == "/var/run/docker.sock"
    upstreams = check_pingoo_config(UPSTREAM_VARIANTS).services["a"].upstreams
    assert [(u.host, u.port, u.tls, u.static_ip) for u in upstreams] == [
        ("localhost", 3000, False, True),
        ("api.example.net", 443, True, False),
        ("tracker_1.internal", 80, False, False),
    ]


def test_acme_defaults_and_normalisation() -> None:
    config = check_pingoo_config(
        variant(_set("tls.acme", {"directory_url": " https://acme.example.com/dir/ ", "domains": []}))
    )
    assert config.acme is not None
    assert config.acme.directory_url == "https://acme.example.com/dir"
    default = check_pingoo_config(TORRUST_EXPERIMENT_2)
    assert default.acme is not None
    assert default.acme.directory_url == "https://acme-v02.api.letsencrypt.org/directory"


def test_acme_without_tls_listener_on_443_is_a_warning() -> None:
    config = check_pingoo_config(variant(_set("listeners.https.address", "https://0.0.0.0:8443")))
    assert not tls_listener_on_443(config)
    assert any("443" in warning for warning in config_warnings(config))


# --------------------------------------------------------------------------------------------------
# Routing semantics
# --------------------------------------------------------------------------------------------------

CATCH_ALL = {"http_proxy": ["http://172.30.1.9:80"]}


def test_routeless_service_listed_first_shadows_everything() -> None:
    config = check_pingoo_config(
        variant(
            lambda d: (
                d["services"].update({"catch_all": CATCH_ALL})
                or d["listeners"]["https"]["services"].insert(0, "catch_all")
            )
        )
    )
    for host in ("api.example.com", "http1.example.com", "unknown.example.com"):
        assert route_request(config, "https", host) == "catch_all"
    (warning,) = config_warnings(config)
    assert "catch_all has no route" in warning
    assert "tracker_api" in warning


def test_routeless_service_listed_last_is_a_fallback() -> None:
    config = check_pingoo_config(variant(_add_service("catch_all", CATCH_ALL)))
    assert route_request(config, "https", "api.example.com") == "tracker_api"
    assert route_request(config, "https", "unknown.example.com") == "catch_all"
    assert config_warnings(config) == []


def test_default_service_order_is_file_order() -> None:
    def mutate(data: dict[str, Any]) -> None:
        del data["listeners"]["https"]["services"]
        data["services"] = {"catch_all": CATCH_ALL, **data["services"]}

    config = check_pingoo_config(variant(mutate))
    assert config.listeners["https"].services[0] == "catch_all"
    assert route_request(config, "https", "api.example.com") == "catch_all"


@pytest.mark.parametrize(
    ("user_agent", "blocked"),
    [
        ("curl/8", False),
        ("qBittorrent/4.6.0", False),
        ("", True),
        ("   ", True),  # trimmed to empty
        ("a" * 255, False),
        ("a" * 256, True),  # USER_AGENT_MAX_LENGTH = 256, `len >= 256` is blocked
        ("a" * 1000, True),
        ("Transmission/4.0 \u00e9", True),  # not visible ASCII: HeaderValue::to_str fails -> ""
    ],
)
def test_user_agent_blocking(example: PingooConfig, user_agent: str, blocked: bool) -> None:
    decision = evaluate_request(example, "https", "api.example.com", user_agent=user_agent)
    assert (decision.outcome == "blocked") is blocked
    assert route_request(example, "https", "api.example.com", user_agent=user_agent) == (
        None if blocked else "tracker_api"
    )


PATH_CONFIG = """\
listeners:
  web:
    address: http://0.0.0.0:8080
rules:
  no_dotfiles:
    expression: http_request.path.starts_with("/.env") || http_request.path.starts_with("/.git")
    actions: [{action: block}]
  bots:
    expression: http_request.user_agent.contains("BadBot")
    actions: [{action: captcha}]
services:
  announce:
    route: >-
      (http_request.path == "/announce" || http_request.path == "/scrape")
      && http_request.method == "GET"
    http_proxy: ["http://172.30.1.2:7070"]
  api:
    route: http_request.path.starts_with("/api/") && !http_request.url.contains("token=")
    http_proxy: ["http://172.30.1.2:1212"]
  internal:
    route: Ip("10.0.0.0/8").contains(client.ip) || ["admin.example.com"].contains(http_request.host)
    http_proxy: ["http://172.30.1.2:9090"]
  root:
    route: http_request.path == ""
    static: {root: /var/www}
"""


@pytest.mark.parametrize(
    ("path", "method", "user_agent", "client_ip", "host", "outcome", "service"),
    [
        ("/announce", "GET", "curl/8", "203.0.113.1", "t.example.com", "service", "announce"),
        (
            "/announce/",
            "GET",
            "curl/8",
            "203.0.113.1",
            "t.example.com",
            "service",
            "announce",
        ),  # trailing / trimmed
        ("/announce?info_hash=x", "GET", "curl/8", "203.0.113.1", "t.example.com", "service", "announce"),
        ("/scrape", "GET", "curl/8", "203.0.113.1", "t.example.com", "service", "announce"),
        ("/announce", "POST", "curl/8", "203.0.113.1", "t.example.com", "not_found", None),
        ("/api/v1/stats", "GET", "curl/8", "203.0.113.1", "t.example.com", "service", "api"),
        ("/api/v1/stats?token=s", "GET", "curl/8", "203.0.113.1", "t.example.com", "not_found", None),
        ("/metrics", "GET", "curl/8", "10.1.2.3", "t.example.com", "service", "internal"),
        ("/metrics", "GET", "curl/8", "203.0.113.1", "admin.example.com", "service", "internal"),
        ("/metrics", "GET", "curl/8", "203.0.113.1", "t.example.com", "not_found", None),
        ("/", "GET", "curl/8", "203.0.113.1", "t.example.com", "service", "root"),  # "/" becomes ""
        ("/.env", "GET", "curl/8", "203.0.113.1", "t.example.com", "blocked", None),
        ("/.git/config", "GET", "curl/8", "203.0.113.1", "t.example.com", "blocked", None),
        ("/announce", "GET", "BadBot/1.0", "203.0.113.1", "t.example.com", "captcha", None),
        ("/__pingoo/captcha/verify", "GET", "curl/8", "203.0.113.1", "t.example.com", "pingoo", None),
    ],
)
def test_path_method_rules_and_client_ip(
    path: str, method: str, user_agent: str, client_ip: str, host: str, outcome: str, service: str | None
) -> None:
    config = check_pingoo_config(PATH_CONFIG)
    decision = evaluate_request(config, "web", host, path, method, user_agent, client_ip=client_ip)
    assert (decision.outcome, decision.service) == (outcome, service)


def test_route_request_rejects_unknown_and_tcp_listeners(example: PingooConfig) -> None:
    with pytest.raises(ValueError, match="unknown listener"):
        route_request(example, "http", "api.example.com")
    config = check_pingoo_config(TCP_AND_DISCOVERY)
    with pytest.raises(ValueError, match="no HTTP routing"):
        route_request(config, "raw", "api.example.com")


# --------------------------------------------------------------------------------------------------
# Expression subset
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        'http_request.host == "a"',
        "http_request.host == 'a'",
        'r"a\\b" != http_request.path',
        '"a\\"b\\u00e9" != http_request.path',
        '!(http_request.host == "a") && !!true',
        'http_request.host.ends_with(".example.com") // comment',
        'client.country == "XX" && client.asn == 0 && client.remote_port > 1024',
        'client.ip == Ip("192.0.2.1")',
        '["GET", "HEAD",].contains(http_request.method)',
        'http_request.user_agent.starts_with("Mozilla/")\n  || http_request.user_agent.contains("curl/")',
    ],
)
def test_expression_subset_accepted(source: str) -> None:
    compile_expression(source)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("", "empty"),
        ('lists["x"].contains(client.ip)', "lists"),
        ('http_request.host.matches("^a")', "outside the checked subset"),
        ("size(http_request.host) > 3", "undeclared reference to function 'size'"),
        ("http_request.host == 1", "mixes types"),
        ('http_request.host == "a" ? true : false', "conditional"),
        ("client.asn + 1 == 2", "arithmetic"),
        ('!http_request.host == "a"', "bool operands"),  # `!` binds to the member, like CEL.g4
        ('http_request.host == "\\q"', "invalid escape"),
        ('Ip("not-an-ip").contains(client.ip)', "Ip()"),
        ('http_request.host.starts_with("a", "b")', "exactly 1 argument"),
        ("http_request.path.starts_with(1)", "string argument"),
        ('http_request.host == "a" http_request.host', "syntax error"),
        ('http_request.host == "a" #', "syntax error"),
    ],
)
def test_expression_outside_subset_rejected(source: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        compile_expression(source)
    assert fragment in str(info.value)
