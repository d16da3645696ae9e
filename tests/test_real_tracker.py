"""The pinned tracker release, json_exporter and Prometheus, for real, with the files `make plan` renders.

- The real torrust-tracker v3.0.0 binary (crates.io, `cargo install torrust-tracker --version 3.0.0
  --locked`, cached under ${TORRUST_CACHE:-/var/cache/torrust-hybrid-tls}/tracker-3.0.0) starts with
  the rendered tracker.toml, the admin token from the same env variable the container gets; the API
  answers /api/v1/stats with the token and refuses without; the health check (also through the
  image's `http_health_check` binary) answers; an HTTP announce carrying X-Forwarded-For records the
  forwarded address (`on_reverse_proxy`).
- The real json_exporter (the pinned version, built from the Go module proxy by
  .ci/build-json-exporter) runs the rendered module config, and real Prometheus (Debian's package)
  runs a scrape config derived from the rendered prometheus.yml; after a scrape every metric the
  Grafana dashboards query exists in Prometheus' TSDB, with the value the tracker reports.

What is adapted, and why (every rewrite fails loudly when its target is missing):
- bind addresses -> 127.0.0.1:<free port> (UDP/HTTP trackers, API, health check; json_exporter and
  Prometheus listen addresses): the container ports are fixed and may be taken on a test machine;
  loopback only, as the test rules require;
- `core.database.path` -> a temporary folder: the container path does not exist here;
- prometheus.yml: the Docker DNS names `tracker` and `json-exporter` -> 127.0.0.1:<port>, and
  `scrape_interval` -> 1s so that a scrape happens within the test's bounded wait.
The token is the one the plan rendered into prometheus.yml (a placeholder), handed to the tracker
through TORRUST_TRACKER_CONFIG_OVERRIDE_HTTP_API__ACCESS_TOKENS__ADMIN, as in the container.
Prometheus here is Debian 12's 2.42, not the pinned image's 3.x; the scrape features used (params,
static labels, /probe) are the same in both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
import yaml

from core import layout
from core.settings import ImageSettings
from services.tracker.tracker import ADMIN_TOKEN_ENV
from tests.oracles.tracker_schema import check_tracker_toml
from tests.realtools import (
    LOOPBACK4,
    REPO_ROOT,
    Proc,
    RenderedPlan,
    dev_plan,  # noqa: F401  (session fixture: the plan is rendered once)
    free_port,
    http_request,
    missing,
    port_open,
    real_tools_required,
    require_tool,
    run,
    wait_until,
)
from tests.test_grafana_dashboards import SELECTOR_RE, all_exprs, load_dashboard

# The tracker dashboards (the endpoints dashboard reads probe and node metrics, not the tracker's).
from tests.test_grafana_dashboards import TRACKER_DASHBOARDS as DASHBOARDS

CACHE = Path(os.environ.get("TORRUST_CACHE", "/var/cache/torrust-hybrid-tls"))
TRACKER_VERSION = "3.0.0"
# The version the deployment pins (images.jsonExporter) is the one built and run here.
JSON_EXPORTER_VERSION = ImageSettings().json_exporter.rsplit(":", 1)[1]
JSON_EXPORTER_BUILD = REPO_ROOT / ".ci" / "build-json-exporter"
STATS_FIELDS = 16  # struct Stats, torrust-tracker v3.0.0 src/servers/apis/v1/context/stats/resources.rs


def tracker_bin_dir() -> Path:
    path = CACHE / f"tracker-{TRACKER_VERSION}" / "bin"
    if not (path / "torrust-tracker").is_file():
        missing(
            f"the real torrust-tracker {TRACKER_VERSION} binary is not in {path} (build it once: "
            f"cargo install torrust-tracker --version {TRACKER_VERSION} --locked --root {path.parent})"
        )
    return path


def json_exporter_bin() -> Path:
    path = CACHE / f"json-exporter-{JSON_EXPORTER_VERSION}" / "json_exporter"
    if not path.is_file() and real_tools_required() and shutil.which("go"):
        # `make check` builds it itself (idempotent helper, also run by .ci/run); `make test` skips.
        env = {**os.environ, "JSON_EXPORTER_VERSION": JSON_EXPORTER_VERSION}
        run([str(JSON_EXPORTER_BUILD)], timeout=900, env=env, check=True)
    if not path.is_file():
        missing(f"json_exporter {JSON_EXPORTER_VERSION} is not built in {path} (run {JSON_EXPORTER_BUILD})")
    return path


# --- adapting the rendered files (exact rewrites that fail when their target is missing) ----------


def replace_once(text: str, old: str, new: str, what: str) -> str:
    assert text.count(old) == 1, f"{what}: expected exactly one {old!r} in the rendered file"
    return text.replace(old, new)


@dataclass(frozen=True)
class TrackerPorts:
    udp: int
    http: int
    api: int
    health: int


def adapt_tracker_toml(text: str, ports: TrackerPorts, database: Path) -> str:
    config = tomllib.loads(text)
    assert len(config["udp_trackers"]) == 1 and len(config["http_trackers"]) == 1, "dev plan: one of each"
    udp = config["udp_trackers"][0]["bind_address"]
    http = config["http_trackers"][0]["bind_address"]
    for old, new in (
        (f'"{udp}"', f'"{LOOPBACK4}:{ports.udp}"'),
        (f'"{http}"', f'"{LOOPBACK4}:{ports.http}"'),
        (f'"{config["http_api"]["bind_address"]}"', f'"{LOOPBACK4}:{ports.api}"'),
        (f'"{config["health_check_api"]["bind_address"]}"', f'"{LOOPBACK4}:{ports.health}"'),
        (f'"{layout.TRACKER_DATABASE_PATH}"', json.dumps(str(database))),
    ):
        text = replace_once(text, old, new, "tracker.toml")
    return text


def plan_token(prometheus_yml: str) -> str:
    """The admin token the plan rendered into the probe's target URL."""
    target = yaml.safe_load(prometheus_yml)["scrape_configs"][0]["params"]["target"][0]
    tokens = parse_qs(urlsplit(target).query)["token"]
    assert len(tokens) == 1
    return str(tokens[0])


