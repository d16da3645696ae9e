"""Scheduled backups on the host: the backup script, its systemd units and the shell that installs them.

Pure, like core.rendering: settings in, text out. services/backups/backups.py runs `backup_install_script`
over SSH after the host is ready (not in cloud-init: a user_data change replaces the server).
Runbook: docs/backup-restore.md.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shlex
import tarfile
from pathlib import Path

from core import layout
from core.rendering import Templates
from core.settings import StackSettings

TEMPLATES = Templates(Path(__file__).resolve().parent / "templates")

SCRIPT_PATH = "/usr/local/sbin/torrust-backup"
# In core.layout: the host's volume release (components/docker_host.py) stops them too.
SERVICE_NAME = layout.BACKUP_SERVICE_NAME
TIMER_NAME = layout.BACKUP_TIMER_NAME
SERVICE_PATH = f"/etc/systemd/system/{SERVICE_NAME}"
TIMER_PATH = f"/etc/systemd/system/{TIMER_NAME}"
# Off-site (backup.offsite): the restore command, the check units, credentials and restic.
RESTORE_PATH = "/usr/local/sbin/torrust-restore"
CHECK_SERVICE_NAME = "torrust-backup-check.service"
CHECK_TIMER_NAME = "torrust-backup-check.timer"
CHECK_SERVICE_PATH = f"/etc/systemd/system/{CHECK_SERVICE_NAME}"
CHECK_TIMER_PATH = f"/etc/systemd/system/{CHECK_TIMER_NAME}"
OFFSITE_DIR = "/etc/torrust-backup"
OFFSITE_ENV = f"{OFFSITE_DIR}/offsite.env"
RESTIC_PASSWORD_FILE = f"{OFFSITE_DIR}/restic-password"
SSH_KEY_FILE = f"{OFFSITE_DIR}/ssh/id_ed25519"
KNOWN_HOSTS_FILE = f"{OFFSITE_DIR}/ssh/known_hosts"
# node_exporter's textfile collector folder (--collector.textfile.directory,
# services/monitoring/node_exporter.py).
METRICS_DIR = layout.NODE_TEXTFILE_DIR
# restic, pinned: Debian 12 ships 0.14.0 (no exit codes 10/12, no `snapshot:subfolder` restore).
# The release binary (https://github.com/restic/restic/releases/tag/v0.19.1, a bare bzip2 of the
# binary) and its sha256 as listed in that release's SHA256SUMS (cross-checked against two
# independent public pins of the same asset; this machine cannot reach GitHub). The tests build the
# same version from the Go module proxy (tests/restic.py).
RESTIC_VERSION = "0.19.1"
RESTIC_PATH = "/usr/local/bin/restic"
RESTIC_RELEASE_URL = f"https://github.com/restic/restic/releases/download/v{RESTIC_VERSION}/restic_{RESTIC_VERSION}_linux_amd64.bz2"
RESTIC_RELEASE_SHA256 = "f415415624dcc452f2a02b8c33641791a8c6d6d3b65bbb3543fcf9a25151585c"
# Storage Boxes serve SFTP on port 23 (port 22 is the restricted shell; Hetzner docs, Storage Box
# "Access with SFTP/SCP").
STORAGE_BOX_SFTP_PORT = 23
# Containers the restore stops and starts again (the ones holding restored state).
RESTORE_CONTAINERS = (layout.TRACKER, layout.GRAFANA, layout.PINGOO, layout.NGINX)

# sqlite3 `.timeout`: how long a backup waits for a writer's lock before it fails.
SQLITE_TIMEOUT_MS = 60_000
# Upper bound for one run (a large database under constant writes can restart `.backup` forever).
SERVICE_TIMEOUT = "6h"
GRAFANA_DATABASE_FILE = f"{layout.GRAFANA_DATA_DIR}/grafana.db"

# Backup file name prefixes, as the script writes them (<prefix>-<UTC stamp>.<ext>).
ARTEFACTS = {
    "tracker-db": "sqlite3.gz",
    "grafana-db": "sqlite3.gz",
    "pingoo-tls": "tar.gz",
    "letsencrypt": "tar.gz",
}

_HEREDOC_PREFIX = "TORRUST_BACKUP_EOF"


def _below_data_root(path: str) -> str:
    """`path` relative to DATA_ROOT, shell-quoted (the script re-bases it on $TORRUST_DATA_ROOT)."""
    prefix = layout.DATA_ROOT + "/"
    if not path.startswith(prefix):
        raise ValueError(f"{path} is not below {layout.DATA_ROOT}: it would not be on the data volume")
    return shlex.quote(path.removeprefix(prefix))


def restic_host(settings: StackSettings) -> str:
    """The --host of every snapshot: the stack, not the server, so a replaced server continues."""
    return f"torrust-{settings.stack}".lower().replace("_", "-")


def _data_paths() -> dict[str, str]:
    """The paths on the data volume that the backup and the restore scripts both handle."""
    return {
        "data_root": shlex.quote(layout.DATA_ROOT),
        "backup_dir": _below_data_root(layout.BACKUP_DIR),
        "tracker_db": _below_data_root(layout.TRACKER_DATABASE_FILE),
        "grafana_db": _below_data_root(GRAFANA_DATABASE_FILE),
        "pingoo_tls_dir": _below_data_root(layout.PINGOO_TLS_DIR),
        "letsencrypt_dir": _below_data_root(layout.LETSENCRYPT_DIR),
    }


def render_backup_script(settings: StackSettings) -> str:
    offsite = settings.backup.offsite
    return TEMPLATES.render(
        "backup/torrust-backup.sh.j2",
        stack=settings.stack,
        script_path=SCRIPT_PATH,
        **_data_paths(),
        retention_days=int(settings.backup.retention_days),
        sqlite_timeout_ms=SQLITE_TIMEOUT_MS,
        metrics_dir=shlex.quote(METRICS_DIR),
        offsite=1 if offsite.enabled else 0,
        offsite_env=shlex.quote(OFFSITE_ENV),
        restic_path=shlex.quote(RESTIC_PATH),
        restic_host=shlex.quote(restic_host(settings)),
        keep_daily=int(offsite.keep_daily),
        keep_weekly=int(offsite.keep_weekly),
        keep_monthly=int(offsite.keep_monthly),
        check_subset=shlex.quote(offsite.check_subset),
    )


def render_restore_script(settings: StackSettings) -> str:
    return TEMPLATES.render(
        "backup/torrust-restore.sh.j2",
        stack=settings.stack,
        restore_path=RESTORE_PATH,
        **_data_paths(),
        offsite_env=shlex.quote(OFFSITE_ENV),
        restic_path=shlex.quote(RESTIC_PATH),
        containers=" ".join(shlex.quote(name) for name in RESTORE_CONTAINERS),
        # Owners from docs/backup-restore.md: the tracker image's torrust user, Grafana's 472:0.
        tracker_owner=f"{layout.TRACKER_UID}:{layout.TRACKER_UID}",
        grafana_owner=f"{layout.GRAFANA_UID}:0",
    )


def render_backup_service(settings: StackSettings, mode: str = "") -> str:
    return TEMPLATES.render(
        "backup/torrust-backup.service.j2",
        stack=settings.stack,
        script_path=SCRIPT_PATH,
        data_root=layout.DATA_ROOT,
        timeout=SERVICE_TIMEOUT,
        metrics_dir=METRICS_DIR,
        offsite=settings.backup.offsite.enabled,
        offsite_dir=OFFSITE_DIR,
        mode=mode,
    )


def render_check_service(settings: StackSettings) -> str:
    return render_backup_service(settings, mode="check")


def render_check_timer(settings: StackSettings) -> str:
    offsite = settings.backup.offsite
    return TEMPLATES.render(
        "backup/torrust-backup-check.timer.j2",
        stack=settings.stack,
        # Validated by OffsiteSettings (OnCalendar characters only).
        schedule=offsite.check_schedule,
        subset=offsite.check_subset,
        service_name=CHECK_SERVICE_NAME,
    )


def render_backup_timer(settings: StackSettings) -> str:
    return TEMPLATES.render(
        "backup/torrust-backup.timer.j2",
        stack=settings.stack,
        # Validated by BackupSettings (no newlines, only OnCalendar characters).
        schedule=settings.backup.schedule,
        retention_days=settings.backup.retention_days,
        service_name=SERVICE_NAME,
    )


def _heredoc_install(path: str, mode: str, content: str) -> str:
    """Shell that writes `content` to `path` with `mode`, verbatim (quoted delimiter: no expansion)."""
    delimiter = _HEREDOC_PREFIX
    lines = content.splitlines()
    index = 0
    while delimiter in lines:
        index += 1
        delimiter = f"{_HEREDOC_PREFIX}_{index}"
    body = content if content.endswith("\n") else content + "\n"
    return (
        f"install -m {mode} -o root -g root /dev/stdin {shlex.quote(path)} <<'{delimiter}'\n"
        f"{body}{delimiter}\n"
    )


def backup_install_script(settings: StackSettings) -> str:
    """What the remote Command runs: the backup folder, the script and units, the enabled timer.

    Idempotent: re-running it (a changed script or schedule) overwrites the files and restarts
    nothing but the timer.
    """
    offsite = settings.backup.offsite.enabled
    parts = [
        "#!/bin/bash\n",
        f"# torrust-hybrid-tls backups for stack {settings.stack} (services/backups/backups.py)\n",
        "set -euo pipefail\n",
        "umask 022\n",
        f"install -d -m 0700 -o root -g root {shlex.quote(layout.BACKUP_DIR)}\n",
        f"install -d -m 0755 {shlex.quote(SCRIPT_PATH.rsplit('/', 1)[0])}\n",
        f"install -d -m 0755 {shlex.quote(METRICS_DIR)}\n",
        _heredoc_install(SCRIPT_PATH, "0755", render_backup_script(settings)),
        _heredoc_install(SERVICE_PATH, "0644", render_backup_service(settings)),
        _heredoc_install(TIMER_PATH, "0644", render_backup_timer(settings)),
        f"bash -n {SCRIPT_PATH}\n",
    ]
    if offsite:
        parts += [
            f"install -d -m 0700 -o root -g root {OFFSITE_DIR}\n",
            _heredoc_install(RESTORE_PATH, "0755", render_restore_script(settings)),
            _heredoc_install(CHECK_SERVICE_PATH, "0644", render_check_service(settings)),
            _heredoc_install(CHECK_TIMER_PATH, "0644", render_check_timer(settings)),
            f"bash -n {RESTORE_PATH}\n",
            _restic_install(),
        ]
    else:
        # Turning off-site off keeps the repository and its credentials, stops the check.
        parts.append(
            f"systemctl disable --now {CHECK_TIMER_NAME} 2>/dev/null || true\n"
            f"rm -f {CHECK_TIMER_PATH} {CHECK_SERVICE_PATH} {RESTORE_PATH}\n"
        )
    parts += [
        # Hetzner's images have no sqlite3 CLI; wait for a running unattended-upgrade's dpkg lock.
        "if ! command -v sqlite3 >/dev/null; then\n"
        "  export DEBIAN_FRONTEND=noninteractive\n"
        "  apt-get -q -o DPkg::Lock::Timeout=600 update\n"
        "  apt-get -q -y -o DPkg::Lock::Timeout=600 install --no-install-recommends sqlite3\n"
        "fi\n",
        "systemctl daemon-reload\n",
        f"systemctl enable --now {TIMER_NAME}\n",
        # A changed schedule only applies after the timer is restarted.
        f"systemctl restart {TIMER_NAME}\n",
    ]
    timers = [TIMER_NAME]
    if offsite:
        parts += [f"systemctl enable --now {CHECK_TIMER_NAME}\n", f"systemctl restart {CHECK_TIMER_NAME}\n"]
        timers.append(CHECK_TIMER_NAME)
    parts.append(f"systemctl list-timers --all --no-pager {' '.join(timers)}\n")
    return "".join(parts)


def _restic_install(path: str = RESTIC_PATH) -> str:
    """Shell that installs the pinned restic release binary at `path`, verified against its sha256."""
    return (
        f"if ! {path} version 2>/dev/null | grep -q '^restic {RESTIC_VERSION} '; then\n"
        "  for tool in curl bzip2 ssh; do\n"
        '    if ! command -v "$tool" >/dev/null; then\n'
        "      export DEBIAN_FRONTEND=noninteractive\n"
        "      apt-get -q -o DPkg::Lock::Timeout=600 update\n"
        "      apt-get -q -y -o DPkg::Lock::Timeout=600 install --no-install-recommends"
        " curl bzip2 openssh-client ca-certificates\n"
        "      break\n"
        "    fi\n"
        "  done\n"
        "  restic_tmp=$(mktemp -d)\n"
        f'  curl -fsSL --retry 3 -o "$restic_tmp/restic.bz2" {RESTIC_RELEASE_URL}\n'
        f"  echo '{RESTIC_RELEASE_SHA256}  '\"$restic_tmp/restic.bz2\" | sha256sum -c -\n"
        '  bunzip2 -c "$restic_tmp/restic.bz2" >"$restic_tmp/restic"\n'
        f'  install -m 0755 -o root -g root "$restic_tmp/restic" {path}\n'
        '  rm -rf "$restic_tmp"\n'
        "fi\n"
        f"{path} version\n"
    )


def offsite_env_file(
    repository: str,
    credentials: dict[str, str],
    sftp_args: str | None,
    password_file: str = RESTIC_PASSWORD_FILE,
) -> str:
    """offsite.env: what the scripts source (`set -a; . file`); every value shell-quoted.

    Plain text of secrets: call it inside an Output.apply of secret Outputs only.
    """
    lines = [
        "# Written by Pulumi (services/backups/backups.py); secret, mode 0600.",
        f"RESTIC_REPOSITORY={shlex.quote(repository)}",
        f"RESTIC_PASSWORD_FILE={shlex.quote(password_file)}",
    ]
    if sftp_args:
        lines.append(f"TORRUST_RESTIC_SFTP_ARGS={shlex.quote(sftp_args)}")
    for name, value in sorted(credentials.items()):
        lines.append(f"{name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def sftp_args(key_file: str = SSH_KEY_FILE, known_hosts: str = KNOWN_HOSTS_FILE) -> str:
    """ssh options restic's sftp backend passes to ssh (`-o sftp.args=...`).

    The program's key only; host key learnt on first contact (accept-new) and pinned afterwards in
    our own known_hosts; no prompts, bounded connect.
    """
    return (
        f"-i {key_file} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes"
        f" -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={known_hosts}"
        " -o ConnectTimeout=30 -o ServerAliveInterval=60"
    )


# The credentials travel on the Command's stdin, never in its command text: pulumi-command v1.2.1
# puts the whole command text and its output into the error of a failed command
# (provider/pkg/provider/remote/commandOutputs.go, run: `fmt.Errorf("%w: running %q:\n%s", err, cmd,
# stdouterrbuf)`), and the engine masks only secret config values there, so a failed run would print
# the restic password and the SFTP key in the CLI and CI logs. stdin goes to the SSH session's
# standard input (`session.Stdin = strings.NewReader(*c.Stdin)`) and nowhere else.
_CREDENTIAL_FILES = ("offsite.env", "restic-password", "ssh/id_ed25519")


def offsite_credentials_payload(env_file: str, password: str, ssh_private_key: str | None) -> str:
    """stdin of the credentials Command: a base64 tar of the files (mode 0600, root), deterministic.

    Plain text of secrets: call it inside an Output.apply of secret Outputs only.
    """
    contents = {"offsite.env": env_file, "restic-password": password + "\n"}
    if ssh_private_key:
        contents["ssh/id_ed25519"] = ssh_private_key
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name in _CREDENTIAL_FILES:
            if name not in contents:
                continue
            data = contents[name].encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), 0o600, 0, 0, 0
            archive.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode() + "\n"


def offsite_credentials_script() -> str:
    """What the credentials Command runs: unpack stdin into the off-site folder. No secret in it.

    It prints nothing of what it writes, so its output (which pulumi-command logs, and puts into the
    error of a failed run) carries no secret either. TORRUST_OFFSITE_DIR is for the tests only.
    """
    return (
        "set -euo pipefail\n"
        "umask 077\n"
        f"dir=${{TORRUST_OFFSITE_DIR:-{OFFSITE_DIR}}}\n"
        'install -d -m 0700 "$dir" "$dir/ssh"\n'
        # A key left from an SFTP repository must not outlive a switch to another backend.
        'rm -f "$dir/ssh/id_ed25519"\n'
        'base64 -d | tar -x -f - -C "$dir" --no-same-owner --no-overwrite-dir\n'
        'if [ ! -s "$dir/offsite.env" ] || [ ! -s "$dir/restic-password" ]; then\n'
        '  echo "off-site credentials missing from stdin" >&2; exit 1\n'
        "fi\n"
        'echo "off-site credentials installed in $dir"\n'
    )


def offsite_credentials_remove_script() -> str:
    return f"rm -f {OFFSITE_ENV} {RESTIC_PASSWORD_FILE} {SSH_KEY_FILE}\necho 'off-site credentials removed'\n"


def backup_remove_script() -> str:
    """Disable the timer and remove the script and units; the backups themselves are kept.

    Tolerates a host where nothing is installed (a replaced server gets the delete first).
    """
    return (
        "set -u\n"
        f"systemctl disable --now {TIMER_NAME} 2>/dev/null || true\n"
        f"systemctl stop {SERVICE_NAME} 2>/dev/null || true\n"
        f"systemctl disable --now {CHECK_TIMER_NAME} 2>/dev/null || true\n"
        f"rm -f {TIMER_PATH} {SERVICE_PATH} {SCRIPT_PATH}\n"
        f"rm -f {CHECK_TIMER_PATH} {CHECK_SERVICE_PATH} {RESTORE_PATH}\n"
        "systemctl daemon-reload\n"
        f"echo 'torrust-backup removed; backups kept in {layout.BACKUP_DIR}'\n"
    )


def install_script_digest(settings: StackSettings) -> str:
    """sha256 of the install script: the trigger that re-installs on any change."""
    return hashlib.sha256(backup_install_script(settings).encode()).hexdigest()
