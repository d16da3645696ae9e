"""Local builds of every image the plan names (no container registry here).

One Debian 12 rootfs (tests/e2e/build_base.sh, mmdebstrap, cached as a tarball) is imported once
per data root; each plan image is then a small `docker build` on top of it that only adds files
(COPY, ENV, USER, ENTRYPOINT/CMD: the containers have no network to run apt in). The image is
tagged with the exact name the plan uses, so the replay creates containers from plan.json's names.

BUILDERS maps an image repository (the plan's image name without its tag) to a builder. An image
repository with no builder fails the tier (UnknownImageError) instead of being skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("TORRUST_CACHE", "/var/cache/torrust-hybrid-tls"))
TRACKER_VERSION = "3.0.0"
TRACKER_BIN = Path(os.environ.get("TORRUST_TRACKER_BIN", CACHE / f"tracker-{TRACKER_VERSION}" / "bin"))
JSON_EXPORTER_VERSION = "v0.7.0"


class UnknownImageError(RuntimeError):
    pass


class MissingArtifactError(RuntimeError):
    pass


@dataclass
class Context:
    """A build context: Dockerfile lines plus files placed under rootfs/ (copied to / in one layer)."""

    lines: list[str]
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # path in image -> (data, mode)
    dirs: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # path in image -> target

    def tar(self, base: str) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            has_rootfs = bool(self.files or self.dirs or self.links)
            dockerfile = [f"FROM {base}", *(["COPY rootfs/ /"] if has_rootfs else []), *self.lines]
            add(tar, "Dockerfile", "\n".join(dockerfile).encode() + b"\n", 0o644)
            for path in self.dirs:
                info = tarfile.TarInfo(f"rootfs/{path.strip('/')}")
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            for path, (data, mode) in self.files.items():
                add(tar, f"rootfs/{path.strip('/')}", data, mode)
            for path, target in self.links.items():
                info = tarfile.TarInfo(f"rootfs/{path.strip('/')}")
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
        return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def binary(path: Path, what: str, fix: str) -> bytes:
    if not path.is_file():
        raise MissingArtifactError(f"{what}: {path} does not exist; {fix}")
    return path.read_bytes()


# --- Builders, one per upstream image -------------------------------------------------------------


def tracker(tag: str) -> Context:
    """torrust/tracker: the real v3.0.0 binaries + the official image's entry contract.

    Contract from torrust/torrust-tracker v3.0.0 `Containerfile` (runtime + release stages): binaries
    in /usr/bin (torrust-tracker, http_health_check), ENV TORRUST_TRACKER_CONFIG_TOML_PATH, USER_ID,
    UDP_PORT, HTTP_PORT, API_PORT, HEALTH_CHECK_API_PORT, TZ, RUNTIME=release, VOLUMEs on the lib, log
    and config folders, ENTRYPOINT entry.sh, CMD /usr/bin/torrust-tracker. Any plan tag gets v3.0.0.
    """
    fix = "build it with tests/e2e/build_tracker.sh (cargo install, ~20-30 min cold)"
    return Context(
        lines=[
            "ENV TORRUST_TRACKER_CONFIG_TOML_PATH=/etc/torrust/tracker/tracker.toml USER_ID=1000 "
            "UDP_PORT=6969 HTTP_PORT=7070 API_PORT=1212 HEALTH_CHECK_API_PORT=1313 TZ=Etc/UTC "
            "ENV=/etc/profile RUNTIME=release",
            'VOLUME ["/var/lib/torrust/tracker","/var/log/torrust/tracker","/etc/torrust/tracker"]',
            'ENTRYPOINT ["/usr/local/bin/entry.sh"]',
            'CMD ["/usr/bin/torrust-tracker"]',
        ],
        files={
            "/usr/bin/torrust-tracker": (binary(TRACKER_BIN / "torrust-tracker", "tracker", fix), 0o755),
            "/usr/bin/http_health_check": (binary(TRACKER_BIN / "http_health_check", "tracker", fix), 0o755),
            "/usr/local/bin/entry.sh": ((HERE / "images/tracker/entry.sh").read_bytes(), 0o755),
        },
        dirs=["/var/lib/torrust/tracker", "/var/log/torrust/tracker", "/etc/torrust/tracker"],
    )


def nginx_certbot(tag: str) -> Context:
    """jonasal/nginx-certbot: Debian's nginx 1.22 + certbot 2.1 (the image: nginx 1.31, certbot 5).

    The user `nginx` (uid 101) is the official nginx image's (nginx/docker-nginx mainline/debian/
    Dockerfile: useradd --system ... --uid 101 nginx), which the nginx edge's rendered nginx.conf
    names; the one build step that is not a file (useradd, no network needed)."""
    redirector = b"# the image's own redirector.conf; the plan uploads its replacement\n"
    return Context(
        lines=[
            "RUN useradd --system --no-create-home --home /nonexistent --shell /bin/false --uid 101 nginx"
            " || useradd --system --no-create-home --home /nonexistent --shell /bin/false nginx",
            'CMD ["/usr/local/bin/start_nginx_certbot.sh"]',
            "STOPSIGNAL SIGTERM",
        ],
        files={
            "/usr/local/bin/start_nginx_certbot.sh": (
                (HERE / "images/nginx-certbot/start_nginx_certbot.sh").read_bytes(),
                0o755,
            ),
            "/etc/nginx/nginx.conf": ((HERE / "images/nginx-certbot/nginx.conf").read_bytes(), 0o644),
            "/etc/nginx/conf.d/redirector.conf": (redirector, 0o644),
        },
        dirs=["/etc/nginx/user_conf.d", "/var/www/letsencrypt", "/etc/letsencrypt"],
    )


def pingoo(tag: str) -> Context:
    """pingooio/pingoo: stand-in (images/pingoo/pingoo_standin.py); runs as root like v0.14.7."""
    return Context(
        lines=["WORKDIR /home/pingoo", 'ENTRYPOINT ["python3", "/usr/local/bin/pingoo_standin.py"]'],
        files={
            "/usr/local/bin/pingoo_standin.py": (
                (HERE / "images/pingoo/pingoo_standin.py").read_bytes(),
                0o755,
            )
        },
        dirs=["/etc/pingoo/tls", "/home/pingoo"],
    )


def grafana(tag: str) -> Context:
    """grafana/grafana: stand-in (images/grafana/grafana_standin.py); uid 472 like the image."""
    return Context(
        lines=["USER 472:0", 'ENTRYPOINT ["python3", "/usr/local/bin/grafana_standin.py"]'],
        files={
            "/usr/local/bin/grafana_standin.py": (
                (HERE / "images/grafana/grafana_standin.py").read_bytes(),
                0o755,
            )
        },
        dirs=["/var/lib/grafana", "/etc/grafana"],
    )


def debian_prometheus_tool(
    binary_path: str, upstream_name: str, default_cmd: list[str], workdir: str
) -> Callable[[str], Context]:
    """prom/* images from Debian packages; ENTRYPOINT /bin/<upstream name>, USER nobody, as the
    prometheus/* Dockerfiles do (e.g. prometheus/prometheus Dockerfile: USER nobody,
    ENTRYPOINT ["/bin/prometheus"], WORKDIR /prometheus)."""

    def build(tag: str) -> Context:
        return Context(
            lines=[
                "USER 65534:65534",
                f"WORKDIR {workdir}",
                f'ENTRYPOINT ["/bin/{upstream_name}"]',
                f"CMD {json.dumps(default_cmd)}",
            ],
            links={f"/bin/{upstream_name}": binary_path},
            dirs=[workdir],
        )

    return build


def json_exporter(tag: str) -> Context:
    """prometheuscommunity/json-exporter: built from the Go module proxy (cached; needs Go >= 1.21).

    Layout of prometheus-community/json_exporter `Dockerfile`: /bin/json_exporter, USER nobody, no CMD.
    (Its ENTRYPOINT reads "/bin/bind_exporter" at commit 2d1678e, a copy-paste slip; the binary the
    image ships is json_exporter, which is what is used here.)"""
    version = tag if tag.startswith("v") else JSON_EXPORTER_VERSION
    out = CACHE / f"json-exporter-{version}"
    exe = out / "json_exporter"
    if not exe.is_file():
        out.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, GOBIN=str(out), CGO_ENABLED="0", GOFLAGS="-mod=mod")
        subprocess.run(
            ["go", "install", f"github.com/prometheus-community/json_exporter@{version}"],
            check=True, env=env, timeout=1200,
        )  # fmt: skip
    return Context(
        lines=["USER 65534:65534", 'ENTRYPOINT ["/bin/json_exporter"]'],
        files={"/bin/json_exporter": (exe.read_bytes(), 0o755)},
    )


BUILDERS: dict[str, Callable[[str], Context]] = {
    "torrust/tracker": tracker,
    "jonasal/nginx-certbot": nginx_certbot,
    "pingooio/pingoo": pingoo,
    "grafana/grafana": grafana,
    "prom/prometheus": debian_prometheus_tool(
        "/usr/bin/prometheus",
        "prometheus",
        ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"],
        "/prometheus",
    ),
    "prom/alertmanager": debian_prometheus_tool(
        "/usr/bin/prometheus-alertmanager",
        "alertmanager",
        ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"],
        "/alertmanager",
    ),
    "prom/blackbox-exporter": debian_prometheus_tool(
        "/usr/bin/prometheus-blackbox-exporter",
        "blackbox_exporter",
        ["--config.file=/etc/blackbox_exporter/config.yml"],
        "/",
    ),
    "prom/node-exporter": debian_prometheus_tool(
        "/usr/bin/prometheus-node-exporter", "node_exporter", [], "/"
    ),
    "prometheuscommunity/json-exporter": json_exporter,
}


def split_image(name: str) -> tuple[str, str]:
    repository, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    return repository.removeprefix("docker.io/"), tag


def base_tarball() -> Path:
    result = subprocess.run(
        [str(HERE / "build_base.sh")], check=True, capture_output=True, text=True, timeout=1800
    )
    return Path(result.stdout.strip().splitlines()[-1])


def ensure_images(client: docker.DockerClient, names: list[str], log: Callable[[str], None]) -> None:
    """Build (or reuse) an image for every plan image name; unknown repositories fail first."""
    unknown = sorted({split_image(n)[0] for n in names} - set(BUILDERS))
    if unknown:
        raise UnknownImageError(
            f"plan.json names image repositories the e2e tier has no builder for: {unknown}; "
            "add one to BUILDERS in tests/e2e/images.py"
        )
    tarball = base_tarball()
    base = f"te2e-base:{tarball.stem.rsplit('-', 1)[-1]}"
    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        log(f"importing {tarball} as {base}")
        client.api.import_image(src=str(tarball), repository=base.split(":")[0], tag=base.split(":")[1])
        client.images.get(base)
    for name in names:
        repository, tag = split_image(name)
        context = BUILDERS[repository](tag).tar(base)
        digest = hashlib.sha256(context).hexdigest()[:16]
        try:
            if client.images.get(name).labels.get("te2e.context") == digest:
                continue
        except docker.errors.ImageNotFound:
            pass
        log(f"building {name}")
        labelled = context  # the label makes a rebuild happen exactly when the context changed
        client.images.build(
            fileobj=io.BytesIO(labelled),
            custom_context=True,
            tag=name,
            labels={"te2e.context": digest},
            rm=True,
        )


def cache_dir(name: str) -> Path:
    path = CACHE / name
    path.mkdir(parents=True, exist_ok=True)
    return path
