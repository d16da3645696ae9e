"""Shared wiring for the service containers (not a component: a helper the components call).

Every container gets the same baseline: a pinned image, restart unless-stopped, explicit log
rotation (so the daemon default never shows as a diff), no-new-privileges, a memory limit, the
networks and fixed addresses from core.layout, delete_before_replace (fixed names and host ports
would collide with create-before-delete) and a dependency on the host being ready.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from components.docker_host import DockerHost
from core import layout
from core.settings import StackSettings

LOG_OPTS = {"max-size": "10m", "max-file": "5"}
SERVER_LABEL = DockerHost.SERVER_LABEL


@dataclass
class ServiceArgs:
    """What every service component needs: settings and the Docker host (networks, readiness)."""

    settings: StackSettings
    docker_host: DockerHost
    # More resources the containers wait for (the DNS gate, for the edges).
    after: Sequence[pulumi.Resource] = field(default=(), kw_only=True)


def secret_env(name: str, value: pulumi.Input[str]) -> pulumi.Output[str]:
    """A NAME=value environment entry that stays a Pulumi secret (state, previews, plan)."""
    entry: pulumi.Output[str] = pulumi.Output.secret(pulumi.Output.concat(name, "=", value))
    return entry


IPV4_ANY = "0.0.0.0"
IPV6_ANY = "::"


@dataclass(frozen=True)
class PublishedPort:
    port: int
    protocol: str = "tcp"
    # Host addresses to publish on. A port is published on IPv6 only when the process behind it
    # listens on IPv6: with ip6tables, Docker DNATs IPv6 traffic to the container's IPv6 address,
    # where an IPv4-only listener refuses it.
    families: tuple[str, ...] = (IPV4_ANY, IPV6_ANY)


@dataclass
class ContainerSpec:
    """What differs between our containers; everything else is the shared baseline."""

    name: str
    image: str
    memory_mb: int
    # Seconds between the stop signal and SIGKILL, for `docker stop` and for Pulumi's delete
    # (destroy_grace_seconds below): every container states it, none inherits a default.
    stop_timeout: int
    env: Sequence[pulumi.Input[str]] = ()
    uploads: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    volumes: Mapping[str, str] = field(default_factory=dict)  # host path -> container path
    # Read-only bind mounts with rslave propagation (host path -> container path): a view of host
    # file systems that follows mounts made after the container starts (node exporter).
    read_only_host_mounts: Mapping[str, str] = field(default_factory=dict)
    published: Sequence[PublishedPort] = ()
    healthcheck: Sequence[str] | None = None
    command: Sequence[str] | None = None
    # Linux capabilities added back after dropping ALL (docs/decisions/0006-container-privileges.md).
    capabilities: Sequence[str] = ()
    # Open-file limit for containers that hold many sockets (Rust programs don't raise it themselves).
    nofile: int | None = None
    stop_signal: str | None = None
    # uid:gid to run as, for images that would otherwise run as root without needing it.
    user: str | None = None
    # Networks and fixed addresses, when they differ from layout.MEMBERSHIP[name] (a variant).
    networks: Sequence[tuple[str, str | None]] | None = None


def publish_ports(ports: Sequence[PublishedPort]) -> list[docker.ContainerPortArgs]:
    """Docker's provider binds 0.0.0.0 only unless told otherwise: name each family explicitly."""
    result = []
    for port in ports:
        for ip in port.families:
            result.append(
                docker.ContainerPortArgs(
                    internal=port.port, external=port.port, protocol=port.protocol, ip=ip
                )
            )
    return result


def create_service_container(
    spec: ContainerSpec, host: DockerHost, parent: pulumi.Resource, after: Sequence[pulumi.Resource] = ()
) -> docker.Container:
    networks, ready = host.networks, host.after
    image = docker.RemoteImage(
        f"{spec.name}-image",
        name=spec.image,
        keep_locally=True,
        # A replaced server (same IP, same host key, so the same provider config) starts empty:
        # the server ID makes Pulumi pull the image and re-create the container there.
        triggers={SERVER_LABEL: host.server_id},
        opts=pulumi.ResourceOptions(parent=parent, depends_on=ready),
    )
    networks_advanced = [
        docker.ContainerNetworksAdvancedArgs(
            name=networks[key].name, aliases=[spec.name], ipv4_address=address
        )
        for key, address in (spec.networks if spec.networks is not None else layout.MEMBERSHIP[spec.name])
    ]
    uploads = [
        docker.ContainerUploadArgs(file=path, content=content, permissions="0644")
        for path, content in sorted(spec.uploads.items())
    ]
    volumes = [
        docker.ContainerVolumeArgs(host_path=host, container_path=inside)
        for host, inside in sorted(spec.volumes.items())
    ]
    mounts = [
        docker.ContainerMountArgs(
            type="bind",
            source=host,
            target=inside,
            read_only=True,
            bind_options=docker.ContainerMountBindOptionsArgs(propagation="rslave"),
        )
        for host, inside in sorted(spec.read_only_host_mounts.items())
    ]
    healthcheck = (
        docker.ContainerHealthcheckArgs(
            tests=list(spec.healthcheck), interval="15s", timeout="5s", retries=3, start_period="30s"
        )
        if spec.healthcheck
        else None
    )
    return docker.Container(
        spec.name,
        name=spec.name,
        image=image.name,
        restart="unless-stopped",
        envs=list(spec.env) or None,
        uploads=uploads or None,
        volumes=volumes or None,
        mounts=mounts or None,
        ports=publish_ports(spec.published) or None,
        networks_advanced=networks_advanced,
        healthcheck=healthcheck,
        command=list(spec.command) if spec.command else None,
        memory=spec.memory_mb,
        # No swap. With only `memory` set, Docker stores MemorySwap = 2 x Memory, the provider reads
        # it back into state, and every `up` shows an update (kreuzwerker/terraform-provider-docker
        # v4.5.0 internal/provider/resource_docker_container_funcs.go: Read sets memory_swap;
        # resource_docker_container.go: memory_swap is Optional, not Computed).
        memory_swap=spec.memory_mb,
        log_driver="json-file",
        log_opts=LOG_OPTS,
        security_opts=["no-new-privileges:true"],
        labels=[docker.ContainerLabelArgs(label=SERVER_LABEL, value=host.server_id)],
        capabilities=docker.ContainerCapabilitiesArgs(drops=["ALL"], adds=sorted(spec.capabilities) or None),
        ulimits=[docker.ContainerUlimitArgs(name="nofile", soft=spec.nofile, hard=spec.nofile)]
        if spec.nofile
        else None,
        stop_signal=spec.stop_signal,
        stop_timeout=spec.stop_timeout,
        # The provider's Delete stops with a timeout of 0 (SIGKILL at once) unless this is set; it
        # overrides the container's own stop timeout (kreuzwerker/terraform-provider-docker v4.5.0
        # internal/provider/resource_docker_container_funcs.go, resourceDockerContainerDelete).
        destroy_grace_seconds=spec.stop_timeout,
        user=spec.user,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=[*ready, image, *after],
            delete_before_replace=True,
            # `healthcheck` is neither ForceNew nor handled by the provider's Update (which only
            # touches restart, CPU, memory and device limits: resource_docker_container_funcs.go,
            # resourceDockerContainerUpdate), so an edited check would never reach the container.
            replace_on_changes=["healthcheck"],
        ),
    )
