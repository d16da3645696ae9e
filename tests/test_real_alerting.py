"""Alerting, for real, on loopback:

- The real Alertmanager (Debian 0.25; the image pins v0.34.0), configured by the rendered
  alertmanager.yml, delivers a firing alert posted to its API (as Prometheus does) to a local
  webhook receiver and, over SMTP, to a local sink (aiosmtpd). A critical alert inhibits the
  warning of the same name and endpoint.
- The real blackbox exporter, with the rendered probe modules, probes the real nginx serving a
  certificate that pebble issued through certbot (tests/test_real_acme.py's harness) and reports
  probe_ssl_earliest_cert_expiry; an untrusted chain or a wrong name fails the probe.

Remaps (each asserted to apply): Alertmanager's group_wait 30s -> 1s so that the test does not
sleep; the SMTP sink speaks no TLS (alerts.email.requireTls false, a setting); the blackbox
module trusts pebble's root (ca_file) and, as the public name cannot resolve to loopback here,
the probe dials 127.0.0.1 with the name as TLS server name.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import layout
from core.settings import load_settings
from services.monitoring import alerts
from tests.conftest import dev_config
from tests.realtools import (
    LOOPBACK4,
    Proc,
    RenderedPlan,
    dev_plan,  # noqa: F401  (session fixture: the plan is rendered once)
    free_port,
    require_tool,
    run,
    wait_until,
)
from tests.test_real_acme import Acme, acme, leaf_der  # noqa: F401  (module fixture: pebble + nginx)

WEBHOOK_PATH = "/alerts"

# --- local receivers ------------------------------------------------------------------------------


class WebhookSink:
    """An HTTP server on loopback that records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == WEBHOOK_PATH:
                    sink.payloads.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = HTTPServer((LOOPBACK4, free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK4}:{self.server.server_address[1]}{WEBHOOK_PATH}"

    def alerts(self) -> list[dict[str, Any]]:
        return [alert for payload in self.payloads for alert in payload.get("alerts", [])]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class SmtpSink:
    """aiosmtpd on loopback (no TLS, no AUTH): records every message it is handed."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                sink.messages.append(message_from_bytes(envelope.original_content or envelope.content))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname=LOOPBACK4, port=self.port, ready_timeout=10)
        self.controller.start()

    def texts(self) -> list[str]:
        result = []
        for message in self.messages:
            parts = [str(message["Subject"])]
            for part in message.walk():
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    parts.append(payload.decode(errors="replace"))
            result.append("\n".join(parts))
        return result

    def stop(self) -> None:
        self.controller.stop()


# --- Alertmanager ----------------------------------------------------------------------------------


EMAIL = {"to": ["ops@example.com"], "from": "alerts@example.com", "requireTls": False}


def alertmanager_config(smtp_port: int | None, webhook_url: str | None) -> str:
    """The rendered alertmanager.yml for a stack with an e-mail receiver and/or a webhook."""
    config = dev_config()
    section: dict[str, Any] = {}
    if smtp_port is not None:
        section["email"] = dict(EMAIL, smarthost=f"{LOOPBACK4}:{smtp_port}")
    config["alerts"] = section
    secrets = {"alertWebhookUrl": webhook_url} if webhook_url else {}
    text = alerts.render_alertmanager(load_settings("dev", config.get), secrets)
    assert "group_wait: 30s" in text, "remap: group_wait changed in the template"
    return text.replace("group_wait: 30s", "group_wait: 1s", 1)


class RealAlertmanager:
    def __init__(self, config_text: str, work: Path) -> None:
        binary = require_tool("prometheus-alertmanager")
        work.mkdir(parents=True, exist_ok=True)
        (work / "alertmanager.yml").write_text(config_text)
        self.port = free_port()
        self.proc = Proc(
            "alertmanager",
            [
                binary,
                f"--config.file={work / 'alertmanager.yml'}",
                f"--storage.path={work / 'data'}",
                f"--web.listen-address={LOOPBACK4}:{self.port}",
                "--cluster.listen-address=",
            ],
            work,
        )
        self.proc.wait_for_port(LOOPBACK4, self.port, timeout=20)

    def post(self, *alerts_: dict[str, Any]) -> None:
        """What Prometheus sends: POST /api/v2/alerts."""
        request = urllib.request.Request(
            f"http://{LOOPBACK4}:{self.port}/api/v2/alerts",
            data=json.dumps(list(alerts_)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200, response.status

    def stop(self) -> None:
        self.proc.stop()


def firing(name: str, severity: str, instance: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": name, "severity": severity, "instance": instance, "job": alerts.TLS_JOB},
        "annotations": {"summary": f"Certificate for {instance} expires in 3 days"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
    }


@pytest.fixture
def sinks() -> Iterator[tuple[WebhookSink, SmtpSink]]:
    require_tool("prometheus-alertmanager")
    webhook = WebhookSink()
    try:
        smtp = SmtpSink()
    except Exception:
        webhook.stop()
        raise
    try:
        yield webhook, smtp
    finally:
        smtp.stop()
        webhook.stop()


DELIVERY_TIMEOUT = 20.0
INSTANCE = "api.example.com:443"


def assert_webhook_got_only_the_critical(webhook: WebhookSink) -> None:
    wait_until(lambda: bool(webhook.alerts()), DELIVERY_TIMEOUT, "the webhook to receive the alert")
    got = {(a["labels"]["alertname"], a["labels"]["severity"], a["status"]) for a in webhook.alerts()}
    assert got == {("CertificateExpiring", "critical", "firing")}, (
        f"the webhook should get the critical alert only (the warning is inhibited): {got}"
    )


def assert_email_arrived(smtp: SmtpSink) -> None:
    wait_until(lambda: bool(smtp.messages), DELIVERY_TIMEOUT, "an e-mail to reach the SMTP sink")
    assert smtp.envelopes[0] == ("alerts@example.com", ["ops@example.com"]), smtp.envelopes
    text = smtp.texts()[0]
    assert "CertificateExpiring" in text and INSTANCE in text, text[:2000]


def test_alertmanager_delivers_to_webhook_and_smtp(
    sinks: tuple[WebhookSink, SmtpSink], tmp_path: Path
) -> None:
    webhook, smtp = sinks
    manager = RealAlertmanager(alertmanager_config(smtp.port, webhook.url), tmp_path)
    try:
        manager.post(
            firing("CertificateExpiring", "critical", INSTANCE),
            firing("CertificateExpiring", "warning", INSTANCE),
        )
        assert_webhook_got_only_the_critical(webhook)
        assert_email_arrived(smtp)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- alertmanager log ---\n{manager.proc.log()[-4000:]}") from None
    finally:
        manager.stop()


def test_mutation_no_email_receiver_means_no_email(
    sinks: tuple[WebhookSink, SmtpSink], tmp_path: Path
) -> None:
    webhook, smtp = sinks
    manager = RealAlertmanager(alertmanager_config(None, webhook.url), tmp_path)
    try:
        manager.post(firing("CertificateExpiring", "critical", INSTANCE))
        assert_webhook_got_only_the_critical(webhook)  # delivery happened...
        with pytest.raises(AssertionError, match="SMTP sink"):
            wait_until(lambda: bool(smtp.messages), 3, "an e-mail to reach the SMTP sink")
    finally:
        manager.stop()


def test_mutation_without_inhibit_rule_the_warning_is_sent_too(
    sinks: tuple[WebhookSink, SmtpSink], tmp_path: Path
) -> None:
    webhook, _ = sinks
    text = alertmanager_config(None, webhook.url)
    start = text.index("inhibit_rules:")
    end = text.index("receivers:")
    manager = RealAlertmanager(text[:start] + text[end:], tmp_path)
    try:
        manager.post(
            firing("CertificateExpiring", "critical", INSTANCE),
            firing("CertificateExpiring", "warning", INSTANCE),
        )
        wait_until(lambda: len(webhook.alerts()) >= 2, DELIVERY_TIMEOUT, "both alerts at the webhook")
        with pytest.raises(AssertionError, match="critical alert only"):
            assert_webhook_got_only_the_critical(webhook)
    finally:
        manager.stop()


# --- blackbox exporter against nginx with a pebble certificate ------------------------------------


def blackbox_modules(dev_plan: RenderedPlan, ca_file: Path | None, server_name: str) -> str:  # noqa: F811
    """The rendered modules; the TLS module dials loopback with `server_name` (and trusts ca_file)."""
    config = yaml.safe_load(dev_plan.file(layout.BLACKBOX, layout.BLACKBOX_CONFIG_FILE).read_text())
    tcp = config["modules"][alerts.TLS_MODULE]["tcp"]
    # The dev stack is on staging (chain not verified); these probes prove the production module.
    assert tcp["tls"] is True and tcp.pop("tls_config") == {"insecure_skip_verify": True}, "remap: changed"
    tcp["tls_config"] = {"server_name": server_name}
    if ca_file is not None:
        tcp["tls_config"]["ca_file"] = str(ca_file)
    return yaml.safe_dump(config)


def probe(modules: str, work: Path, target: str, module: str = alerts.TLS_MODULE) -> dict[str, float]:
    """Run the real blackbox exporter once and return the metrics of one probe."""
    binary = require_tool("prometheus-blackbox-exporter")
    work.mkdir(parents=True, exist_ok=True)
    (work / "blackbox.yml").write_text(modules)
    port = free_port()
    proc = Proc(
        "blackbox",
        [binary, f"--config.file={work / 'blackbox.yml'}", f"--web.listen-address={LOOPBACK4}:{port}"],
        work,
    )
    try:
        proc.wait_for_port(LOOPBACK4, port, timeout=15)
        query = urllib.parse.urlencode({"module": module, "target": target})
        url = f"http://{LOOPBACK4}:{port}/probe?{query}"
        with urllib.request.urlopen(url, timeout=20) as response:
            text = response.read().decode()
    finally:
        proc.stop()
    metrics: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            metrics[name] = float(value)
    return metrics


def not_after(pem_file: Path) -> list[float]:
    """notAfter (Unix seconds) of every certificate in a PEM file."""
    openssl = require_tool("openssl")
    text = pem_file.read_text()
    result: list[float] = []
    for block in text.split("-----END CERTIFICATE-----")[:-1]:
        one = pem_file.parent / f"one-{len(result)}.pem"
        one.write_text(block + "-----END CERTIFICATE-----\n")
        out = run([openssl, "x509", "-in", str(one), "-noout", "-enddate"], check=True).stdout
        stamp = out.strip().split("=", 1)[1]
        result.append(datetime.strptime(stamp, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC).timestamp())
    return result


@pytest.fixture(scope="module")
def issued(acme: Acme) -> Acme:  # noqa: F811
    """A pebble certificate for the Grafana name, served by the real nginx on its 3443 listener."""
    acme.issue_through_webroot()
    acme.nginx.reload()
    acme.wait_until_served(leaf_der(acme.live_dir / "cert.pem"))
    return acme


def test_blackbox_reads_expiry_of_the_pebble_certificate(
    issued: Acme,
    dev_plan: RenderedPlan,  # noqa: F811
    tmp_path: Path,
) -> None:
    root = tmp_path / "pebble-root.pem"
    root.write_text(issued.pebble_root())
    target = f"{LOOPBACK4}:{issued.nginx.remap.tls_port}"
    metrics = probe(blackbox_modules(dev_plan, root, issued.host), tmp_path / "bb", target)
    assert metrics.get("probe_success") == 1.0, metrics
    expiry = metrics["probe_ssl_earliest_cert_expiry"]
    # The earliest notAfter of the verified chain: the served chain plus pebble's root.
    chain = not_after(issued.live_dir / "fullchain.pem") + not_after(root)
    assert expiry == min(chain), (expiry, chain)
    leaf_expiry = not_after(issued.live_dir / "cert.pem")[0]
    assert expiry <= leaf_expiry
    days_left = (expiry - time.time()) / 86400
    thresholds = load_settings("dev", dev_config().get).alerts.thresholds
    assert days_left > thresholds.cert_warning_days, f"a fresh certificate would alert: {days_left:.1f} days"


def test_mutation_untrusted_chain_fails_the_probe(
    issued: Acme,
    dev_plan: RenderedPlan,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The production module (system roots only) refuses pebble's chain: the probe fails, no expiry."""
    target = f"{LOOPBACK4}:{issued.nginx.remap.tls_port}"
    metrics = probe(blackbox_modules(dev_plan, None, issued.host), tmp_path / "bb", target)
    assert metrics.get("probe_success") == 0.0, metrics
    assert "probe_ssl_earliest_cert_expiry" not in metrics


def test_mutation_wrong_name_fails_the_probe(
    issued: Acme,
    dev_plan: RenderedPlan,  # noqa: F811
    tmp_path: Path,
) -> None:
    root = tmp_path / "pebble-root.pem"
    root.write_text(issued.pebble_root())
    target = f"{LOOPBACK4}:{issued.nginx.remap.tls_port}"
    metrics = probe(blackbox_modules(dev_plan, root, "other.example.com"), tmp_path / "bb", target)
    assert metrics.get("probe_success") == 0.0, metrics


def http_modules(dev_plan: RenderedPlan, ca_file: Path, host_header: str, module: str) -> str:  # noqa: F811
    """The rendered HTTP module, dialling loopback with the public name as Host and TLS server name."""
    config = yaml.safe_load(dev_plan.file(layout.BLACKBOX, layout.BLACKBOX_CONFIG_FILE).read_text())
    http = config["modules"][module]["http"]
    # The dev stack is on staging (chain not verified); these probes prove the production module.
    staging_tls = http.pop("tls_config", None)
    assert "headers" not in http and staging_tls in (None, {"insecure_skip_verify": True}), "remap: changed"
    http["headers"] = {"Host": host_header}
    http["tls_config"] = {"ca_file": str(ca_file), "server_name": host_header.split(":")[0]}
    return yaml.safe_dump(config)


@pytest.mark.parametrize(
    ("module", "scheme", "port_of", "path", "with_port"),
    [
        (alerts.HTTP_REDIRECT_MODULE, "http", "http_port", "/", False),
        (alerts.HTTPS_200_MODULE, "https", "tls_port", "/api/health", True),
    ],
    ids=["port 80 redirect", "grafana on 3443"],
)
def test_blackbox_http_modules_match_the_real_nginx(
    issued: Acme,
    dev_plan: RenderedPlan,  # noqa: F811
    tmp_path: Path,
    module: str,
    scheme: str,
    port_of: str,
    path: str,
    with_port: bool,
) -> None:
    """The rendered port-80 and 3443 modules succeed against the rendered nginx: the status codes,
    TLS or not, and the redirect policy they expect are what nginx really does."""
    root = tmp_path / "pebble-root.pem"
    root.write_text(issued.pebble_root())
    port = getattr(issued.nginx.remap, port_of)
    host = f"{issued.host}:{layout.GRAFANA_TLS_PORT}" if with_port else issued.host
    modules = http_modules(dev_plan, root, host, module)
    metrics = probe(modules, tmp_path / "bb", f"{scheme}://{LOOPBACK4}:{port}{path}", module)
    assert metrics.get("probe_success") == 1.0, metrics
    # Mutation: the other scheme on the same port fails the module (fail_if_ssl / fail_if_not_ssl or
    # a protocol error), so the probe really checks what it claims.
    other = "https" if scheme == "http" else "http"
    broken = probe(modules, tmp_path / "bb2", f"{other}://{LOOPBACK4}:{port}{path}", module)
    assert broken.get("probe_success") == 0.0, broken