def adapt_prometheus_yml(text: str, api_port: int, exporter_port: int) -> str:
    text = replace_once(
        text,
        f"http://{layout.TRACKER}:{layout.TRACKER_API_PORT}/",
        f"http://{LOOPBACK4}:{api_port}/",
        "prometheus.yml target",
    )
    text = replace_once(
        text,
        f'"{layout.JSON_EXPORTER}:{layout.JSON_EXPORTER_PORT}"',
        f'"{LOOPBACK4}:{exporter_port}"',
        "prometheus.yml exporter",
    )
    return re.sub(r"(?m)^(\s*scrape_interval:).*$", r"\1 1s", text)


# --- the running tracker --------------------------------------------------------------------------


@dataclass
class Tracker:
    proc: Proc
    ports: TrackerPorts
    token: str
    bin_dir: Path

    def get(self, port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        response = http_request(LOOPBACK4, port, target, {"Host": f"{LOOPBACK4}:{port}", **(headers or {})})
        return response.status, response.body

    def api(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        query = f"?token={quote(token, safe='')}" if token is not None else ""
        return self.get(self.ports.api, f"/api/v1/{path}{query}")


def start_tracker(bin_dir: Path, config_text: str, token: str, work: Path) -> tuple[Proc, Path]:
    config = work / "tracker.toml"
    config.write_text(config_text)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # The container's environment contract (services/tracker/tracker.py tracker_env).
        "TORRUST_TRACKER_CONFIG_TOML_PATH": str(config),
        "TORRUST_TRACKER_CONFIG_OVERRIDE_CORE__DATABASE__DRIVER": "sqlite3",
        ADMIN_TOKEN_ENV: token,
    }
    return Proc("torrust-tracker", [str(bin_dir / "torrust-tracker")], work, env=env, cwd=work), config


def new_ports() -> TrackerPorts:
    return TrackerPorts(udp=free_port(udp=True), http=free_port(), api=free_port(), health=free_port())


@pytest.fixture(scope="module")
def tracker(dev_plan: RenderedPlan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracker]:  # noqa: F811
    bin_dir = tracker_bin_dir()
    work = tmp_path_factory.mktemp("tracker")
    (work / "database").mkdir()
    ports = new_ports()
    text = adapt_tracker_toml(dev_plan.tracker_toml.read_text(), ports, work / "database" / "sqlite3.db")
    token = plan_token(dev_plan.prometheus_yml.read_text())
    proc, _ = start_tracker(bin_dir, text, token, work)
    try:
        proc.wait_for_port(LOOPBACK4, ports.api, timeout=30)
        proc.wait_for_port(LOOPBACK4, ports.health, timeout=10)
        proc.wait_for_port(LOOPBACK4, ports.http, timeout=10)
        yield Tracker(proc, ports, token, bin_dir)
    finally:
        proc.stop(timeout=10)


def test_tracker_starts_with_the_rendered_config(tracker: Tracker) -> None:
    assert tracker.proc.running(), tracker.proc.log()


def test_stats_answer_with_the_token_and_refuse_without(tracker: Tracker) -> None:
    status, body = tracker.api("stats", tracker.token)
    assert status == 200, body
    stats: dict[str, int] = json.loads(body)
    assert len(stats) == STATS_FIELDS and all(isinstance(v, int) for v in stats.values()), stats
    for token in (None, "wrong-" + tracker.token):
        status, body = tracker.api("stats", token)
        assert status != 200, f"stats answered with token {token!r}"
        assert b"unauthorized" in body or b"token not valid" in body, body


def test_health_check_answers(tracker: Tracker) -> None:
    status, body = tracker.get(tracker.ports.health, "/health_check")
    assert status == 200 and json.loads(body)["status"] == "Ok", body
    # The image's HEALTHCHECK binary (Containerfile: /usr/bin/http_health_check <url>).
    url = f"http://{LOOPBACK4}:{tracker.ports.health}/health_check"
    result = run([str(tracker.bin_dir / "http_health_check"), url], timeout=15)
    assert result.returncode == 0, result.stdout + result.stderr
    down = run([str(tracker.bin_dir / "http_health_check"), f"http://{LOOPBACK4}:{free_port()}/"], timeout=15)
    assert down.returncode != 0, "the health check binary must fail when nothing answers"


INFO_HASH = bytes(range(1, 21))
FORWARDED_IP = "203.0.113.7"  # TEST-NET-3


def announce(tracker: Tracker, info_hash: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    query = urlencode(
        {
            "info_hash": info_hash,
            "peer_id": b"-qB4650-abcdefghijkl",
            "port": 6881,
            "uploaded": 0,
            "downloaded": 0,
            "left": 0,
            "event": "started",
            "compact": 1,
        }
    )
    return tracker.get(tracker.ports.http, f"/announce?{query}", headers)


def recorded_peers(tracker: Tracker, info_hash: bytes) -> list[str]:
    status, body = tracker.api(f"torrent/{info_hash.hex()}", tracker.token)
    assert status == 200, body
    return [peer["peer_addr"] for peer in json.loads(body)["peers"]]


def test_announce_records_the_forwarded_address(tracker: Tracker) -> None:
    # Pingoo appends the client's address; the tracker (on_reverse_proxy) takes the right-most.
    status, body = announce(tracker, INFO_HASH, {"X-Forwarded-For": f"198.51.100.1, {FORWARDED_IP}"})
    assert status == 200 and body.startswith(b"d") and b"failure reason" not in body, body
    assert recorded_peers(tracker, INFO_HASH) == [f"{FORWARDED_IP}:6881"]


# --- what the binary rejects, and what it silently ignores (the oracle's reason to exist) ---------


def run_until_listening_or_exit(bin_dir: Path, text: str, token: str, work: Path, api_port: int) -> Proc:
    proc, _ = start_tracker(bin_dir, text, token, work)

    def settled() -> bool:
        return not proc.running() or port_open(LOOPBACK4, api_port)

    try:
        wait_until(settled, 30, "the tracker to start or exit")
    except AssertionError:
        proc.stop()
        raise
    return proc


def mutated(dev_plan: RenderedPlan, work: Path, old: str, new: str) -> tuple[str, TrackerPorts]:  # noqa: F811
    (work / "database").mkdir(exist_ok=True)
    ports = new_ports()
    text = adapt_tracker_toml(dev_plan.tracker_toml.read_text(), ports, work / "database" / "sqlite3.db")
    fields = {"health": ports.health}
    return replace_once(text, old.format(**fields), new.format(**fields), "mutation"), ports


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('schema_version = "2.0.0"', 'schema_version = "3.0.0"'),  # develop's schema
        ('threshold = "info"', 'threshold = "verbose"'),
        ("listed = false\n", ""),
        ("interval = 300\n", 'interval = "300"\n'),
        ('"127.0.0.1:{health}"', '"127.0.0.1:65536"'),  # not a u16 port
    ],
    ids=["schema-3.0.0", "bad-enum", "mandatory-missing", "wrong-type", "bad-socket-address"],
)
def test_the_binary_refuses_a_broken_config(
    dev_plan: RenderedPlan,  # noqa: F811
    tmp_path: Path,
    old: str,
    new: str,
) -> None:
    bin_dir = tracker_bin_dir()
    text, ports = mutated(dev_plan, tmp_path, old, new)
    proc = run_until_listening_or_exit(bin_dir, text, "t" * 32, tmp_path, ports.api)
    try:
        assert not proc.running(), f"the tracker started with {new!r}:\n{proc.log()}"
        assert proc.popen.returncode != 0
        # Refused while loading the configuration (src/bootstrap/config.rs), not for another reason.
        assert "error loading configuration from sources" in proc.log(), proc.log()
    finally:
        proc.stop()


