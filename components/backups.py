"""Scheduled backups on the host: a systemd timer running the backup script, installed over SSH.

Not in cloud-init (a user_data change replaces the server): one remote Command installs the script
and units after the host is ready, and re-installs them when their content changes. Runbook:
docs/backup-restore.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from core.backup import backup_install_script, backup_remove_script, install_script_digest
from core.settings import StackSettings


@dataclass
class BackupsArgs:
    settings: StackSettings
    connection: command.remote.ConnectionArgs
    # The host readiness Command (DockerHost.ready). It is replaced with the server, and its new ID
    # re-installs the timer on the new server.
    ready: pulumi.CustomResource


class Backups(pulumi.ComponentResource):
    def __init__(self, name: str, args: BackupsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:Backups", name, None, opts)
        settings = args.settings
        self.install_script = backup_install_script(settings)
        self.digest = install_script_digest(settings)
        self.install = command.remote.Command(
            f"{name}-install",
            connection=args.connection,
            create=self.install_script,
            delete=backup_remove_script(),
            # Triggers replace the Command: a changed script, unit or schedule re-installs, and so
            # does a new server (new readiness ID).
            triggers=[self.digest, args.ready.id],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[args.ready],
                # Create-before-delete would run the old delete (disable the timer, remove the
                # units) after the new install and leave the host without backups.
                delete_before_replace=True,
            ),
        )
        self.register_outputs({"installed": self.install.stdout, "installScriptSha256": self.digest})
