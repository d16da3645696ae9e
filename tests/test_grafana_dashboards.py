"""Static checks for our Grafana dashboards and the dashboard provider.

The dashboards are provisioned from files, so Grafana only reports problems in its logs at
runtime. These tests catch the usual mistakes early: a v2-schema export (rejected by file
provisioning in Grafana 13), a wrong datasource uid, duplicate panel ids, panels wider than
the grid, queries without a job selector and metric names that the tracker does not export.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.edge import edge_facts

REPO_ROOT = Path(__file__).resolve().parents[1]
MONITORING_TEMPLATES = REPO_ROOT / "services" / "monitoring" / "templates"
DASHBOARDS_DIR = MONITORING_TEMPLATES / "grafana" / "dashboards"
PROVIDER_FILE = MONITORING_TEMPLATES / "grafana" / "provisioning" / "dashboards" / "torrust.yaml"

# Folder the deployment uploads the dashboard JSON files to on the Grafana container.
GRAFANA_DASHBOARDS_PATH = "/etc/grafana/dashboards/torrust"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
GRID_WIDTH = 24

EXPECTED: dict[str, tuple[str, str]] = {
    "tracker-overview.json": ("torrust-tracker-overview", "Torrust Tracker - Overview"),
    "tracker-protocols.json": ("torrust-tracker-protocols", "Torrust Tracker - Protocols"),
    "endpoints.json": ("torrust-endpoints", "Torrust - Endpoints and certificates"),
}
TRACKER_DASHBOARDS = ("tracker-overview.json", "tracker-protocols.json")

# Keys of the Grafana 12/13 v2 dashboard schema (and of exported "for sharing" dashboards).
FORBIDDEN_TOP_LEVEL_KEYS = frozenset(
    {"elements", "layout", "apiVersion", "kind", "spec", "__inputs", "__requires"}
)

# Metric names per Prometheus job (see prometheus.yml): the one job, tracker_stats, is json_exporter
# turning the tracker v3.0.0 JSON /api/v1/stats into metrics, one per field of its module config.
# tests/test_real_tracker.py proves with the real tracker, json_exporter and Prometheus that exactly
# these series exist after a scrape.
JSON_EXPORTER_CONFIG = MONITORING_TEMPLATES / "json-exporter" / "config.yml"


def exporter_metric_names() -> frozenset[str]:
    modules = yaml.safe_load(JSON_EXPORTER_CONFIG.read_text(encoding="utf-8"))["modules"]
    return frozenset(metric["name"] for module in modules.values() for metric in module["metrics"])


METRICS_BY_JOB: dict[str, frozenset[str]] = {"tracker_stats": exporter_metric_names()}
# Blackbox probes (prometheus/blackbox_exporter v0.28.0 prober/handler.go, prober/prober.go) per probe job
# of services/monitoring/alerts.py, and the node exporter (node_exporter v1.12.1
# collector/filesystem_common.go)
# with the backup job's textfile metric (services.monitoring.alerts.BACKUP_METRIC).
_PROBE_METRICS = frozenset({"probe_success", "probe_duration_seconds", "probe_ssl_earliest_cert_expiry"})
METRICS_BY_JOB.update(
    {
        job: _PROBE_METRICS
        for job in (
            "blackbox_tls",
            "blackbox_http",
            "blackbox_http_redirects",
            "blackbox_http_port80",
            "blackbox_tracker_health",
        )
    }
)
METRICS_BY_JOB["node"] = frozenset(
    {
        "node_filesystem_avail_bytes",
        "node_filesystem_size_bytes",
        "torrust_backup_last_success_timestamp_seconds",
    }
)
ALL_METRICS = frozenset().union(*METRICS_BY_JOB.values())

# A vector selector with a label matcher block: metric{...}.
SELECTOR_RE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
JOB_RE = re.compile(r'\bjob\s*=\s*"([^"]*)"')
IDENT_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

Dashboard = dict[str, Any]
Panel = dict[str, Any]


def load_dashboard(name: str) -> Dashboard:
    data = json.loads((DASHBOARDS_DIR / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{name}: top level must be a JSON object"
    return data


def iter_panels(panels: list[Panel]) -> Iterator[Panel]:
    """Yield every panel, including the ones nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def expr_problems(expr: str) -> list[str]:
    """Return what is wrong with a PromQL expression (empty list when it is fine)."""
    problems: list[str] = []
    selectors = SELECTOR_RE.findall(expr)
    if not selectors:
        problems.append(f"no metric{{...}} selector in {expr!r}")
    for metric, matchers in selectors:
        jobs = JOB_RE.findall(matchers)
        if len(jobs) != 1 or jobs[0] not in METRICS_BY_JOB:
            problems.append(f'{metric}: selector needs job="tracker_stats" (or a probe/node job)')
        elif metric not in METRICS_BY_JOB[jobs[0]]:
            problems.append(f"{metric}: not exported by job {jobs[0]!r}")
    # A known metric used without a selector would silently match both jobs (or none).
    for match in IDENT_RE.finditer(expr):
        if match.group(0) in ALL_METRICS and not expr[match.end() :].lstrip().startswith("{"):
            problems.append(f"{match.group(0)}: used without a {{job=...}} selector")
    return problems


