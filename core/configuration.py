"""The stack's configuration, loaded and validated before the first resource is registered.

`load_configuration()` is the one call the entry point makes: it reads every key of the stack
(settings, operator secrets, alert receiver secrets, off-site credentials, the SSH key file) and
returns them, or raises one ConfigError that lists every problem with its fix. The values are read
through pulumi.Config (secrets stay Pulumi secrets); no resource is created here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
from pulumi.runtime.config import is_config_secret

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
    configured_receivers,
    load_settings,
)
from core.sshkeys import private_key_problem

# Pingoo releases with a known ACME failure (pingoo PR #24: 0.14.9 exits before the tls-alpn-01
# flow finishes, so no certificate is ever written; regression from commit 4d2c340).
KNOWN_BAD_PINGOO = {"0.14.9": "exits before the TLS-ALPN-01 challenge completes (pingoo PR #24)"}


@dataclass
class Configuration:
    """Everything the program reads from the stack, validated."""

    settings: StackSettings
    # Configured operator secrets (config key -> secret Output): the generated-when-unset ones, the
    # restic password and the off-site credential keys. Keys that are not set are absent.
    secrets: dict[str, pulumi.Output[str]]
    # Alert receiver secrets that are set (config key -> secret Output).
    alert_secrets: dict[str, pulumi.Output[str]]
    # ssh.privateKeyFile's content when it is set and not passphrase-protected (else ssh-agent).
    private_key: pulumi.Output[str] | None = None
    # Printed by the entry point with pulumi.log.warn (so by `make plan` and `pulumi up` alike).
    warnings: list[str] = field(default_factory=list)


def alert_secret_problems(settings: StackSettings, present: set[str]) -> list[str]:
    """Receiver settings and receiver secrets that only make sense together."""
    alerts = settings.alerts
    problems = []
    if alerts.email is not None and alerts.email.username and "alertSmtpPassword" not in present:
        problems.append(
            f"  - {PROJECT}:alertSmtpPassword: alerts.email.username is set but the SMTP password is not\n"
            "      fix: pulumi config set --secret alertSmtpPassword <password>"
        )
    if "alertSmtpPassword" in present and (alerts.email is None or not alerts.email.username):
        problems.append(
            f"  - {PROJECT}:alerts.email.username: alertSmtpPassword is set but no SMTP user goes with it\n"
            "      fix: pulumi config set --path 'alerts.email.username' alerts@example.com"
            "   (or pulumi config rm alertSmtpPassword)"
        )
    if "alertTelegramBotToken" in present and alerts.telegram is None:
        problems.append(
            f"  - {PROJECT}:alerts.telegram.chatId: alertTelegramBotToken is set but no chat to send to\n"
            "      fix: pulumi config set --path 'alerts.telegram.chatId' -1001234567890"
        )
    if alerts.telegram is not None and "alertTelegramBotToken" not in present:
        problems.append(
            f"  - {PROJECT}:alertTelegramBotToken: alerts.telegram is set but the bot token is not\n"
            "      fix: pulumi config set --secret alertTelegramBotToken <token from @BotFather>"
        )
    if alerts.slack is not None and "alertSlackWebhookUrl" not in present:
        problems.append(
            f"  - {PROJECT}:alertSlackWebhookUrl: alerts.slack is set but the incoming webhook URL is not\n"
            "      fix: pulumi config set --secret alertSlackWebhookUrl https://hooks.slack.com/services/..."
        )
    return problems


NO_RECEIVER_WARNING = (
    "no alert receiver is configured: Alertmanager runs, but alerts (certificate expiry, endpoints "
    "down, disk full, stale backups) go nowhere. Set alerts.email or one of the secrets "
    "alertWebhookUrl, alertDiscordWebhookUrl, alertSlackWebhookUrl, alertTelegramBotToken "
    "(README 'Alerts')."
)


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


def load_configuration() -> Configuration:
    """Validate everything before the first resource is registered; one error lists every problem."""
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
    warnings = configuration_warnings(settings, alert_secrets)
    private_key = read_private_key(settings, warnings)
    return Configuration(settings, secrets, alert_secrets, private_key, warnings)


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


def configuration_warnings(
    settings: StackSettings, alert_secrets: dict[str, pulumi.Output[str]]
) -> list[str]:
    """What deserves the operator's attention but does not stop the deployment."""
    warnings = [
        f"image '{image}' uses a moving tag: pin a digest (repository:tag@sha256:...) so that a "
        "replacement server runs the same code; see README 'Pinning images'."
        for image in settings.images.mutable()
    ]
    pingoo_version = settings.images.pingoo.split("@")[0].rpartition(":")[2]
    if pingoo_version in KNOWN_BAD_PINGOO:
        warnings.append(
            f"images.pingoo '{settings.images.pingoo}' {KNOWN_BAD_PINGOO[pingoo_version]}: "
            "no certificates will be issued; use pingooio/pingoo:0.14.7"
        )
    if not configured_receivers(settings, alert_secrets):
        warnings.append(NO_RECEIVER_WARNING)
    return warnings


def read_private_key(settings: StackSettings, warnings: list[str]) -> pulumi.Output[str] | None:
    """ssh.privateKeyFile's content for the remote commands, or None (ssh-agent)."""
    if not settings.ssh.private_key_file:
        return None
    key_path = Path(os.path.expanduser(settings.ssh.private_key_file))
    if private_key_problem(key_path)[1]:
        # Passphrase-protected: the remote commands use ssh-agent (SSH_AUTH_SOCK) instead.
        warnings.append(
            f"ssh.privateKeyFile '{key_path}' is passphrase-protected: Pulumi uses it through "
            f"ssh-agent; keep it loaded (ssh-add {key_path}) while `pulumi up` runs"
        )
        return None
    return pulumi.Output.secret(key_path.read_text())
