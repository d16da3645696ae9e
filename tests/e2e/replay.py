"""Replay of plan.json's Docker resources on a real dockerd with the `docker` SDK.

plan.json is the input; nothing here re-describes a container. Every input key of a Docker network
or container resource is either in REPLAYED (handled below) or in NOT_REPLAYED with its reason;
a key on neither list raises UnreplayedInputError, so a new input in the program cannot silently
stay untested. Plan secrets are "[secret]" in plan.json: the tier renders the plan with known test
secrets and takes the value at exactly those places from the unmasked inputs (`merge_secrets`).
"""

from __future__ import annotations

import io
import re
import resource
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.types import LogConfig, Ulimit

SECRET = "[secret]"
DATA_VOLUME = "/srv/torrust"

NETWORK_REPLAYED = {"name", "driver", "internal", "ipv6", "ipamConfigs", "labels"}
NETWORK_NOT_REPLAYED: dict[str, str] = {}

CONTAINER_REPLAYED = {
    "name", "image", "command", "envs", "labels", "uploads", "volumes", "networksAdvanced", "ports",
    "capabilities", "securityOpts", "memory", "memorySwap", "ulimits", "sysctls", "stopSignal",
    "stopTimeout", "healthcheck", "restart", "logDriver", "logOpts", "entrypoints", "user",
    "workingDir", "readOnly", "tmpfs", "shmSize", "init", "mounts",
}  # fmt: skip
CONTAINER_NOT_REPLAYED: dict[str, str] = {
    "destroyGraceSeconds": "Pulumi provider behaviour on delete, not a Docker setting",
    "wait": "Pulumi provider waits for healthy on `up`; the tier waits for health itself",
    "waitTimeout": "Pulumi provider wait bound; the tier has its own bounded waits",
    "mustRun": "Pulumi provider check; the tier asserts every container runs",
    "rm": "Pulumi provider flag; the tier removes what it created",
    "start": "Pulumi provider flag; the tier starts every container",
}

IMAGE_TYPES = {"docker:index/remoteImage:RemoteImage"}
NETWORK_TYPE = "docker:index/network:Network"
CONTAINER_TYPE = "docker:index/container:Container"
# Accepted in image resources: the tier builds the image locally instead of pulling it.
IMAGE_NOT_REPLAYED = {
    "keepLocally": "no registry: images are built locally (tests/e2e/images.py)",
    "triggers": "Pulumi re-pull trigger; no registry here",
    "pullTriggers": "Pulumi re-pull trigger; no registry here",
    "platform": "single-platform local build",
}


class UnreplayedInputError(AssertionError):
    pass


def merge_secrets(masked: Any, revealed: Any, where: str = "") -> Any:
    """plan.json's value, with "[secret]" replaced by the revealed value at the same place."""
    if masked == SECRET:
        return revealed
    if isinstance(masked, dict):
        assert isinstance(revealed, dict) and set(masked) == set(revealed), (
            f"{where}: plan and test render differ"
        )
        return {k: merge_secrets(v, revealed[k], f"{where}.{k}") for k, v in masked.items()}
    if isinstance(masked, list):
        assert isinstance(revealed, list) and len(masked) == len(revealed), (
            f"{where}: plan and test render differ"
        )
        return [
            merge_secrets(v, r, f"{where}[{i}]")
            for i, (v, r) in enumerate(zip(masked, revealed, strict=True))
        ]
    assert masked == revealed, f"{where}: plan.json has {masked!r}, the test render {revealed!r}"
    return masked


def check_inputs(
    kind: str, name: str, inputs: dict[str, Any], replayed: set[str], not_replayed: dict[str, str]
) -> None:
    unknown = sorted(set(inputs) - replayed - set(not_replayed))
    if unknown:
        raise UnreplayedInputError(
            f"{kind} {name}: plan inputs {unknown} are neither replayed nor listed in NOT_REPLAYED "
            "(tests/e2e/replay.py) with a reason"
        )


def duration_ns(text: str) -> int:
    units = {
        "ns": 1,
        "us": 1_000,
        "ms": 1_000_000,
        "s": 1_000_000_000,
        "m": 60_000_000_000,
        "h": 3_600_000_000_000,
    }
    total = 0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text):
        total += int(float(number) * units[unit])
    assert total or text in ("0", "0s"), f"cannot parse duration {text!r}"
    return total


