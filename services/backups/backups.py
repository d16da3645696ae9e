"""Scheduled backups on the host: a systemd timer running the backup script, installed over SSH.

Not in cloud-init (a user_data change replaces the server): one remote Command installs the script
and units after the host is ready, and re-installs them when their content changes. Runbook:
docs/backup-restore.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_command as command
import pulumi_hcloud as hcloud
import pulumi_random as random
import pulumi_tls as tls

from core.settings import StackSettings
from services.backups.backup import (
    STORAGE_BOX_SFTP_PORT,
    backup_install_script,
    backup_remove_script,
    install_script_digest,
    offsite_credentials_payload,
    offsite_credentials_remove_script,
    offsite_credentials_script,
    offsite_env_file,
    restic_host,
    sftp_args,
)


@dataclass
class BackupsArgs:
    settings: StackSettings
    connection: command.remote.ConnectionArgs
    # The host readiness Command (DockerHost.readiness). It is replaced with the server, and its new ID
    # re-installs the timer on the new server.
    ready: pulumi.CustomResource
    # Off-site (backup.offsite): the configured restic password (else generated) and the values of
    # the credential keys (env name -> secret Output), from __main__.load_configuration.
    restic_password: pulumi.Output[str] | None = None
    credentials: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)


class Offsite(pulumi.ComponentResource):
    """The off-site restic repository: a Storage Box the program owns, or the operator's own.

    Storage Box: `hcloud.StorageBox` (pulumi-hcloud 1.43.3, sdk/python/pulumi_hcloud/storage_box.py)
    lives on the Hetzner API (api.hetzner.com, the provider's `endpointHetzner`; the same project
    token as `hcloud:token`). Its `ssh_keys` cannot be updated through the API and a change replaces
    the box with every backup in it, so the key is set once at creation and `ignore_changes` keeps
    a later change (a regenerated key, a provider diff) from ever reaching the box; rotating the key
    is a documented manual step (docs/backup-restore.md). Delete protection plus `protect`, as the
    volume.
    """

    repository: pulumi.Output[str]
    restic_password: pulumi.Output[str]
    ssh_public_key: pulumi.Output[str] | None

    def __init__(
        self,
        name: str,
        settings: StackSettings,
        configured_password: pulumi.Output[str] | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("torrust:index:Offsite", name, None, opts)
        offsite = settings.backup.offsite
        child = pulumi.ResourceOptions(parent=self)
        if configured_password is not None:
            self.restic_password = pulumi.Output.secret(configured_password)
        else:
            # Letters and digits: it is written to a file and never typed into a shell.
            generated = random.RandomPassword(f"{name}-restic-password", length=48, special=False, opts=child)
            self.restic_password = pulumi.Output.secret(generated.result)
        self.ssh_private_key: pulumi.Output[str] | None = None
        self.ssh_public_key = None
        self.storage_box: hcloud.StorageBox | None = None
        if offsite.kind == "storageBox" or (offsite.repository or "").startswith("sftp:"):
            key = tls.PrivateKey(f"{name}-ssh-key", algorithm="ED25519", opts=child)
            self.ssh_private_key = pulumi.Output.secret(key.private_key_openssh)
            self.ssh_public_key = key.public_key_openssh.apply(str.strip)
        if offsite.kind == "storageBox":
            assert self.ssh_public_key is not None
            # The API's password policy: 12-128 characters with upper, lower, digit and special.
            box_password = random.RandomPassword(
                f"{name}-storage-box-password",
                length=40,
                min_upper=4,
                min_lower=4,
                min_numeric=4,
                min_special=4,
                override_special="-_.:~@",
                opts=child,
            )
            protect = settings.data.delete_protection
            self.storage_box = hcloud.StorageBox(
                f"{name}-storage-box",
                name=f"torrust-{settings.stack}-backups".lower().replace("_", "-"),
                storage_box_type=offsite.storage_box.type,
                location=offsite.storage_box.location,
                password=box_password.result,
                ssh_keys=[self.ssh_public_key],
                # SSH (SFTP on port 23) only; the server is in Hetzner's network.
                access_settings=hcloud.StorageBoxAccessSettingsArgs(
                    ssh_enabled=True,
                    reachable_externally=False,
                    samba_enabled=False,
                    webdav_enabled=False,
                    zfs_enabled=False,
                ),
                delete_protection=protect,
                labels={"managed-by": "pulumi", "stack": settings.stack, "role": "torrust-backups"},
                opts=pulumi.ResourceOptions(parent=self, protect=protect, ignore_changes=["sshKeys"]),
            )
            folder = restic_host(settings)
            self.repository = pulumi.Output.all(self.storage_box.username, self.storage_box.server).apply(
                lambda values: f"sftp://{values[0]}@{values[1]}:{STORAGE_BOX_SFTP_PORT}/{folder}"
            )
        else:
            assert offsite.repository is not None
            self.repository = pulumi.Output.from_input(offsite.repository)
        self.register_outputs({"repository": self.repository, "sshPublicKey": self.ssh_public_key})

    def summary(self, settings: StackSettings) -> pulumi.Output[dict[str, object]]:
        """The `offsite` stack output: where the copies go and on which schedule (no secrets)."""
        offsite = settings.backup.offsite
        return pulumi.Output.all(self.repository, self.ssh_public_key).apply(
            lambda values: {
                "kind": offsite.kind,
                "repository": values[0],
                "sshPublicKey": values[1],
                "storageBox": offsite.storage_box.model_dump(by_alias=True)
                if offsite.kind == "storageBox"
                else None,
                "backupSchedule": settings.backup.schedule,
                "checkSchedule": offsite.check_schedule,
                "checkSubset": offsite.check_subset,
                "keep": {
                    "daily": offsite.keep_daily,
                    "weekly": offsite.keep_weekly,
                    "monthly": offsite.keep_monthly,
                },
                "credentials": sorted(offsite.credentials),
            }
        )


class Backups(pulumi.ComponentResource):
    def __init__(self, name: str, args: BackupsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:Backups", name, None, opts)
        settings = args.settings
        self.install_script = backup_install_script(settings)
        self.digest = install_script_digest(settings)
        self.offsite: Offsite | None = None
        self.credentials: command.remote.Command | None = None
        install_after: list[pulumi.Resource] = [args.ready]
        if settings.backup.offsite.enabled:
            self.offsite = Offsite(
                f"{name}-offsite", settings, args.restic_password, pulumi.ResourceOptions(parent=self)
            )
            self.credentials = self._install_credentials(name, args, self.offsite)
            install_after.append(self.credentials)
        self.install = command.remote.Command(
            f"{name}-install",
            connection=args.connection,
            create=self.install_script,
            delete=backup_remove_script(),
            add_previous_output_in_env=False,
            # Triggers replace the Command: a changed script, unit or schedule re-installs, and so
            # does a new server (new readiness ID).
            triggers=[self.digest, args.ready.id],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=install_after,
                # Create-before-delete would run the old delete (disable the timer, remove the
                # units) after the new install and leave the host without backups.
                delete_before_replace=True,
            ),
        )
        self.register_outputs({"installed": self.install.stdout, "installScriptSha256": self.digest})

    def _install_credentials(self, name: str, args: BackupsArgs, offsite: Offsite) -> command.remote.Command:
        """The env file, repository password and SSH key on the server, through one Command.

        The secrets are its `stdin` (a secret input: encrypted in the state, [secret] in plans),
        never its command text, which pulumi-command prints when the command fails
        (services/backups/backup.py). A change of any value updates the Command, and an update
        without an `update` command runs `create` again with the new stdin (pulumi-command v1.2.1
        provider/pkg/provider/remote/commandController.go, Update); a new server re-runs it through
        the readiness ID.
        """
        names = sorted(args.credentials)
        sftp = offsite.ssh_private_key is not None

        def render(values: list[str]) -> str:
            env = offsite_env_file(
                values[0], dict(zip(names, values[3:], strict=True)), sftp_args() if sftp else None
            )
            return offsite_credentials_payload(env, values[1], values[2] or None)

        inputs: list[pulumi.Input[str]] = [
            offsite.repository,
            offsite.restic_password,
            offsite.ssh_private_key if offsite.ssh_private_key is not None else "",
            *[args.credentials[key] for key in names],
        ]
        payload: pulumi.Output[str] = pulumi.Output.secret(pulumi.Output.all(*inputs).apply(render))
        return command.remote.Command(
            f"{name}-offsite-credentials",
            connection=args.connection,
            create=offsite_credentials_script(),
            stdin=payload,
            delete=offsite_credentials_remove_script(),
            add_previous_output_in_env=False,
            triggers=[args.ready.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.ready], delete_before_replace=True),
        )