def test_the_binary_ignores_a_misspelled_key_so_the_oracle_must_catch_it(
    dev_plan: RenderedPlan,  # noqa: F811
    tmp_path: Path,
) -> None:
    """v3.0.0 has no deny_unknown_fields: `on_reverse_proxi` starts fine and the proxy setting is lost."""
    bin_dir = tracker_bin_dir()
    text, ports = mutated(dev_plan, tmp_path, "on_reverse_proxy = true", "on_reverse_proxi = true")
    proc = run_until_listening_or_exit(bin_dir, text, "t" * 32, tmp_path, ports.api)
    try:
        assert proc.running(), f"v3.0.0 now rejects unknown keys; the oracle may go:\n{proc.log()}"
        tracker = Tracker(proc, ports, "t" * 32, bin_dir)
        proc.wait_for_port(LOOPBACK4, ports.http)
        announce(tracker, INFO_HASH, {"X-Forwarded-For": FORWARDED_IP})
        assert f"{FORWARDED_IP}:6881" not in recorded_peers(tracker, INFO_HASH)
    finally:
        proc.stop(timeout=10)
    assert any("on_reverse_proxi: unknown key" in p for p in check_tracker_toml(text))


# --- json_exporter + Prometheus: every dashboard metric exists ------------------------------------