def rlimit_allowed(name: str, value: int) -> bool:
    """Whether this machine lets root raise limit `name` to `value` (some sandboxes cap it)."""
    flag = {"nofile": "--nofile", "nproc": "--nproc", "memlock": "--memlock", "core": "--core"}.get(name)
    if flag is None:
        return True
    probe = subprocess.run(["prlimit", f"{flag}={value}:{value}", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


def ulimit_ceiling(name: str) -> int:
    if name != "nofile":
        raise AssertionError(f"no ceiling known for ulimit {name}")
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


@dataclass
class Replay:
    client: docker.DockerClient
    scratch: Path  # stands for the data volume's mount point /srv/torrust
    log: Callable[[str], None] = print
    differences: list[str] = field(default_factory=list)  # forced by this machine, printed by the tier
    # Stands for the server's `/` (host mounts such as the node exporter's); holds `scratch` at
    # srv/torrust, as the server's root holds the data volume.
    host_root: Path | None = None
    # Name -> address entries per container, standing for public DNS (none here): the blackbox
    # exporter probes the public names, which resolve to the server's address on the internet.
    extra_hosts: dict[str, dict[str, str]] = field(default_factory=dict)

    def difference(self, note: str) -> None:
        if note not in self.differences:
            self.differences.append(note)
            self.log(note)

    def mount(self, name: str, item: dict[str, Any]) -> Any:
        """A `mounts` entry (bind only): the server's paths map into host_root."""
        assert item["type"] == "bind", f"{name}: mount type {item['type']} is not replayed"
        assert self.host_root is not None, f"{name}: a host mount needs Replay.host_root"
        source = str(self.host_root / item["source"].lstrip("/"))
        propagation = (item.get("bindOptions") or {}).get("propagation")
        if propagation in ("rslave", "slave", "rshared", "shared"):
            # Docker refuses slave/shared propagation from a source on a private mount (the moby
            # daemon's ensureSharedOrSlave); this machine's / is private, a server's (systemd) is
            # shared. The mount is read-only and made before the container starts either way.
            self.difference(
                f"{name}: mount {item['target']} replayed without {propagation} propagation "
                "(the test machine's / is a private mount)"
            )
            propagation = None
        return docker.types.Mount(
            target=item["target"],
            source=source,
            type="bind",
            read_only=bool(item.get("readOnly")),
            propagation=propagation,
        )

    def ulimits(self, name: str, items: list[dict[str, Any]]) -> list[Ulimit]:
        result = []
        for item in items:
            soft, hard = int(item["soft"]), int(item["hard"])
            if not rlimit_allowed(item["name"], hard):
                # CI's root can raise it; a sandbox that caps the hard limit cannot (runc fails with
                # "error setting rlimits ... operation not permitted"). Clamp, and say so.
                ceiling = ulimit_ceiling(item["name"])
                note = (
                    f"{name}: ulimit {item['name']} {soft}:{hard} clamped to {ceiling} (this machine's limit)"
                )
                self.difference(note)
                soft, hard = min(soft, ceiling), min(hard, ceiling)
            result.append(Ulimit(name=item["name"], soft=soft, hard=hard))
        return result

    def host_path(self, path: str) -> str:
        assert path == DATA_VOLUME or path.startswith(DATA_VOLUME + "/"), (
            f"volume host path {path} is outside {DATA_VOLUME}, the data volume"
        )
        return str(self.scratch / path[len(DATA_VOLUME) :].lstrip("/"))

    def network(self, inputs: dict[str, Any]) -> None:
        check_inputs("network", inputs["name"], inputs, NETWORK_REPLAYED, NETWORK_NOT_REPLAYED)
        pools = [
            docker.types.IPAMPool(subnet=c["subnet"], gateway=c.get("gateway")) for c in inputs["ipamConfigs"]
        ]
        self.client.networks.create(
            inputs["name"],
            driver=inputs.get("driver", "bridge"),
            internal=bool(inputs.get("internal")),
            enable_ipv6=bool(inputs.get("ipv6")),
            ipam=docker.types.IPAMConfig(pool_configs=pools),
            labels={item["label"]: item["value"] for item in inputs.get("labels", [])},
        )

    def create(self, inputs: dict[str, Any], extra_env: dict[str, str] | None = None) -> str:
        name = inputs["name"]
        check_inputs("container", name, inputs, CONTAINER_REPLAYED, CONTAINER_NOT_REPLAYED)
        api = self.client.api
        ports: list[Any] = []
        bindings: dict[str, list[tuple[str, int]]] = {}
        for port in inputs.get("ports", []):
            key = f"{int(port['internal'])}/{port.get('protocol', 'tcp')}"
            if key not in bindings:
                ports.append((int(port["internal"]), port.get("protocol", "tcp")))
            bindings.setdefault(key, []).append((port.get("ip", "0.0.0.0"), int(port["external"])))
        binds = {}
        for volume in inputs.get("volumes", []):
            mode = "ro" if volume.get("readOnly") else "rw"
            binds[self.host_path(volume["hostPath"])] = {"bind": volume["containerPath"], "mode": mode}
        caps = inputs.get("capabilities") or {}
        memory = inputs.get("memory")
        swap = inputs.get("memorySwap")
        host_config = api.create_host_config(
            port_bindings=bindings,
            binds=binds,
            restart_policy={"Name": inputs["restart"]} if inputs.get("restart") else None,
            ulimits=self.ulimits(name, inputs.get("ulimits", [])),
            security_opt=inputs.get("securityOpts"),
            cap_drop=caps.get("drops"),
            cap_add=caps.get("adds"),
            # The docker provider's memory and memorySwap are MiB (terraform-provider-docker container docs).
            mem_limit=f"{int(memory)}m" if memory else None,
            memswap_limit=(-1 if int(swap) == -1 else f"{int(swap)}m") if swap is not None else None,
            sysctls=inputs.get("sysctls"),
            log_config=LogConfig(
                type=inputs.get("logDriver", "json-file"), config=inputs.get("logOpts") or {}
            ),
            read_only=inputs.get("readOnly"),
            tmpfs=inputs.get("tmpfs"),
            shm_size=f"{int(inputs['shmSize'])}m" if inputs.get("shmSize") else None,
            init=inputs.get("init"),
            mounts=[self.mount(name, item) for item in inputs.get("mounts", [])] or None,
            extra_hosts=self.extra_hosts.get(name),
        )
        networks = inputs.get("networksAdvanced", [])

        def endpoint(net: dict[str, Any]) -> Any:
            return api.create_endpoint_config(
                aliases=net.get("aliases"),
                ipv4_address=net.get("ipv4Address"),
                ipv6_address=net.get("ipv6Address"),
            )

        networking = (
            api.create_networking_config({networks[0]["name"]: endpoint(networks[0])}) if networks else None
        )
        health = inputs.get("healthcheck")
        healthcheck = (
            {
                "test": health["tests"],
                "interval": duration_ns(health.get("interval", "0s")),
                "timeout": duration_ns(health.get("timeout", "0s")),
                "retries": int(health.get("retries", 0)),
                "start_period": duration_ns(health.get("startPeriod", "0s")),
            }
            if health
            else None
        )
        env = list(inputs.get("envs", [])) + [f"{k}={v}" for k, v in (extra_env or {}).items()]
        container = api.create_container(
            inputs["image"],
            command=inputs.get("command"),
            entrypoint=inputs.get("entrypoints"),
            user=inputs.get("user"),
            working_dir=inputs.get("workingDir"),
            name=name,
            environment=env,
            labels={item["label"]: item["value"] for item in inputs.get("labels", [])},
            stop_signal=inputs.get("stopSignal"),
            stop_timeout=int(inputs["stopTimeout"]) if "stopTimeout" in inputs else None,
            healthcheck=healthcheck,
            ports=ports,
            host_config=host_config,
            networking_config=networking,
        )
        container_id: str = container["Id"]
        for net in networks[1:]:
            api.connect_container_to_network(
                container_id,
                net["name"],
                aliases=net.get("aliases"),
                ipv4_address=net.get("ipv4Address"),
                ipv6_address=net.get("ipv6Address"),
            )
        uploads = inputs.get("uploads", [])
        if uploads:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for upload in uploads:
                    data = upload["content"].encode()
                    info = tarfile.TarInfo(upload["file"].lstrip("/"))
                    info.size, info.mode = len(data), int(upload.get("permissions", "0644"), 8)
                    info.mtime = int(time.time())
                    tar.addfile(info, io.BytesIO(data))
            assert api.put_archive(container_id, "/", buffer.getvalue()), f"{name}: upload failed"
        return container_id


def docker_resources(plan: dict[str, Any], revealed: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, name, inputs with secrets) for every docker resource of the plan, in plan order."""
    result = []
    for record in plan["resources"]:
        kind = record["type"]
        if not kind.startswith("docker:"):
            continue
        inputs = merge_secrets(record["inputs"], revealed[record["name"]], record["name"])
        if kind in IMAGE_TYPES:
            check_inputs("image", record["name"], inputs, {"name"}, IMAGE_NOT_REPLAYED)
        elif kind not in (NETWORK_TYPE, CONTAINER_TYPE):
            raise UnreplayedInputError(f"plan resource type {kind} ({record['name']}) is not replayed")
        result.append((kind, record["name"], inputs))
    return result
