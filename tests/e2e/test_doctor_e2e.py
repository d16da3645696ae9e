"""`make doctor` (tools/doctor.py) run as a client would, against the e2e tier's live deployment.

The doctor runs in the client namespace ("the internet") with the plan's outputs (plus the tier's test
secrets, as `pulumi stack output --show-secrets` would give them), DNS answered by pebble-challtestsrv
with exactly the records `dnsRecords` advertises, a CA bundle holding only the Pingoo stand-in's
scratch CA and pebble's issuing root, and must pass. Then the tracker is stopped: the doctor must exit
non-zero and name the tracker's checks, and only those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DNS_PORT, Stack
from tests.e2e.test_e2e import assert_running_and_healthy, grafana_host, pebble_root, served_certificate
from tests.realtools import REPO_ROOT, real_tools_required

pytestmark = pytest.mark.skipif(
    not (real_tools_required() or os.environ.get("E2E") == "1"),
    reason="e2e tier (real dockerd): runs in `make e2e` / `make check`",
)

DOCTOR_TIMEOUT = 240  # the doctor's own bound: checks in parallel, 10 s per network step
# Two issuing CAs here (the Pingoo stand-in's scratch CA on 443, pebble's intermediate on :3443) where
# production has one (Let's Encrypt): the doctor takes one issuer text, so it gets their common part and
# the test checks the 443 issuer by name below. The chains are verified against CA_BUNDLE only.
COMMON_ISSUER_TEXT = "CA"
# The scratch CA's leaves (tests/realtools.py ScratchCA.issue) live 2 days, so 1 full day is left.
MIN_DAYS = 1
# The tracker's checks: what a stopped tracker must fail, and nothing else.
TRACKER_CHECKS = {"api health", "api stats", "http tracker", "udp ipv4", "udp ipv6"}


def challtestsrv(stack: Stack, path: str, body: dict[str, Any]) -> None:
    """POST to pebble-challtestsrv's management API (letsencrypt/pebble
    cmd/pebble-challtestsrv/mockdns.go: /add-a, /add-aaaa, /add-caa, /set-txt, /clear-*)."""

    def post() -> None:
        url = f"http://{stack.net.client_v4}:{DNS_PORT + 1}{path}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, (path, response.status)

    stack.client_ns(post)


@pytest.fixture
def published_dns(stack: Stack) -> Iterator[None]:
    """challtestsrv answers exactly the advertised records. It answers every A/AAAA query with its
    default (the server's addresses) unless the name has a mock, and skips a mock value that is not an
    IPv6 address (letsencrypt/pebble challtestsrv/dns.go `aaaaAnswers`): names without an advertised
    AAAA get the mock "none", so their AAAA query answers nothing, as the zone does."""
    records = stack.plan["outputs"]["dnsRecords"]
    names = sorted({r["name"] for r in records})
    try:
        for name in names:
            mine = [r for r in records if r["name"] == name]
            a = [r["value"] for r in mine if r["type"] == "A"]
            aaaa = [r["value"] for r in mine if r["type"] == "AAAA"] or ["none"]
            if a:
                challtestsrv(stack, "/add-a", {"host": f"{name}.", "addresses": a})
            challtestsrv(stack, "/add-aaaa", {"host": f"{name}.", "addresses": aaaa})
            for record in mine:
                if record["type"] == "TXT":
                    challtestsrv(stack, "/set-txt", {"host": f"{name}.", "value": record["value"]})
            policies = []
            for record in mine:
                if record["type"] == "CAA":
                    flags, tag, value = record["value"].split(" ", 2)
                    assert flags == "0", record  # challtestsrv's mock CAA has no flags field
                    policies.append({"tag": tag, "value": value.strip('"')})
            if policies:
                challtestsrv(stack, "/add-caa", {"host": f"{name}.", "policies": policies})
        yield
    finally:
        for name in names:
            for path in ("/clear-a", "/clear-aaaa", "/clear-caa", "/clear-txt"):
                try:
                    challtestsrv(stack, path, {"host": f"{name}."})
                except Exception as error:  # every clear runs; the next test starts from the defaults
                    print(f"challtestsrv {path} {name}: {error!r}", file=sys.stderr)


def run_doctor(stack: Stack, work: Path) -> tuple[int, dict[str, Any]]:
    outputs = dict(stack.plan["outputs"])
    for key in ("trackerAdminToken", "grafanaAdminPassword"):  # "[secret]" in plan.json
        outputs[key] = stack.secrets[key]
    outputs_file = work / "outputs.json"
    outputs_file.write_text(json.dumps(outputs))
    outputs_file.chmod(0o600)
    resolve = [
        f"--resolve={r['name']}={r['value']}" for r in outputs["dnsRecords"] if r["type"] in ("A", "AAAA")
    ]
    result = subprocess.run(
        ["nsenter", f"--net=/run/netns/{stack.net.client}", sys.executable, "-m", "tools.doctor",
         "--outputs", str(outputs_file), "--json", "--resolver", stack.net.client_v4,
         "--resolver-port", str(DNS_PORT), *resolve, "--ca-bundle", str(work / "ca-bundle.pem"),
         "--issuer", COMMON_ISSUER_TEXT, "--min-days", str(MIN_DAYS), "--timeout", "10"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=DOCTOR_TIMEOUT, check=False,
    )  # fmt: skip
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"doctor printed no JSON (exit {result.returncode}): {result.stderr}") from None
    return result.returncode, report


def by_status(report: dict[str, Any], status: str) -> list[dict[str, str]]:
    return [r for r in report["results"] if r["status"] == status]


def test_doctor_passes_against_the_live_deployment_and_names_the_stopped_tracker(
    stack: Stack, published_dns: None, tmp_path: Path
) -> None:
    # nginx serves pebble's certificate on :3443 once certbot got it (test_e2e.py's Grafana test, or
    # now when this test runs alone): wait for it, then trust pebble's root and the Pingoo stand-in CA.
    served_certificate(stack)
    (tmp_path / "ca-bundle.pem").write_text(stack.pingoo_ca.cert.read_text() + "\n" + pebble_root(stack))

    code, report = run_doctor(stack, tmp_path)
    shown = json.dumps(report["results"], indent=1)
    kinds = {r["check"] for r in report["results"]}
    edge = stack.plan["outputs"]["edge"]
    expected_kinds = {"dns A", "dns AAAA", "dns TXT", "dns CAA", "tls 443", "pq group",
                      f"grafana {grafana_host(stack)[1]}", "port 80"} | TRACKER_CHECKS  # fmt: skip
    if edge["ipv6"]:
        expected_kinds.add("tls 443 ipv6")  # the nginx edge: every name has an AAAA
    assert kinds == expected_kinds, f"the doctor ran {sorted(kinds)}; want {sorted(expected_kinds)}"
    assert code == 0 and report["ok"], f"the doctor failed against the live deployment:\n{shown}"
    # The one check that cannot pass here: the group offered as X25519MLKEM768 (OpenSSL >= 3.5 in the
    # doctor and in the edge; Debian 12 has 3.0, so `info`, documented as non-failing).
    assert [(r["check"], r["status"]) for r in by_status(report, "info")] == [("pq group", "info")], shown
    assert all(r["status"] == "pass" for r in report["results"] if r["check"] != "pq group"), shown
    for result in report["results"]:
        if result["check"] == "tls 443" and edge["kind"] == "pingoo":
            assert "e2e edge CA" in result["detail"], result  # the Pingoo stand-in CA, by name
        if result["check"] == "tls 443" and edge["kind"] == "nginx":
            assert "Pebble" in result["detail"], result  # certbot's certificate from pebble
        if result["check"] == "dns AAAA" and not result["target"].startswith("udp") and not edge["ipv6"]:
            assert result["detail"] == "no AAAA (as intended)", result

    # Fault: the tracker is down. The doctor exits non-zero and names exactly the tracker's checks.
    stack.container("tracker").stop(timeout=30)
    try:
        code, report = run_doctor(stack, tmp_path)
        failed = {r["check"] for r in by_status(report, "fail")}
        shown = json.dumps(by_status(report, "fail"), indent=1)
        assert code == 1 and not report["ok"], f"the doctor passed with the tracker stopped:\n{shown}"
        assert failed == TRACKER_CHECKS, f"failed {sorted(failed)}; want {sorted(TRACKER_CHECKS)}:\n{shown}"
    finally:
        stack.recreate("tracker")
        assert_running_and_healthy(stack, "tracker")
