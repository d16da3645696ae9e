"""The real node exporter (Debian 1.5; the image pins v1.12.1) run the way
services/monitoring/node_exporter.py runs it: its own PID and mount namespaces (like a container
without `--pid=host`), the host's `/` bind-mounted read-only under a scratch "/host",
`--path.rootfs` pointing there, and the textfile collector reading the backup job's directory
through it.

A tmpfs stands in for the data volume: it is mounted, copied into "/host" with the rest of `/`, then
unmounted from its original place, so that — as in the container — it exists only under "/host".
The exporter must report it under its host path (the alert rules select `mountpoint="/srv/torrust"`)
and must read the backup metric written in the documented format.
Needs root and util-linux `unshare` (namespaces are created and vanish with the process).
"""

from __future__ import annotations

import os
import shlex
import urllib.request
from pathlib import Path

import pytest

from services.monitoring import alerts
from tests.realtools import LOOPBACK4, Proc, free_port, missing, require_tool

VOLUME_BYTES = 10 * 1024 * 1024


def scrape(work: Path, *, rootfs: bool, prom_text: str) -> tuple[dict[tuple[str, str], float], str]:
    """Run the exporter once; (metric name, mountpoint or '') -> value, and the raw text."""
    exporter = require_tool("prometheus-node-exporter")
    unshare = require_tool("unshare")
    if os.geteuid() != 0:
        missing("the node exporter test needs root (mount and PID namespaces)")
    host, volume, textdir = work / "host", work / "vol", work / "textfile"
    for path in (host, volume, textdir):
        path.mkdir(parents=True, exist_ok=True)
    (textdir / "backup.prom").write_text(prom_text)
    os.chmod(work, 0o755)
    os.chmod(textdir, 0o755)
    port = free_port()
    text_seen_from_exporter = f"{host}{textdir}" if rootfs else str(textdir)
    argv = [
        exporter,
        *([f"--path.rootfs={host}"] if rootfs else []),
        "--collector.disable-defaults",
        "--collector.filesystem",
        "--collector.textfile",
        f"--collector.textfile.directory={text_seen_from_exporter}",
        f"--web.listen-address={LOOPBACK4}:{port}",
    ]
    script = " && ".join(
        [
            f"mount -t tmpfs -o size={VOLUME_BYTES} tmpfs {shlex.quote(str(volume))}",
            f"mount --rbind / {shlex.quote(str(host))}",
            f"mount -o remount,bind,ro {shlex.quote(str(host))}",
            f"umount {shlex.quote(str(volume))}",
            "exec " + shlex.join(argv),
        ]
    )
    proc = Proc(
        "node-exporter",
        [
            unshare,
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
        ],
        work,
    )
    try:
        proc.wait_for_port(LOOPBACK4, port, timeout=15)
        with urllib.request.urlopen(f"http://{LOOPBACK4}:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        proc.stop()
    metrics: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name = series.split("{", 1)[0]
        mountpoint = ""
        if 'mountpoint="' in series:
            mountpoint = series.split('mountpoint="', 1)[1].split('"', 1)[0]
        metrics[(name, mountpoint)] = float(value)
    return metrics, text


GOOD_PROM = (
    f"# HELP {alerts.BACKUP_METRIC} Last successful backup.\n"
    f"# TYPE {alerts.BACKUP_METRIC} gauge\n"
    f"{alerts.BACKUP_METRIC} 1764100000\n"
)


def test_node_exporter_reports_the_volume_under_its_host_path_and_the_backup_metric(tmp_path: Path) -> None:
    metrics, text = scrape(tmp_path, rootfs=True, prom_text=GOOD_PROM)
    volume = str(tmp_path / "vol")
    assert metrics.get(("node_filesystem_size_bytes", volume)) == VOLUME_BYTES, text[:3000]
    assert ("node_filesystem_avail_bytes", volume) in metrics
    assert not [key for key in metrics if key[1].startswith(str(tmp_path / "host"))], "rootfs prefix leaked"
    assert metrics.get((alerts.BACKUP_METRIC, "")) == 1764100000


def test_mutation_without_rootfs_the_volume_has_the_wrong_mountpoint(tmp_path: Path) -> None:
    """Without --path.rootfs (our flag) the volume shows as /host/... and the disk alert never matches."""
    metrics, _ = scrape(tmp_path, rootfs=False, prom_text=GOOD_PROM)
    volume = str(tmp_path / "vol")
    assert ("node_filesystem_size_bytes", volume) not in metrics
    assert ("node_filesystem_size_bytes", f"{tmp_path / 'host'}{volume}") in metrics


@pytest.mark.parametrize(
    "prom_text",
    [f"{alerts.BACKUP_METRIC} not-a-number\n", f"{alerts.BACKUP_METRIC}{{}} 1 2 3\n"],
    ids=["bad value", "bad line"],
)
def test_mutation_malformed_backup_file_means_absent_metric(tmp_path: Path, prom_text: str) -> None:
    """A broken file yields no metric (node_textfile_scrape_error 1): BackupMetricMissing fires."""
    metrics, _ = scrape(tmp_path, rootfs=True, prom_text=prom_text)
    assert (alerts.BACKUP_METRIC, "") not in metrics
    assert metrics.get(("node_textfile_scrape_error", "")) == 1.0