def dashboard_problems(dashboard: Dashboard) -> list[str]:
    """Validate a classic (schemaVersion) dashboard; return a list of problems."""
    problems: list[str] = []
    forbidden = FORBIDDEN_TOP_LEVEL_KEYS & dashboard.keys()
    if forbidden:
        problems.append(f"v2/export keys present: {sorted(forbidden)}")
    schema_version = dashboard.get("schemaVersion")
    if not isinstance(schema_version, int) or isinstance(schema_version, bool) or schema_version < 36:
        problems.append(f"schemaVersion must be an int >= 36, got {schema_version!r}")
    if dashboard.get("id") is not None:
        problems.append("id must be null for provisioned dashboards")
    panels = dashboard.get("panels")
    if not isinstance(panels, list) or not panels:
        return [*problems, "panels must be a non-empty list"]

    seen_ids: set[int] = set()
    for panel in iter_panels(panels):
        label = f"panel {panel.get('id')!r} {panel.get('title')!r}"
        panel_id = panel.get("id")
        if not isinstance(panel_id, int):
            problems.append(f"{label}: id must be an int")
        elif panel_id in seen_ids:
            problems.append(f"{label}: duplicate panel id")
        else:
            seen_ids.add(panel_id)
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"{label}: datasource must be {DATASOURCE}, got {panel.get('datasource')!r}")
        grid = panel.get("gridPos", {})
        x, w, h = grid.get("x"), grid.get("w"), grid.get("h")
        if not all(isinstance(v, int) for v in (x, w, h, grid.get("y"))):
            problems.append(f"{label}: gridPos needs integer x, y, w, h")
        elif x < 0 or w <= 0 or h <= 0 or x + w > GRID_WIDTH:
            problems.append(f"{label}: gridPos {grid} does not fit the {GRID_WIDTH}-column grid")
        if panel.get("type") == "row":
            continue
        if not panel.get("description"):
            problems.append(f"{label}: missing description")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{label}: missing fieldConfig.defaults.unit")
        targets = panel.get("targets")
        if not isinstance(targets, list) or not targets:
            problems.append(f"{label}: no targets")
            continue
        ref_ids: set[str] = set()
        for target in targets:
            ref_id = target.get("refId")
            if not isinstance(ref_id, str) or not ref_id:
                problems.append(f"{label}: target without refId")
            elif ref_id in ref_ids:
                problems.append(f"{label}: duplicate refId {ref_id!r}")
            else:
                ref_ids.add(ref_id)
            if target.get("datasource") != DATASOURCE:
                problems.append(f"{label} target {ref_id!r}: datasource must be {DATASOURCE}")
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{label} target {ref_id!r}: empty expr")
            else:
                problems.extend(f"{label} target {ref_id!r}: {p}" for p in expr_problems(expr))
    return problems