def dashboard_metrics() -> set[str]:
    names: set[str] = set()
    for name in DASHBOARDS:
        names.update(metric for metric, _ in SELECTOR_RE.findall(all_exprs(load_dashboard(name))))
    return names


@dataclass
class Prometheus:
    port: int

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = http_request(
            LOOPBACK4, self.port, "/api/v1/query?" + urlencode({"query": promql}), {"Host": "prometheus"}
        )
        assert response.status == 200, response.body
        data = json.loads(response.body)
        assert data["status"] == "success", data
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def value(self, promql: str) -> float:
        result = self.query(promql)
        assert len(result) == 1, (promql, result)
        return float(result[0]["value"][1])

    def missing_metrics(self, names: set[str]) -> set[str]:
        """Metric names without a series of job tracker_stats in the TSDB."""
        return {name for name in names if not self.query(f'{name}{{job="tracker_stats"}}')}


def start_exporter(config: Path, work: Path) -> tuple[Proc, int]:
    port = free_port()
    argv = [str(json_exporter_bin()), f"--config.file={config}", f"--web.listen-address={LOOPBACK4}:{port}"]
    proc = Proc("json_exporter", argv, work)
    proc.wait_for_port(LOOPBACK4, port, timeout=15)
    return proc, port


def start_prometheus(config_text: str, work: Path) -> tuple[Proc, int]:
    binary = require_tool("prometheus")
    config = work / "prometheus.yml"
    config.write_text(config_text)
    port = free_port()
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={work / 'tsdb'}",
        f"--web.listen-address={LOOPBACK4}:{port}",
    ]
    proc = Proc("prometheus", argv, work)
    proc.wait_for_port(LOOPBACK4, port, timeout=30)
    return proc, port


