"""Node exporter: the host's and the data volume's disk, memory, CPU, and the textfile collector
(the backup job's metrics).

Upstream's Docker recipe (prometheus/node_exporter v1.12.1 README "Docker") bind-mounts the host's
/ read-only with rslave propagation and sets --path.rootfs; it also uses the host's network and PID
namespaces, which we leave out: no host network or process metrics are alerted on, and the file
system collector reads /proc/1/mountinfo (collector/filesystem_linux.go), which in the container's
own PID namespace is the exporter's mount table and so lists the host's mounts under /host.
"""

from __future__ import annotations

import pulumi

from components.containers import ContainerSpec, ServiceArgs, create_service_container
from core import layout


class NodeExporter(pulumi.ComponentResource):
    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:NodeExporter", name, None, opts)
        settings = args.settings
        rootfs = layout.NODE_EXPORTER_ROOTFS
        self.container = create_service_container(
            ContainerSpec(
                name=layout.NODE_EXPORTER,
                image=settings.images.node_exporter,
                memory_mb=48,
                # Stateless exporter: a short grace period is enough to close its connections.
                stop_timeout=10,
                read_only_host_mounts={"/": rootfs},
                command=[
                    f"--path.rootfs={rootfs}",
                    f"--web.listen-address=:{layout.NODE_EXPORTER_PORT}",
                    f"--collector.textfile.directory={rootfs}{layout.NODE_TEXTFILE_DIR}",
                ],
                healthcheck=[
                    "CMD",
                    "wget",
                    "-q",
                    "--spider",
                    f"http://127.0.0.1:{layout.NODE_EXPORTER_PORT}/metrics",
                ],
                # The image runs as nobody; statfs() and world-readable /proc need no capability.
            ),
            args.docker_host,
            self,
        )
        self.register_outputs({"container": self.container.name})