def overlapping_panels(dashboard: Dashboard) -> list[tuple[int, int]]:
    """Pairs of top-level panel ids whose grid rectangles overlap."""
    boxes = [(p["id"], p["gridPos"]) for p in dashboard["panels"]]
    pairs: list[tuple[int, int]] = []
    for i, (id_a, a) in enumerate(boxes):
        for id_b, b in boxes[i + 1 :]:
            if (
                a["x"] < b["x"] + b["w"]
                and b["x"] < a["x"] + a["w"]
                and a["y"] < b["y"] + b["h"]
                and b["y"] < a["y"] + a["h"]
            ):
                pairs.append((id_a, id_b))
    return pairs


def all_exprs(dashboard: Dashboard) -> str:
    """Every target expression of a dashboard, joined with spaces."""
    return " ".join(t["expr"] for p in iter_panels(dashboard["panels"]) for t in p.get("targets", []))


def first_target_panel(dashboard: Dashboard) -> Panel:
    return next(p for p in iter_panels(dashboard["panels"]) if p.get("targets"))


@pytest.fixture(params=sorted(EXPECTED))
def dashboard_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def dashboard(dashboard_name: str) -> Dashboard:
    return load_dashboard(dashboard_name)


# --- the committed files -------------------------------------------------------------------------


def test_dashboard_directory_holds_exactly_our_json_files() -> None:
    files = sorted(p.name for p in DASHBOARDS_DIR.iterdir() if p.is_file())
    assert files == sorted(EXPECTED)
    assert all(name.endswith(".json") for name in files)


def test_dashboard_is_valid_json(dashboard_name: str) -> None:
    json.loads((DASHBOARDS_DIR / dashboard_name).read_text(encoding="utf-8"))


def test_dashboard_passes_validation(dashboard: Dashboard) -> None:
    assert dashboard_problems(dashboard) == []


def test_dashboard_identity(dashboard_name: str, dashboard: Dashboard) -> None:
    uid, title = EXPECTED[dashboard_name]
    assert dashboard["uid"] == uid
    assert dashboard["title"] == title
    assert dashboard["tags"] == ["torrust"]
    assert dashboard["schemaVersion"] == 39
    assert dashboard["refresh"] == "30s"
    assert set(dashboard["time"]) == {"from", "to"}


def test_dashboard_is_classic_schema(dashboard: Dashboard) -> None:
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    assert isinstance(dashboard["panels"], list)
    assert not FORBIDDEN_TOP_LEVEL_KEYS & dashboard.keys()
    assert dashboard["id"] is None


def test_dashboard_panels_do_not_overlap(dashboard: Dashboard) -> None:
    assert overlapping_panels(dashboard) == []


@pytest.mark.parametrize("name", TRACKER_DASHBOARDS)
def test_dashboards_use_only_the_tracker_stats_job(name: str) -> None:
    jobs = set(JOB_RE.findall(all_exprs(load_dashboard(name))))
    assert jobs == {"tracker_stats"}


def test_exporter_maps_every_field_of_the_v3_stats_resource() -> None:
    # torrust/torrust-tracker v3.0.0 src/servers/apis/v1/context/stats/resources.rs, struct Stats.
    fields = {"torrents", "seeders", "completed", "leechers"} | {
        f"{proto}{family}_{kind}_handled"
        for proto in ("tcp", "udp")
        for family in ("4", "6")
        for kind in ("connections", "announces", "scrapes")
    }
    assert exporter_metric_names() == fields
    modules = yaml.safe_load(JSON_EXPORTER_CONFIG.read_text(encoding="utf-8"))["modules"]
    for metric in modules["tracker_stats"]["metrics"]:
        assert metric["path"] == "{." + metric["name"] + "}"
        assert metric["valuetype"] == ("counter" if metric["name"].endswith("_handled") else "gauge")


def test_dashboard_uids_are_unique() -> None:
    uids = [load_dashboard(name)["uid"] for name in EXPECTED]
    assert len(uids) == len(set(uids))


