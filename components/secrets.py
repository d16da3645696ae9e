"""Operator secrets: the configured value when set, otherwise a generated one (pulumi-random)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_random as random

# Letters and digits only: the token travels in URLs (?token=) and environment variables.
GENERATED_LENGTHS = {"trackerAdminToken": 40, "grafanaAdminPassword": 32}


@dataclass
class SecretsArgs:
    # Configured secrets (config key -> secret Output); keys absent here are generated.
    configured: Mapping[str, pulumi.Output[str]]


class Secrets(pulumi.ComponentResource):
    tracker_admin_token: pulumi.Output[str]
    grafana_admin_password: pulumi.Output[str]

    def __init__(self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("torrust:index:Secrets", name, None, opts)
        values: dict[str, pulumi.Output[str]] = {}
        self.generated: list[str] = []
        for key, length in GENERATED_LENGTHS.items():
            if key in args.configured:
                values[key] = pulumi.Output.secret(args.configured[key])
                continue
            password = random.RandomPassword(
                f"{name}-{key}",
                length=length,
                special=False,
                min_lower=4,
                min_upper=4,
                min_numeric=4,
                opts=pulumi.ResourceOptions(parent=self),
            )
            # `result` is a secret output of RandomPassword; keep it explicitly secret anyway.
            values[key] = pulumi.Output.secret(password.result)
            self.generated.append(key)
        self.tracker_admin_token = values["trackerAdminToken"]
        self.grafana_admin_password = values["grafanaAdminPassword"]
        self.register_outputs({"generated": self.generated})
