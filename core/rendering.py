"""Pure rendering: settings (and, where needed, secret values) in, file text out.

Nothing here touches Pulumi, so every template is testable on its own and the offline plan writes
exactly these strings. Templates use StrictUndefined: a missing variable is an error, not "".

This module holds the one Jinja setup every service uses (`Templates`: one folder of templates) and
the host-level files (cloud-init, daemon.json, the metadata block). Each service renders its own
files from its own folder (services/<service>/render.py, services/<service>/templates/).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from core import layout
from core.settings import DOCKER_CE_IMAGE, StackSettings

# Host-level templates (cloud-init, the DNS gate's script); services keep theirs in their folder.
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def _quote(value: object) -> str:
    """A double-quoted string (or bool/number) valid in YAML, TOML and nginx alike.

    Jinja's own `tojson` HTML-escapes <, > and &, which is noise in config files.
    """
    return json.dumps(value, ensure_ascii=False)


class Templates:
    """One folder of templates, rendered with the house settings (StrictUndefined, `quote`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._env = Environment(
            loader=FileSystemLoader(str(folder)),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )
        self._env.filters["quote"] = _quote

    def render(self, name: str, **context: object) -> str:
        return self._env.get_template(name).render(**context)

    def text(self, name: str) -> str:
        """A static file of the folder, as is."""
        return (self.folder / name).read_text()


HOST_TEMPLATES = Templates(TEMPLATES_DIR)


def render_template(name: str, **context: object) -> str:
    """A host-level template (templates/)."""
    return HOST_TEMPLATES.render(name, **context)


def image_version(image: str) -> str:
    """The tag of an image reference (for comments), or its digest when it has no tag."""
    name = image.split("@")[0]
    tail = name.rsplit("/", 1)[-1]
    return tail.split(":", 1)[1] if ":" in tail else image.split("@")[-1]


@dataclass(frozen=True)
class HostDirectory:
    path: str
    owner: int
    group: int
    mode: str


def host_directories() -> list[HostDirectory]:
    """Data directories with the owners the images need (created by cloud-init)."""
    return [
        HostDirectory(layout.DATA_ROOT, 0, 0, "0755"),
        HostDirectory(layout.PINGOO_TLS_DIR.rsplit("/", 1)[0], 0, 0, "0700"),
        HostDirectory(layout.PINGOO_TLS_DIR, 0, 0, "0700"),
        HostDirectory(layout.LETSENCRYPT_DIR, 0, 0, "0700"),
        HostDirectory(
            layout.TRACKER_LIB_DIR.rsplit("/", 1)[0], layout.TRACKER_UID, layout.TRACKER_UID, "0750"
        ),
        HostDirectory(layout.TRACKER_LIB_DIR, layout.TRACKER_UID, layout.TRACKER_UID, "0750"),
        HostDirectory(f"{layout.TRACKER_LIB_DIR}/database", layout.TRACKER_UID, layout.TRACKER_UID, "0750"),
        HostDirectory(layout.TRACKER_LOG_DIR, layout.TRACKER_UID, layout.TRACKER_UID, "0750"),
        HostDirectory(layout.GRAFANA_DATA_DIR, layout.GRAFANA_UID, 0, "0750"),
        HostDirectory(layout.PROMETHEUS_DATA_DIR, layout.PROMETHEUS_UID, layout.PROMETHEUS_UID, "0750"),
        HostDirectory(layout.BACKUP_DIR, 0, 0, "0700"),
    ]


DOCKER_DAEMON = {
    # Log rotation for every container; the containers also set it explicitly so that the
    # daemon default never shows up as a diff (kreuzwerker/terraform-provider-docker#473).
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "5"},
    # Publish ports on IPv6 too (needs Docker >= 27 for a non-experimental ip6tables).
    "ip6tables": True,
    "live-restore": True,
}

# Conntrack table size for UDP tracker load; the demo tracker ran 1M at ~3k req/s.
CONNTRACK_MAX = 1048576


def docker_daemon(settings: StackSettings) -> dict[str, object]:
    """daemon.json for the Docker the image ships (docker-ce) or the distribution's docker.io.

    Distribution docker.io below Docker 27 (Debian 12: 20.10.24) refuses to start with ip6tables
    unless experimental is on: moby daemon/daemon_unix.go verifyDaemonSettings,
    "ip6tables rules are only available if experimental features are enabled" (removed in 27.0).
    tests/test_real_docker_host.py starts the real dockerd 20.10.24 with both files.
    docs/decisions/0011-first-deploy-host.md.
    """
    daemon: dict[str, object] = dict(DOCKER_DAEMON)
    if settings.server.image != DOCKER_CE_IMAGE:
        daemon["experimental"] = True
    return daemon


# Hetzner's metadata service serves the user data, and so the SSH host private key, to anything
# on the server's network path without a token; containers reach it through FORWARD. The rule
# sits in DOCKER-USER, which dockerd jumps to first from FORWARD and never flushes; the script
# runs before dockerd starts (and again with every docker restart) and creates the chain itself.
METADATA_ADDRESS = "169.254.169.254"
METADATA_BLOCK_SCRIPT_PATH = "/usr/local/sbin/torrust-block-metadata"
METADATA_BLOCK_UNIT = "torrust-block-metadata.service"


def metadata_block_script() -> str:
    return render_template(
        "cloud-init/block-metadata.sh.j2",
        address=METADATA_ADDRESS,
    )


def metadata_block_unit() -> str:
    return render_template(
        "cloud-init/block-metadata.service.j2",
        script=METADATA_BLOCK_SCRIPT_PATH,
    )


# sshd's default MaxStartups 10:30:100 drops 30% of new connections once 10 are unauthenticated
# (openssh-portable servconf.c defaults, sshd.c should_drop_connection). The Docker provider opens
# one `ssh … docker system dial-stdio` per operation and runs a dozen at once (docker/cli
# cli/connhelper/connhelper.go); port 22 only admits ssh.allowedCidrs, so a higher limit costs
# nothing. docs/decisions/0011-first-deploy-host.md.
SSHD_MAX_STARTUPS = "100:30:200"


def render_cloud_init(
    settings: StackSettings, host_key_private: str, host_key_public: str, volume_id: str
) -> str:
    return render_template(
        "cloud-init/user-data.yaml.j2",
        stack=settings.stack,
        data_root=layout.DATA_ROOT,
        volume_device=f"{layout.VOLUME_DEVICE_PREFIX}{volume_id}",
        mount_unit=layout.DATA_MOUNT_UNIT,
        volume_wait_seconds=layout.VOLUME_WAIT_SECONDS,
        host_key_private=host_key_private.strip(),
        host_key_public=host_key_public.strip(),
        upgrade_packages=True,
        install_docker=settings.server.image != DOCKER_CE_IMAGE,
        docker_daemon_json=json.dumps(docker_daemon(settings), sort_keys=True),
        sshd_max_startups=SSHD_MAX_STARTUPS,
        metadata_block_script_path=METADATA_BLOCK_SCRIPT_PATH,
        metadata_block_script=metadata_block_script(),
        metadata_block_unit_name=METADATA_BLOCK_UNIT,
        metadata_block_unit=metadata_block_unit(),
        conntrack_max=CONNTRACK_MAX,
        directories=host_directories(),
    )