def test_template_variables_used_in_queries_are_defined(dashboard: Dashboard) -> None:
    defined = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    used: set[str] = set()
    for panel in iter_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            used.update(re.findall(r"\$([a-zA-Z_][a-zA-Z0-9_]*)", target["expr"]))
    builtin = {name for name in used if name.startswith("__")}
    assert used - builtin <= defined


def test_overview_covers_swarm_and_request_rates() -> None:
    overview = load_dashboard("tracker-overview.json")
    exprs = all_exprs(overview)
    for metric in (
        "torrents",
        "seeders",
        "leechers",
        "completed",
        "udp4_announces_handled",
        "tcp6_scrapes_handled",
    ):
        assert re.search(rf"\b{metric}\{{", exprs), metric
    types = {(p["type"], p["title"]) for p in iter_panels(overview["panels"])}
    assert ("stat", "Completed downloads") in types
    assert ("timeseries", "Completed downloads") in types


def test_dashboards_together_use_every_exported_metric() -> None:
    exprs = " ".join(all_exprs(load_dashboard(name)) for name in EXPECTED)
    unused = {m for m in exporter_metric_names() if not re.search(rf"\b{m}\{{", exprs)}
    assert unused == set()


def test_protocols_covers_udp_http_ipv4_ipv6() -> None:
    exprs = all_exprs(load_dashboard("tracker-protocols.json"))
    for proto in ("udp", "tcp"):
        for family in ("4", "6"):
            for kind in ("announces", "scrapes", "connections"):
                assert re.search(rf"\b{proto}{family}_{kind}_handled\{{", exprs), (proto, family, kind)


def test_endpoints_dashboard_shows_days_left_and_every_probe_job() -> None:
    from core.settings import load_settings
    from services.monitoring import alerts
    from tests.conftest import dev_config

    dashboard = load_dashboard("endpoints.json")
    panels = {p["title"]: p for p in iter_panels(dashboard["panels"])}
    days = panels["Days left per certificate"]
    assert (
        days["targets"][0]["expr"] == '(probe_ssl_earliest_cert_expiry{job="blackbox_tls"} - time()) / 86400'
    )
    assert days["fieldConfig"]["defaults"]["unit"] == "d"
    # The colours follow the default alert thresholds (warning 14, critical 7 days).
    thresholds = load_settings("dev", dev_config().get).alerts.thresholds
    steps = [step["value"] for step in days["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, thresholds.cert_critical_days, thresholds.cert_warning_days]
    status = panels["Endpoint status"]
    shown = {
        JOB_RE.findall(t["expr"])[0] for t in status["targets"] if t["expr"].startswith("probe_success{")
    }
    assert shown == {
        job.name
        for job in alerts.probe_jobs(
            load_settings("dev", dev_config().get), edge_facts(load_settings("dev", dev_config().get))
        )
    }


# --- the validator itself: it must reject broken dashboards --------------------------------------


def test_validator_rejects_wrong_panel_datasource_uid(dashboard: Dashboard) -> None:
    broken = copy.deepcopy(dashboard)
    first_target_panel(broken)["datasource"] = {"type": "prometheus", "uid": "ce6lwx047kutca"}
    assert any("datasource must be" in p for p in dashboard_problems(broken))


def test_validator_rejects_wrong_target_datasource_uid(dashboard: Dashboard) -> None:
    broken = copy.deepcopy(dashboard)
    first_target_panel(broken)["targets"][0]["datasource"] = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    assert any("datasource must be" in p for p in dashboard_problems(broken))


def test_validator_rejects_duplicate_panel_id(dashboard: Dashboard) -> None:
    broken = copy.deepcopy(dashboard)
    broken["panels"][1]["id"] = broken["panels"][0]["id"]
    assert any("duplicate panel id" in p for p in dashboard_problems(broken))


def test_validator_sees_panels_nested_in_collapsed_rows(dashboard: Dashboard) -> None:
    broken = copy.deepcopy(dashboard)
    nested = copy.deepcopy(first_target_panel(broken))
    nested["id"] = 10_000
    nested["datasource"] = {"type": "prometheus", "uid": "other"}
    broken["panels"].append(
        {
            "id": 10_001,
            "type": "row",
            "title": "collapsed",
            "collapsed": True,
            "datasource": DATASOURCE,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": 1000},
            "panels": [nested],
        }
    )
    assert any("panel 10000" in p and "datasource" in p for p in dashboard_problems(broken))


def test_validator_rejects_duplicate_ref_id(dashboard: Dashboard) -> None:
    broken = copy.deepcopy(dashboard)
    panel = first_target_panel(broken)
    panel["targets"].append(copy.deepcopy(panel["targets"][0]))
    assert any("duplicate refId" in p for p in dashboard_problems(broken))


def test_validator_rejects_too_wide_panel(dashboard: Dashboard) -> None:
    broken = copy.deepcopy(dashboard)
    broken["panels"][-1]["gridPos"]["x"] = 20
    broken["panels"][-1]["gridPos"]["w"] = 12
    assert any("does not fit" in p for p in dashboard_problems(broken))


def test_validator_rejects_empty_expr(dashboard: Dashboard) -> None:
    broken = copy.deepcopy(dashboard)
    first_target_panel(broken)["targets"][0]["expr"] = "  "
    assert any("empty expr" in p for p in dashboard_problems(broken))


@pytest.mark.parametrize("key", sorted(FORBIDDEN_TOP_LEVEL_KEYS))
def test_validator_rejects_v2_and_export_keys(key: str) -> None:
    broken = load_dashboard("tracker-overview.json")
    broken[key] = {}
    assert any("v2/export keys" in p for p in dashboard_problems(broken))


def test_validator_rejects_string_schema_version() -> None:
    broken = load_dashboard("tracker-overview.json")
    broken["schemaVersion"] = "39"
    assert any("schemaVersion" in p for p in dashboard_problems(broken))


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("rate(udp4_announces_handled[5m])", "without a {job=...} selector"),
        ('torrents{instance="tracker:1212"}', "needs job="),
        ('torrents{job="prometheus"}', "needs job="),
        ('torrents{job="tracker_metrics"}', "needs job="),
        # develop-only names (/api/v1/metrics, PR #1414) do not exist in v3.0.0.
        ('swarm_coordination_registry_torrents_total{job="tracker_stats"}', "not exported by job"),
        ('udp_requests_banned{job="tracker_stats"}', "not exported by job"),
        ("vector(1)", "no metric{...} selector"),
        ('probe_success{job="blackbox"}', "needs job="),
        ('node_filesystem_avail_bytes{job="blackbox_tls"}', "not exported by job"),
    ],
)
def test_expr_problems_catches_bad_queries(expr: str, fragment: str) -> None:
    assert any(fragment in p for p in expr_problems(expr)), expr_problems(expr)


