"""torrust-hybrid-tls: a Torrust tracker on one Hetzner Cloud server behind Pingoo (443) and
nginx+certbot (3443 for Grafana), with Prometheus and Grafana.

Thin on purpose: validate the configuration, build the components, export what the operator needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pulumi
from pulumi.runtime.config import is_config_secret

from components.alertmanager import Alertmanager, AlertmanagerArgs
from components.backups import Backups, BackupsArgs
from components.blackbox import BlackboxExporter
from components.containers import ServiceArgs
from components.dns import Dns, DnsArgs
from components.dns_gate import DnsGate, DnsGateArgs
from components.docker_host import DockerHost, DockerHostArgs, ssh_command
from components.host import Host, HostArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.nginx_certbot import NginxCertbot
from components.node_exporter import NodeExporter
from components.pingoo import PingooEdge
from components.secrets import Secrets, SecretsArgs
from components.tracker import Tracker, TrackerArgs
from core.alerts import NO_RECEIVER_WARNING, alert_secret_problems, configured_receivers
from core.dns import records as dns_record_list
from core.dns import server_ipv6
from core.endpoints import backup_paths, endpoints
from core.examples import documentation_problems
from core.settings import (
    ALERT_SECRET_KEYS,
    PROJECT,
    RESTIC_PASSWORD_KEY,
    RESTIC_PASSWORD_MIN_LENGTH,
    SECRET_MIN_LENGTHS,
    ConfigError,
    StackSettings,
    check_config_keys,
    check_secret_value,
    load_settings,
)
from core.sshkeys import private_key_problem

# Pingoo releases with a known ACME failure (pingoo PR #24: 0.14.9 exits before the tls-alpn-01
# flow finishes, so no certificate is ever written; regression from commit 4d2c340).
KNOWN_BAD_PINGOO = {"0.14.9": "exits before the TLS-ALPN-01 challenge completes (pingoo PR #24)"}


def configured_keys() -> set[str]:
    """Names of every configured key, of every namespace. Values are not read here."""
    from pulumi.runtime.config import CONFIG, get_config_env

    return set(CONFIG.get()) | set(get_config_env())


def load_alert_secrets(config: pulumi.Config, problems: list[str]) -> dict[str, pulumi.Output[str]]:
    """Alert receiver secrets that are set; a plain-text one is a problem (it is a credential)."""
    result: dict[str, pulumi.Output[str]] = {}
    for key in ALERT_SECRET_KEYS:
        value = config.get(key)
        if value is None:
            continue
        if not is_config_secret(f"{PROJECT}:{key}"):
            problems.append(
                f"  - {PROJECT}:{key}: is stored in plain text in the stack file\n"
                f"      fix: pulumi config set --secret {key} <value>   (then rotate it: it was exposed)"
            )
        elif not value.strip():
            problems.append(f"  - {PROJECT}:{key}: is empty\n      fix: pulumi config rm {key}")
        else:
            result[key] = config.require_secret(key)
    return result


def load_configuration() -> tuple[
    StackSettings, dict[str, pulumi.Output[str]], dict[str, pulumi.Output[str]]
]:
    """Validate everything before the first resource is registered."""
    config = pulumi.Config()
    problems: list[str] = []
    try:
        settings = load_settings(pulumi.get_stack(), config.get_object)
    except ConfigError as exc:
        problems.append(str(exc).removeprefix("Invalid stack configuration:\n"))
        settings = None
    # The secret keys that backup.offsite.credentials names are the operator's own.
    credential_keys = settings.backup.offsite.credentials.values() if settings else ()
    problems[:0] = check_config_keys(configured_keys(), is_config_secret, credential_keys)
    secrets: dict[str, pulumi.Output[str]] = {}
    for key, min_length in SECRET_MIN_LENGTHS.items():
        value = config.get(key)
        problem = check_secret_value(key, value, min_length=min_length)
        if value is not None and problem is None and not is_config_secret(f"{PROJECT}:{key}"):
            problem = (
                f"  - {PROJECT}:{key}: is stored in plain text in the stack file\n"
                f"      fix: pulumi config set --secret {key} <value>   (then rotate it: it was exposed)"
            )
        if problem:
            problems.append(problem)
        elif value is not None:
            secrets[key] = config.require_secret(key)
    alert_secrets = load_alert_secrets(config, problems)
    if settings is not None:
        present = {key for key in ALERT_SECRET_KEYS if config.get(key) is not None}
        problems.extend(alert_secret_problems(settings, present))
    if settings is not None and settings.ssh.private_key_file:
        key_file = Path(os.path.expanduser(settings.ssh.private_key_file))
        fix = (
            "      fix: pulumi config set --path 'ssh.privateKeyFile' ~/.ssh/id_ed25519"
            "   (or remove it to use ssh-agent)"
        )
        if not key_file.is_file():
            problems.append(
                f"  - {PROJECT}:ssh.privateKeyFile: '{key_file}' does not exist on this machine\n{fix}"
            )
        else:
            problem, encrypted = private_key_problem(key_file)
            if problem is not None:
                problems.append(f"  - {PROJECT}:ssh.privateKeyFile: {problem}\n{fix}")
            elif encrypted and not os.environ.get("SSH_AUTH_SOCK"):
                # Pulumi cannot type a passphrase: the key must come from ssh-agent.
                problems.append(
                    f"  - {PROJECT}:ssh.privateKeyFile: '{key_file}' is passphrase-protected and no "
                    "ssh-agent is running; Pulumi cannot type the passphrase\n"
                    f'      fix: eval "$(ssh-agent)" && ssh-add {key_file}'
                )
    if settings is not None and not pulumi.runtime.is_dry_run():
        # `pulumi up` only: the example stack must stay plannable and previewable.
        problems += documentation_problems(settings)
    if os.environ.get("DOCKER_CONTEXT"):
        # The Docker provider reads DOCKER_CONTEXT and lets it override `host`, so the containers
        # would go to that context's daemon instead of the server (kreuzwerker/terraform-provider-docker
        # v4.5.0 internal/provider/provider.go: `context` defaults to $DOCKER_CONTEXT; configure()).
        problems.append(
            f"  - DOCKER_CONTEXT={os.environ['DOCKER_CONTEXT']!r} is set in this environment: the Docker "
            "provider would use that context instead of the server\n"
            "      fix: unset DOCKER_CONTEXT   (then run the command again)"
        )
    if settings is not None:
        problems += offsite_secrets(config, settings, secrets)
    if problems or settings is None:
        raise ConfigError("Invalid stack configuration:\n" + "\n".join(problems))
    return settings, secrets, alert_secrets


def offsite_secrets(
    config: pulumi.Config, settings: StackSettings, secrets: dict[str, pulumi.Output[str]]
) -> list[str]:
    """backup.offsite: the optional restic password and every credential key, secret and set."""
    problems: list[str] = []
    offsite = settings.backup.offsite
    if not offsite.enabled:
        return problems
    wanted = {RESTIC_PASSWORD_KEY: False, **{key: True for key in offsite.credentials.values()}}
    for key, required in wanted.items():
        value = config.get(key)
        if value is None:
            if required:
                problems.append(
                    f"  - {PROJECT}:{key}: is required by backup.offsite.credentials but not set\n"
                    f"      fix: pulumi config set --secret {key} <value>"
                )
            continue
        problem = None
        if key == RESTIC_PASSWORD_KEY:
            problem = check_secret_value(key, value, min_length=RESTIC_PASSWORD_MIN_LENGTH)
        if problem is None and not is_config_secret(f"{PROJECT}:{key}"):
            problem = (
                f"  - {PROJECT}:{key}: is stored in plain text in the stack file\n"
                f"      fix: pulumi config set --secret {key} <value>   (then rotate it: it was exposed)"
            )
        if problem:
            problems.append(problem)
        else:
            secrets[key] = config.require_secret(key)
    return problems


try:
    settings, secrets, alert_secrets = load_configuration()
except ConfigError as error:
    # RunError prints the message without a Python traceback.
    raise pulumi.RunError(str(error)) from None

for image in settings.images.mutable():
    pulumi.log.warn(
        f"image '{image}' uses a moving tag: pin a digest (repository:tag@sha256:...) so that a "
        "replacement server runs the same code; see README 'Pinning images'."
    )

pingoo_version = settings.images.pingoo.split("@")[0].rpartition(":")[2]
if pingoo_version in KNOWN_BAD_PINGOO:
    pulumi.log.warn(
        f"images.pingoo '{settings.images.pingoo}' {KNOWN_BAD_PINGOO[pingoo_version]}: "
        "no certificates will be issued; use pingooio/pingoo:0.14.7"
    )
if not configured_receivers(settings, alert_secrets):
    pulumi.log.warn(NO_RECEIVER_WARNING)

private_key: pulumi.Output[str] | None = None
if settings.ssh.private_key_file:
    key_path = Path(os.path.expanduser(settings.ssh.private_key_file))
    if private_key_problem(key_path)[1]:
        # Passphrase-protected: the remote commands use ssh-agent (SSH_AUTH_SOCK) instead.
        pulumi.log.warn(
            f"ssh.privateKeyFile '{key_path}' is passphrase-protected: Pulumi uses it through "
            f"ssh-agent; keep it loaded (ssh-add {key_path}) while `pulumi up` runs"
        )
    else:
        private_key = pulumi.Output.secret(key_path.read_text())

operator_secrets = Secrets("secrets", SecretsArgs(configured=secrets))
host = Host("host", HostArgs(settings=settings))
docker_host = DockerHost(
    "docker",
    DockerHostArgs(
        settings=settings,
        ipv4_address=host.ipv4_address,
        host_public_key=host.host_public_key,
        server_id=host.server.id,
        server_ready_after=[host.volume_attachment],
        private_key=private_key,
    ),
)
backups = Backups(
    "backups",
    BackupsArgs(
        settings=settings,
        connection=docker_host.connection,
        ready=docker_host.ready,
        restic_password=secrets.get(RESTIC_PASSWORD_KEY),
        credentials={env: secrets[key] for env, key in settings.backup.offsite.credentials.items()},
    ),
)
services = pulumi.ResourceOptions(providers=[docker_host.provider])

# DNS follows the Primary IPs, which exist before (and outlive) the server.
primary_ipv4 = host.primary_ips["ipv4"].ip_address
primary_ipv6 = host.primary_ips["ipv6"].ip_network.apply(lambda net: server_ipv6(net or ""))
dns = Dns(
    "dns",
    DnsArgs(
        settings=settings,
        primary_ip_ids={family: ip.id for family, ip in host.primary_ips.items()},
        ipv4=primary_ipv4,
        ipv6=primary_ipv6,
    ),
)
edge_after: list[pulumi.Resource] = []
if not settings.dns.skip_gate:
    dns_gate = DnsGate(
        "dns-gate",
        DnsGateArgs(
            settings=settings,
            connection=docker_host.connection,
            ready=docker_host.ready,
            server_id=host.server.id,
            ipv4=primary_ipv4,
            ipv6=primary_ipv6,
        ),
    )
    edge_after.append(dns_gate.command)

tracker = Tracker(
    "tracker",
    TrackerArgs(settings, docker_host, admin_token=operator_secrets.tracker_admin_token),
    opts=services,
)
pingoo = PingooEdge("pingoo", ServiceArgs(settings, docker_host, after=edge_after), opts=services)
nginx = NginxCertbot("nginx", ServiceArgs(settings, docker_host, after=edge_after), opts=services)
monitoring = Monitoring(
    "monitoring",
    MonitoringArgs(
        settings,
        docker_host,
        admin_token=operator_secrets.tracker_admin_token,
        grafana_admin_password=operator_secrets.grafana_admin_password,
    ),
    opts=services,
)
blackbox = BlackboxExporter("blackbox", ServiceArgs(settings, docker_host), opts=services)
node_exporter = NodeExporter("node-exporter", ServiceArgs(settings, docker_host), opts=services)
alertmanager = Alertmanager(
    "alertmanager",
    AlertmanagerArgs(settings, docker_host, receiver_secrets=alert_secrets),
    opts=services,
)

pulumi.export("serverIpv4", host.ipv4_address)
pulumi.export("serverIpv6", host.ipv6_address)
pulumi.export("endpoints", host.ipv4_address.apply(lambda ipv4: endpoints(settings, ipv4)))
pulumi.export(
    "dnsRecords",
    pulumi.Output.all(primary_ipv4, primary_ipv6).apply(
        lambda ips: [record.as_output() for record in dns_record_list(settings, ips[0], ips[1])]
    ),
)
pulumi.export(
    "dns",
    {
        "zone": settings.dns.zone,
        "managed": settings.dns.managed,
        "ttl": settings.dns.ttl,
        "nameservers": dns.nameservers,
        "recordsCreated": dns.records_created,
        "reverseDns": {family: rdns.dns_ptr for family, rdns in dns.rdns.items()},
        "gate": "skipped" if settings.dns.skip_gate else f"waits up to {settings.dns.gate_timeout} s",
        "resolvers": settings.dns.resolvers,
    },
)
pulumi.export(
    "sshCommand",
    pulumi.Output.all(host.ipv4_address, host.host_public_key).apply(
        lambda values: ssh_command(
            settings.ssh.user,
            values[0],
            values[1],
            os.path.expanduser(settings.ssh.private_key_file) if settings.ssh.private_key_file else None,
        )
    ),
)
pulumi.export("hostKey", host.host_public_key.apply(str.strip))
pulumi.export("backupPaths", backup_paths())
pulumi.export("acmeStaging", settings.acme.staging)
pulumi.export("trackerAdminToken", operator_secrets.tracker_admin_token)
pulumi.export("grafanaAdminPassword", operator_secrets.grafana_admin_password)
pulumi.export("alertReceivers", configured_receivers(settings, alert_secrets))
if backups.offsite is not None:
    offsite_settings = settings.backup.offsite
    pulumi.export(
        "offsite",
        pulumi.Output.all(backups.offsite.repository, backups.offsite.ssh_public_key).apply(
            lambda values: {
                "kind": offsite_settings.kind,
                "repository": values[0],
                "sshPublicKey": values[1],
                "storageBox": offsite_settings.storage_box.model_dump(by_alias=True)
                if offsite_settings.kind == "storageBox"
                else None,
                "backupSchedule": settings.backup.schedule,
                "checkSchedule": offsite_settings.check_schedule,
                "checkSubset": offsite_settings.check_subset,
                "keep": {
                    "daily": offsite_settings.keep_daily,
                    "weekly": offsite_settings.keep_weekly,
                    "monthly": offsite_settings.keep_monthly,
                },
                "credentials": sorted(offsite_settings.credentials),
            }
        ),
    )
    # Without it every off-site backup is lost: keep a copy outside of this stack.
    pulumi.export("offsiteResticPassword", backups.offsite.restic_password)
