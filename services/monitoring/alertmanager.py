"""Alertmanager: routes Prometheus's alerts to the receivers in `alerts` (e-mail, webhook,
Discord, Slack, Telegram). Its config carries the receivers' secrets, so the upload is a secret."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi

from components.containers import ContainerSpec, ServiceArgs, create_service_container
from core import layout
from services.monitoring.alerts import render_alertmanager


@dataclass
class AlertmanagerArgs(ServiceArgs):
    # Receiver secrets that are set (config key -> secret Output); see core.settings.ALERT_SECRET_KEYS.
    receiver_secrets: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)


class Alertmanager(pulumi.ComponentResource):
    def __init__(self, name: str, args: AlertmanagerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:Alertmanager", name, None, opts)
        settings = args.settings
        keys = sorted(args.receiver_secrets)
        values = pulumi.Output.all(*(args.receiver_secrets[key] for key in keys))
        self.config: pulumi.Output[str] = pulumi.Output.secret(
            values.apply(lambda secrets: render_alertmanager(settings, dict(zip(keys, secrets, strict=True))))
        )
        self.container = create_service_container(
            ContainerSpec(
                name=layout.ALERTMANAGER,
                image=settings.images.alertmanager,
                memory_mb=96,
                # Alertmanager writes its silences and notification log on SIGTERM.
                stop_timeout=30,
                uploads={layout.ALERTMANAGER_CONFIG_FILE: self.config},
                command=[
                    f"--config.file={layout.ALERTMANAGER_CONFIG_FILE}",
                    # The image's anonymous volume: silences and the notification log live until
                    # the container is re-created (a re-notification then is harmless).
                    "--storage.path=/alertmanager",
                    f"--web.listen-address=:{layout.ALERTMANAGER_PORT}",
                    # One instance: no HA gossip listener (it would bind 9094 and look for peers).
                    "--cluster.listen-address=",
                ],
                healthcheck=[
                    "CMD",
                    "wget",
                    "-q",
                    "--spider",
                    f"http://127.0.0.1:{layout.ALERTMANAGER_PORT}/-/healthy",
                ],
                # The image runs as nobody and needs no capability.
            ),
            args.docker_host,
            self,
        )
        self.register_outputs({"container": self.container.name})
