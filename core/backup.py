"""Scheduled backups on the host: the backup script, its systemd units and the shell that installs them.

Pure, like core.rendering: settings in, text out. components/backups.py runs `backup_install_script`
over SSH after the host is ready (not in cloud-init: a user_data change replaces the server).
Runbook: docs/backup-restore.md.
"""

from __future__ import annotations

import hashlib
import shlex

from core import layout
from core.rendering import render_template
from core.settings import StackSettings

SCRIPT_PATH = "/usr/local/sbin/torrust-backup"
SERVICE_NAME = "torrust-backup.service"
TIMER_NAME = "torrust-backup.timer"
SERVICE_PATH = f"/etc/systemd/system/{SERVICE_NAME}"
TIMER_PATH = f"/etc/systemd/system/{TIMER_NAME}"

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


def render_backup_script(settings: StackSettings) -> str:
    return render_template(
        "backup/torrust-backup.sh.j2",
        stack=settings.stack,
        script_path=SCRIPT_PATH,
        data_root=shlex.quote(layout.DATA_ROOT),
        backup_dir=_below_data_root(layout.BACKUP_DIR),
        tracker_db=_below_data_root(layout.TRACKER_DATABASE_FILE),
        grafana_db=_below_data_root(GRAFANA_DATABASE_FILE),
        pingoo_tls_dir=_below_data_root(layout.PINGOO_TLS_DIR),
        letsencrypt_dir=_below_data_root(layout.LETSENCRYPT_DIR),
        retention_days=int(settings.backup.retention_days),
        sqlite_timeout_ms=SQLITE_TIMEOUT_MS,
    )


def render_backup_service(settings: StackSettings) -> str:
    return render_template(
        "backup/torrust-backup.service.j2",
        stack=settings.stack,
        script_path=SCRIPT_PATH,
        data_root=layout.DATA_ROOT,
        timeout=SERVICE_TIMEOUT,
    )


def render_backup_timer(settings: StackSettings) -> str:
    return render_template(
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
    parts = [
        "#!/bin/bash\n",
        f"# torrust-hybrid-tls backups for stack {settings.stack} (components/backups.py)\n",
        "set -euo pipefail\n",
        "umask 022\n",
        f"install -d -m 0700 -o root -g root {shlex.quote(layout.BACKUP_DIR)}\n",
        f"install -d -m 0755 {shlex.quote(SCRIPT_PATH.rsplit('/', 1)[0])}\n",
        _heredoc_install(SCRIPT_PATH, "0755", render_backup_script(settings)),
        _heredoc_install(SERVICE_PATH, "0644", render_backup_service(settings)),
        _heredoc_install(TIMER_PATH, "0644", render_backup_timer(settings)),
        f"bash -n {SCRIPT_PATH}\n",
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
        f"systemctl list-timers --all --no-pager {TIMER_NAME}\n",
    ]
    return "".join(parts)


def backup_remove_script() -> str:
    """Disable the timer and remove the script and units; the backups themselves are kept.

    Tolerates a host where nothing is installed (a replaced server gets the delete first).
    """
    return (
        "set -u\n"
        f"systemctl disable --now {TIMER_NAME} 2>/dev/null || true\n"
        f"systemctl stop {SERVICE_NAME} 2>/dev/null || true\n"
        f"rm -f {TIMER_PATH} {SERVICE_PATH} {SCRIPT_PATH}\n"
        "systemctl daemon-reload\n"
        f"echo 'torrust-backup removed; backups kept in {layout.BACKUP_DIR}'\n"
    )


def install_script_digest(settings: StackSettings) -> str:
    """sha256 of the install script: the trigger that re-installs on any change."""
    return hashlib.sha256(backup_install_script(settings).encode()).hexdigest()
