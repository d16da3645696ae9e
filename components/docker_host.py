"""Docker on the server: wait for cloud-init, an SSH Docker provider that verifies the host key,
and the container networks."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from core import layout
from core.settings import StackSettings

# `cloud-init status --wait` exits 2 for "done, with recoverable errors" (e.g. a deprecated key);
# the machine is usable then, and the output is kept in the command's stdout for review.
READINESS_SCRIPT = (
    "set -u; cloud-init status --wait --long; rc=$?; "
    'if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then echo "cloud-init failed ($rc)" >&2; exit "$rc"; fi; '
    f"mountpoint -q {layout.DATA_ROOT} || "
    f"{{ echo 'data volume not mounted at {layout.DATA_ROOT}' >&2; exit 1; }}; "
    "docker info --format 'docker {{.ServerVersion}} ready'"
)

# The readiness step's delete, which Pulumi runs after every container is gone and before the
# VolumeAttachment is detached (the step depends on it; dependents are deleted first), on a
# replaced server as on `pulumi destroy`: stop what could still write to the volume, then unmount
# it, so Hetzner never detaches a mounted ext4 file system. It fails (and so stops the detach)
# when the volume cannot be unmounted. With live-restore, stopping dockerd alone would leave
# containers running, so they are stopped first.
RELEASE_VOLUME_SCRIPT = (
    "set -u; "
    f"systemctl stop {layout.BACKUP_TIMER_NAME} {layout.BACKUP_SERVICE_NAME} 2>/dev/null || true; "
    "if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then "
    "docker ps -q | xargs -r docker stop --time 30 >/dev/null; fi; "
    "systemctl stop docker.socket docker.service 2>/dev/null || true; "
    "sync; "
    f"if mountpoint -q {layout.DATA_ROOT}; then "
    f"systemctl stop {layout.DATA_MOUNT_UNIT} 2>/dev/null || umount {layout.DATA_ROOT}; fi; "
    f"if mountpoint -q {layout.DATA_ROOT}; then "
    f"echo '{layout.DATA_ROOT} is still mounted: not detaching the volume' >&2; exit 1; fi; "
    f"echo 'docker stopped, {layout.DATA_ROOT} unmounted'"
)


def ssh_options(host_public_key: str, private_key_file: str | None) -> list[str]:
    """ssh flags for Docker's SSH connection helper: strict checking against exactly our host key.

    KnownHostsCommand (OpenSSH >= 8.5) prints the one accepted key for the host (%H); the user's and
    the global known_hosts are ignored so a stale entry from an earlier server cannot interfere.
    """
    key = " ".join(host_public_key.split()[:2])
    options = [
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"KnownHostsCommand=/bin/echo %H {key}",
        "-o", "ConnectTimeout=20",
        "-o", "ServerAliveInterval=30",
    ]  # fmt: skip
    if private_key_file:
        options += ["-o", "IdentitiesOnly=yes", "-i", private_key_file]
    return options


@dataclass
class DockerHostArgs:
    settings: StackSettings
    ipv4_address: pulumi.Input[str]
    host_public_key: pulumi.Input[str]
    server_id: pulumi.Input[str]
    # Resources that must exist before the server is usable (the volume attachment).
    server_ready_after: list[pulumi.Resource]
    private_key: pulumi.Input[str] | None = None
    # The remote readiness Command (wait for cloud-init and the volume; release the volume on
    # delete). Always on in the program; the engine tier (tests/engine), which has no
    # pulumi-command provider, builds the same provider and networks without it.
    readiness_command: bool = True


class DockerHost(pulumi.ComponentResource):
    """Everything Docker-side that the service components share."""

    # Docker resources carry the server ID (a label, or an image trigger): both force a replacement,
    # so a replaced server, which keeps its IP and host key and so the provider configuration, gets
    # its networks and containers re-created instead of Pulumi believing they still exist.
    SERVER_LABEL = "torrust.server-id"

    def __init__(self, name: str, args: DockerHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:DockerHost", name, None, opts)
        settings = args.settings
        self.server_id = args.server_id

        # Shared by every remote command: verifies exactly the generated host key.
        self.connection = command.remote.ConnectionArgs(
            host=args.ipv4_address,
            user=settings.ssh.user,
            host_key=args.host_public_key,
            private_key=args.private_key,
            # A fresh server needs a few minutes before sshd answers.
            dial_error_limit=60,
            per_dial_timeout=20,
        )
        self.ready: command.remote.Command | None = None
        if args.readiness_command:
            self.ready = command.remote.Command(
                f"{name}-ready",
                connection=self.connection,
                create=READINESS_SCRIPT,
                delete=RELEASE_VOLUME_SCRIPT,
                # Nothing reads PULUMI_COMMAND_STDOUT; setting it only warns (our sshd has no AcceptEnv).
                add_previous_output_in_env=False,
                # A replaced server must be waited for again.
                triggers=[args.server_id],
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=args.server_ready_after,
                    # The delete must run on the old server, before its volume is detached; after a
                    # create-before-delete it would stop Docker on the new one (same IP and host key).
                    delete_before_replace=True,
                ),
            )

        # What every Docker resource waits for: the host being ready.
        self.after: list[pulumi.Resource] = [self.ready] if self.ready is not None else []

        private_key_file = settings.ssh.private_key_file
        self.provider = docker.Provider(
            f"{name}-docker",
            host=pulumi.Output.concat("ssh://", settings.ssh.user, "@", args.ipv4_address),
            ssh_opts=pulumi.Output.from_input(args.host_public_key).apply(
                lambda key: ssh_options(key, private_key_file)
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.after),
        )

        provider_opts = pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=self.after)
        self.networks: dict[str, docker.Network] = {}
        for spec in layout.NETWORKS:
            ipam = [docker.NetworkIpamConfigArgs(subnet=spec.subnet)]
            if spec.subnet6:
                ipam.append(docker.NetworkIpamConfigArgs(subnet=spec.subnet6))
            self.networks[spec.key] = docker.Network(
                f"{name}-net-{spec.key}",
                name=f"torrust-{spec.key}",
                driver="bridge",
                internal=spec.internal,
                ipv6=spec.ipv6,
                ipam_configs=ipam,
                labels=[
                    docker.NetworkLabelArgs(label="torrust.purpose", value=spec.purpose),
                    docker.NetworkLabelArgs(label=self.SERVER_LABEL, value=args.server_id),
                ],
                opts=pulumi.ResourceOptions.merge(
                    provider_opts, pulumi.ResourceOptions(delete_before_replace=True)
                ),
            )

        self.register_outputs({"readiness": self.ready.stdout if self.ready is not None else None})

    @property
    def readiness(self) -> command.remote.Command:
        """The readiness Command (the program always has one; see DockerHostArgs)."""
        assert self.ready is not None, "DockerHost was built without its readiness Command"
        return self.ready


def ssh_command(user: str, ipv4: str, host_public_key: str, private_key_file: str | None = None) -> str:
    """A one-line ssh command that verifies the generated host key, for the sshCommand output.

    Every argument is shell-quoted so that it works pasted into bash/zsh; with ssh.privateKeyFile
    set it names the key (-i, IdentitiesOnly) like the Docker provider does.
    """
    key = " ".join(host_public_key.split()[:2])
    argv = [
        "ssh",
        "-o", f"KnownHostsCommand=/bin/echo %H {key}",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
    ]  # fmt: skip
    if private_key_file:
        argv += ["-o", "IdentitiesOnly=yes", "-i", private_key_file]
    argv.append(f"{user}@{ipv4}")
    return shlex.join(argv)