@pytest.mark.parametrize(
    "expr",
    [
        'torrents{job="tracker_stats"}',
        'seeders{job="tracker_stats"} + leechers{job="tracker_stats"}',
        'rate(udp4_announces_handled{job="tracker_stats"}[5m])'
        ' + rate(udp6_announces_handled{job="tracker_stats"}[5m])',
    ],
)
def test_expr_problems_accepts_good_queries(expr: str) -> None:
    assert expr_problems(expr) == []


# --- dashboard provider ----------------------------------------------------------------------------


def test_provider_yaml() -> None:
    data = yaml.safe_load(PROVIDER_FILE.read_text(encoding="utf-8"))
    assert data["apiVersion"] == 1
    providers = data["providers"]
    assert isinstance(providers, list)
    assert len(providers) == 1
    provider = providers[0]
    assert provider["name"] == "Torrust"
    assert provider["folder"] == "Torrust Tracker"
    assert provider["type"] == "file"
    assert provider["disableDeletion"] is True
    assert provider["allowUiUpdates"] is False
    assert provider["updateIntervalSeconds"] == 60
    assert provider["options"]["path"] == GRAFANA_DASHBOARDS_PATH
    assert provider["options"]["foldersFromFilesStructure"] is False


def test_provider_file_is_plain_yaml_without_templating() -> None:
    text = PROVIDER_FILE.read_text(encoding="utf-8")
    assert "{{" not in text
    assert "{%" not in text