@pytest.fixture(scope="module")
def prometheus(
    tracker: Tracker,
    dev_plan: RenderedPlan,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Prometheus]:
    work = tmp_path_factory.mktemp("metrics")
    exporter_config = dev_plan.file(layout.JSON_EXPORTER, layout.JSON_EXPORTER_CONFIG_FILE)
    procs: list[Proc] = []
    try:
        exporter, exporter_port = start_exporter(exporter_config, work)
        procs.append(exporter)
        text = adapt_prometheus_yml(dev_plan.prometheus_yml.read_text(), tracker.ports.api, exporter_port)
        server, port = start_prometheus(text, work)
        procs.append(server)
        prom = Prometheus(port)

        def scraped() -> bool:
            result = prom.query('up{job="tracker_stats"}')
            return bool(result) and str(result[0]["value"][1]) == "1"

        try:
            wait_until(scraped, 60, "Prometheus to scrape the tracker through json_exporter", interval=0.5)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{exporter.log()}\n{server.log()}") from None
        yield prom
    finally:
        for proc in reversed(procs):
            proc.stop(timeout=10)


def test_every_dashboard_metric_is_in_prometheus(prometheus: Prometheus) -> None:
    names = dashboard_metrics()
    assert len(names) == STATS_FIELDS, sorted(names)
    assert prometheus.missing_metrics(names) == set()
    series = prometheus.query('{job="tracker_stats", __name__!~"up|scrape_.*"}')
    assert {s["metric"]["instance"] for s in series} == {f"{layout.TRACKER}:{layout.TRACKER_API_PORT}"}


def test_metric_values_follow_the_tracker(tracker: Tracker, prometheus: Prometheus) -> None:
    info_hash = bytes(range(101, 121))
    status, _ = announce(tracker, info_hash, {"X-Forwarded-For": FORWARDED_IP})
    assert status == 200
    _, body = tracker.api("stats", tracker.token)
    stats: dict[str, int] = json.loads(body)

    def caught_up() -> bool:
        return prometheus.value('torrents{job="tracker_stats"}') >= stats["torrents"]

    wait_until(caught_up, 15, "a scrape after the announce", interval=0.5)
    assert (
        prometheus.value('tcp4_announces_handled{job="tracker_stats"}')
        >= stats["tcp4_announces_handled"]
        >= 1
    )


def test_mutation_a_metric_the_dashboards_invent_is_reported(prometheus: Prometheus) -> None:
    # Names that only develop's /api/v1/metrics or ?format=prometheus serve.
    invented = {"udp_requests_banned", "swarm_coordination_registry_torrents_total"}
    assert prometheus.missing_metrics(dashboard_metrics() | invented) == invented


def test_mutation_a_wrong_exporter_path_loses_the_metric(
    tracker: Tracker,
    dev_plan: RenderedPlan,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = dev_plan.file(layout.JSON_EXPORTER, layout.JSON_EXPORTER_CONFIG_FILE).read_text()
    broken = tmp_path / "config.yml"
    broken.write_text(replace_once(config, "path: '{.seeders}'", "path: '{.seeder}'", "exporter config"))
    exporter, port = start_exporter(broken, tmp_path)
    try:
        target = f"http://{LOOPBACK4}:{tracker.ports.api}/api/v1/stats?token={quote(tracker.token, safe='')}"
        query = urlencode({"module": "tracker_stats", "target": target})
        response = http_request(LOOPBACK4, port, f"/probe?{query}", {"Host": "exporter"})
        text = response.body.decode()
        assert re.search(r"(?m)^leechers ", text), text
        assert not re.search(r"(?m)^seeders ", text), text
    finally:
        exporter.stop()


def test_json_exporter_build_pins_the_deployed_version() -> None:
    text = JSON_EXPORTER_BUILD.read_text()
    assert f'VERSION="${{JSON_EXPORTER_VERSION:-{JSON_EXPORTER_VERSION}}}"' in text
    assert subprocess.run(["bash", "-n", str(JSON_EXPORTER_BUILD)], check=False).returncode == 0
