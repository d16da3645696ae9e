"""The Torrust tracker: UDP published directly, HTTP trackers and REST API only behind Pingoo."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.containers import (
    ContainerSpec,
    PublishedPort,
    ServiceArgs,
    create_service_container,
    secret_env,
)
from core import layout
from core.settings import StackSettings
from services.tracker.render import render_tracker_toml

ADMIN_TOKEN_ENV = "TORRUST_TRACKER_CONFIG_OVERRIDE_HTTP_API__ACCESS_TOKENS__ADMIN"


def tracker_env(settings: StackSettings, admin_token: pulumi.Input[str]) -> list[pulumi.Input[str]]:
    return [
        f"USER_ID={layout.TRACKER_UID}",
        f"TORRUST_TRACKER_CONFIG_TOML_PATH={layout.TRACKER_CONFIG_FILE}",
        # Required by the image's entry script (it exits when unset).
        f"TORRUST_TRACKER_CONFIG_OVERRIDE_CORE__DATABASE__DRIVER={settings.tracker.database}",
        secret_env(ADMIN_TOKEN_ENV, admin_token),
    ]


@dataclass
class TrackerArgs(ServiceArgs):
    admin_token: pulumi.Input[str]


class Tracker(pulumi.ComponentResource):
    def __init__(self, name: str, args: TrackerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:Tracker", name, None, opts)
        settings = args.settings
        self.config_text = render_tracker_toml(settings)
        self.container = create_service_container(
            ContainerSpec(
                name=layout.TRACKER,
                image=settings.images.tracker,
                # With the alerting services and json_exporter, the cx23 budget (4 GB less 800 MB) holds.
                memory_mb=1472,
                env=tracker_env(settings, args.admin_token),
                uploads={layout.TRACKER_CONFIG_FILE: self.config_text},
                volumes={
                    layout.TRACKER_LIB_DIR: layout.TRACKER_LIB_MOUNT,
                    layout.TRACKER_LOG_DIR: layout.TRACKER_LOG_MOUNT,
                },
                published=[PublishedPort(port, "udp") for port in settings.tracker.udp_ports],
                # The entry script runs as root: adduser, chown/chmod -R, install, then su-exec to
                # USER_ID; the tracker itself runs without capabilities.
                capabilities=["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"],
                nofile=1048576,
                # The tracker waits for Ctrl-C (SIGINT) only; SIGTERM would run into the kill timeout.
                stop_signal="SIGINT",
                stop_timeout=30,
                healthcheck=[
                    "CMD",
                    "/usr/bin/http_health_check",
                    f"http://127.0.0.1:{layout.TRACKER_HEALTH_PORT}/health_check",
                ],
            ),
            args.docker_host,
            self,
        )
        self.register_outputs({"container": self.container.name})
