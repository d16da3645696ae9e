"""Off-site backups, proved with real tools: the rendered torrust-backup and torrust-restore scripts
(not re-implementations; paths pointed at scratch folders through the scripts' TORRUST_* overrides)
run the pinned restic (built from the Go module proxy, tests/restic_build.py) against OpenSSH's sshd
on loopback (own config, a chrooted SFTP-only user, key authentication only, a free port).

The "volume lost" runbook path end to end: a backup with a concurrent writer, pushed off-site; the
whole data root wiped (backups included); `torrust-restore --apply` brings it back and verifies it.
Failure modes: repository unreachable, wrong password, corrupted repository, disk full on restore.
Needs root (sshd's chroot and user switch, the tmpfs for the disk-full case).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core import layout
from core.settings import StackSettings, load_settings
from services.backups import backup
from tests.conftest import dev_config
from tests.realtools import LOOPBACK4, Proc, free_port, missing, real_tools_required, require_tool, run
from tests.restic_build import (
    REST_SERVER_VERSION,
    BuildError,
    build_rest_server,
    build_restic,
    rest_server_cached,
    restic_cached,
)
from tests.test_backup import ScratchDataRoot

SFTP_USER = "torrust-sftp-test"
PASSWORD = "correct-horse-battery-staple-0123456789"


def offsite_settings() -> StackSettings:
    config = dev_config()
    config["backup"] = {
        "retentionDays": 14,
        "offsite": {"kind": "restic", "repository": "sftp://user@host:23/repo", "keepDaily": 3},
    }
    return load_settings("dev", config.get)


def require_root() -> None:
    if os.geteuid() != 0:
        missing("needs root: sshd's ChrootDirectory and user switch, mounting a tmpfs")


@pytest.fixture(scope="session")
def restic() -> str:
    """The pinned restic: built (minutes, once per cache) under REQUIRE_REAL_TOOLS=1 (`make check`,
    CI); `make test` uses a cached build and skips without one."""
    if not real_tools_required() and not restic_cached():
        missing(
            f"restic {backup.RESTIC_VERSION} is not built yet: python -m tests.restic_build (or make check)"
        )
    try:
        return str(build_restic())
    except (BuildError, OSError, subprocess.SubprocessError) as error:
        missing(f"cannot build restic {backup.RESTIC_VERSION}: {error}")


def ensure_sftp_user() -> pwd.struct_passwd:
    """A system user for the chrooted SFTP login (sshd needs a passwd entry; '*' = no password,
    not locked, so key authentication works with UsePAM no)."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SFTP_USER)
    useradd = require_tool("useradd")
    run(
        [useradd, "--system", "--no-create-home", "--home-dir", "/", "--shell", "/usr/sbin/nologin",
         "--password", "*", SFTP_USER],
        check=True,
    )  # fmt: skip
    return pwd.getpwnam(SFTP_USER)


@dataclass
class SftpServer:
    port: int
    base: Path
    repo_dir: Path  # the repository as seen from outside the chroot
    client_key: Path
    known_hosts: Path
    proc: Proc | None
    argv: list[str]
    log_dir: Path

    @property
    def repository(self) -> str:
        # Absolute path inside the chroot: double slash (restic doc/030_preparing_a_new_repo.rst).
        return f"sftp://{SFTP_USER}@{LOOPBACK4}:{self.port}//repo"

    def start(self) -> None:
        self.proc = Proc("sshd", self.argv, self.log_dir)
        self.proc.wait_for_port(LOOPBACK4, self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


@pytest.fixture
def sftp(tmp_path: Path) -> Iterator[SftpServer]:
    require_root()
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if sshd is None:
        missing("OpenSSH's sshd is not installed (apt-get install openssh-server)")
    keygen = require_tool("ssh-keygen")
    require_tool("ssh")
    user = ensure_sftp_user()
    # sshd refuses a chroot below a group/world-writable folder (/tmp): a root-only one in /var/lib.
    base = Path(tempfile.mkdtemp(prefix="torrust-sftp-", dir="/var/lib"))
    try:
        base.chmod(0o755)
        chroot = base / "chroot"
        chroot.mkdir(mode=0o755)
        repo_dir = chroot / "repo"
        repo_dir.mkdir(mode=0o700)
        os.chown(repo_dir, user.pw_uid, user.pw_gid)
        run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(base / "host_key")], check=True)
        client_key = tmp_path / "client_key"
        run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)], check=True)
        authorized = base / "authorized_keys"
        shutil.copy(client_key.with_suffix(".pub"), authorized)
        authorized.chmod(0o644)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        port = free_port()
        config = base / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress {LOOPBACK4}\nHostKey {base / 'host_key'}\n"
            f"PidFile {base / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"UsePAM no\nStrictModes no\nAllowUsers {SFTP_USER}\nSubsystem sftp internal-sftp\n"
            f"ChrootDirectory {chroot}\nForceCommand internal-sftp\nAllowTcpForwarding no\n"
            "X11Forwarding no\nPermitTTY no\nLogLevel VERBOSE\n"
        )
        run([sshd, "-t", "-f", str(config)], check=True)
        server = SftpServer(
            port=port,
            base=base,
            repo_dir=repo_dir,
            client_key=client_key,
            known_hosts=tmp_path / "known_hosts",
            proc=None,
            argv=[sshd, "-D", "-e", "-f", str(config)],
            log_dir=tmp_path,
        )
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- The data root ---------------------------------------------------------------------------------


@dataclass
class Stack(ScratchDataRoot):
    """A scratch data root with real state, the rendered scripts and their environment."""

    etc: Path
    backup_script: Path
    restore_script: Path
    env: dict[str, str]
    docker_log: Path

    @property
    def metrics(self) -> dict[str, float]:
        return read_metrics(self.etc / "metrics" / "torrust_backup.prom")

    def backup(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run([self.env["BASH"], str(self.backup_script), *args], timeout=300, env={**self.env, **env})

    def restore(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run([self.env["BASH"], str(self.restore_script), *args], timeout=300, env={**self.env, **env})

    def write_env(self, repository: str, sftp: SftpServer, password: str = PASSWORD) -> None:
        password_file = self.etc / "restic-password"
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        env_file = self.etc / "offsite.env"
        env_file.write_text(
            backup.offsite_env_file(
                repository,
                {},
                backup.sftp_args(key_file=str(sftp.client_key), known_hosts=str(sftp.known_hosts)),
                password_file=str(password_file),
            )
        )
        env_file.chmod(0o600)


def read_metrics(path: Path) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name] = float(value)
    return values


def make_cert(openssl: str, cert: Path, key: Path, name: str) -> None:
    run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}", "-days", "30"],
        check=True,
    )  # fmt: skip


@pytest.fixture
def stack(tmp_path: Path, restic: str) -> Stack:
    bash = require_tool("bash")
    sqlite3_cli = require_tool("sqlite3")
    openssl = require_tool("openssl")
    settings = offsite_settings()
    root = tmp_path / "srv-torrust"
    etc = tmp_path / "etc-torrust-backup"
    etc.mkdir(mode=0o700)
    backup_script = tmp_path / "torrust-backup"
    backup_script.write_text(backup.render_backup_script(settings))
    restore_script = tmp_path / "torrust-restore"
    restore_script.write_text(backup.render_restore_script(settings))
    # Stand-in for the docker CLI: the restore stops and starts containers; we record the calls.
    docker_log = tmp_path / "docker.log"
    fake_docker = tmp_path / "docker"
    fake_docker.write_text(f'#!/bin/sh\necho "$*" >>{docker_log}\n')
    fake_docker.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "HOME": str(tmp_path),
        "BASH": bash,
        "TORRUST_DATA_ROOT": str(root),
        "TORRUST_REQUIRE_MOUNT": "0",
        "TORRUST_SQLITE3": sqlite3_cli,
        "TORRUST_OPENSSL": openssl,
        "TORRUST_METRICS_DIR": str(etc / "metrics"),
        "TORRUST_OFFSITE_ENV": str(etc / "offsite.env"),
        "TORRUST_RESTIC": restic,
        "TORRUST_DOCKER": str(fake_docker),
    }
    data = Stack(root, etc, backup_script, restore_script, env, docker_log)
    data.tracker_db.parent.mkdir(parents=True)
    data.grafana_db.parent.mkdir(parents=True)
    with sqlite3.connect(data.tracker_db) as con:
        con.execute("PRAGMA journal_mode=wal")
        con.execute("CREATE TABLE torrents (id INTEGER PRIMARY KEY, info_hash TEXT NOT NULL)")
        con.executemany("INSERT INTO torrents (info_hash) VALUES (?)", ((f"{i:040x}",) for i in range(2000)))
        con.execute("CREATE TABLE padding (data BLOB)")
        con.executemany("INSERT INTO padding VALUES (?)", ((os.urandom(2000),) for _ in range(300)))
    con.close()
    with sqlite3.connect(data.grafana_db) as con:
        con.execute("CREATE TABLE dashboard (title TEXT)")
        con.execute("INSERT INTO dashboard VALUES ('Tracker overview')")
    con.close()
    data.pingoo_tls.mkdir(parents=True)
    (data.pingoo_tls / "acme.json").write_text('{"accounts": {"https://acme.example/dir": {"key": "x"}}}\n')
    make_cert(
        openssl, data.pingoo_tls / "api.example.com.pem", data.pingoo_tls / "api.example.com.key", "api"
    )
    archive = data.letsencrypt / "archive" / "grafana"
    live = data.letsencrypt / "live" / "grafana"
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    make_cert(openssl, archive / "fullchain1.pem", archive / "privkey1.pem", "grafana")
    (live / "fullchain.pem").symlink_to("../../archive/grafana/fullchain1.pem")
    (live / "privkey.pem").symlink_to("../../archive/grafana/privkey1.pem")
    return data


WRITER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
n = 0
while True:
    con.execute("INSERT INTO torrents (info_hash) VALUES (?)", (f"live-{n}",))
    n += 1
    if n % 10 == 0:
        print(n, flush=True)
    time.sleep(0.01)
"""


@pytest.fixture
def writer(stack: Stack) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(stack.tracker_db)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    # Running: it has committed rows.
    assert process.stdout.readline().strip() == "10"
    yield process
    process.kill()
    process.wait(10)


def max_id(db: Path) -> int:
    con = sqlite3.connect(db, timeout=30)
    try:
        value: int = con.execute("SELECT max(id) FROM torrents").fetchone()[0]
        return value
    finally:
        con.close()


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        digest.update(str(item.relative_to(path)).encode())
        if item.is_symlink():
            digest.update(os.readlink(item).encode())
        elif item.is_file():
            digest.update(item.read_bytes())
    return digest.hexdigest()


# --- The volume-lost path, end to end ------------------------------------------------------------


def test_backup_with_a_writer_then_wipe_then_restore_and_verify(
    stack: Stack, sftp: SftpServer, writer: subprocess.Popen[str]
) -> None:
    stack.write_env(sftp.repository, sftp)
    committed_before = max_id(stack.tracker_db)

    result = stack.backup()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no repository at" in result.stdout and "initialising it" in result.stdout
    assert f"off-site: restic backup to {sftp.repository}" in result.stdout
    metrics = stack.metrics
    assert metrics["torrust_backup_last_run_success"] == 1
    assert metrics["torrust_backup_offsite_success"] == 1
    assert metrics["torrust_backup_local_success"] == 1
    assert metrics["torrust_backup_failures_total"] == 0
    assert metrics["torrust_backup_size_bytes"] > 100_000
    assert metrics["torrust_backup_offsite_last_success_timestamp_seconds"] > 0
    assert (sftp.repo_dir / "config").is_file(), "the repository lives on the SFTP server"
    writer.kill()
    writer.wait(10)
    committed_after = max_id(stack.tracker_db)
    assert committed_after > committed_before, "the writer kept writing during the backup"

    # The volume is gone: data and local backups alike.
    shutil.rmtree(stack.root)

    restored = stack.restore("--apply")

    assert restored.returncode == 0, restored.stdout + restored.stderr
    out = restored.stdout
    assert "verify: tracker-db: integrity_check ok" in out
    assert "verify: grafana-db: integrity_check ok" in out
    assert "verify: pingoo-tls: acme.json is valid JSON" in out
    assert "verify: pingoo-tls: api.example.com.pem matches its key" in out
    assert "verify: letsencrypt: fullchain.pem matches its key" in out
    assert "restored and applied" in out
    # Every row committed before the backup started is back, and the database is sound.
    con = sqlite3.connect(stack.tracker_db)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    ids = {row[0] for row in con.execute("SELECT id FROM torrents")}
    con.close()
    assert set(range(1, committed_before + 1)) <= ids
    assert stack.tracker_db.stat().st_uid == layout.TRACKER_UID
    assert (stack.grafana_db.stat().st_uid, stack.grafana_db.stat().st_gid) == (layout.GRAFANA_UID, 0)
    con = sqlite3.connect(stack.grafana_db)
    assert con.execute("SELECT title FROM dashboard").fetchall() == [("Tracker overview",)]
    con.close()
    link = stack.letsencrypt / "live" / "grafana" / "fullchain.pem"
    assert link.is_symlink() and os.readlink(link) == "../../archive/grafana/fullchain1.pem"
    assert (stack.pingoo_tls / "acme.json").read_text().startswith('{"accounts"')
    calls = stack.docker_log.read_text().splitlines()
    names = " ".join(backup.RESTORE_CONTAINERS)
    assert calls == [f"stop {names}", f"start {names}"]


def test_restore_without_apply_only_verifies_into_the_target(
    stack: Stack, sftp: SftpServer, tmp_path: Path
) -> None:
    stack.write_env(sftp.repository, sftp)
    assert stack.backup().returncode == 0
    before = tree_digest(stack.root / "tracker")
    target = tmp_path / "scratch"

    result = stack.restore("--target", str(target))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "not applied (no --apply)" in result.stdout
    assert (target / "tracker-db.sqlite3").is_file()
    assert tree_digest(stack.root / "tracker") == before
    assert not stack.docker_log.exists()


# --- Failure modes -------------------------------------------------------------------------------


def test_unreachable_repository_keeps_the_local_backup_and_fails_the_run(
    stack: Stack, sftp: SftpServer
) -> None:
    stack.write_env(sftp.repository, sftp)
    sftp.stop()

    result = stack.backup()

    assert result.returncode != 0
    assert "unreachable or unreadable" in result.stderr
    assert "complete locally" in result.stderr and "off-site copy failed" in result.stderr
    assert len(list(stack.backups.glob("tracker-db-*.sqlite3.gz"))) == 1
    metrics = stack.metrics
    assert metrics["torrust_backup_last_run_success"] == 0
    assert metrics["torrust_backup_local_success"] == 1
    assert metrics["torrust_backup_offsite_success"] == 0
    assert metrics["torrust_backup_failures_total"] == 1
    assert metrics["torrust_backup_last_success_timestamp_seconds"] == 0

    # The next run, with the repository back, succeeds and keeps the failure count.
    sftp.start()
    again = stack.backup()
    assert again.returncode == 0, again.stdout + again.stderr
    metrics = stack.metrics
    assert metrics["torrust_backup_last_run_success"] == 1
    assert metrics["torrust_backup_failures_total"] == 1
    assert metrics["torrust_backup_last_success_timestamp_seconds"] > 0


def test_wrong_password_is_a_clear_error_and_changes_nothing(stack: Stack, sftp: SftpServer) -> None:
    stack.write_env(sftp.repository, sftp)
    assert stack.backup().returncode == 0
    stack.write_env(sftp.repository, sftp, password="not-the-repository-password-0000")
    before = tree_digest(stack.root)

    restored = stack.restore("--apply")

    assert restored.returncode != 0
    assert "wrong repository password" in restored.stderr
    assert "nothing was changed" in restored.stderr
    assert tree_digest(stack.root) == before
    assert not list(stack.backups.glob("restore-*"))
    assert not stack.docker_log.exists()

    pushed = stack.backup()
    assert pushed.returncode != 0
    assert "wrong repository password" in pushed.stderr
    assert stack.metrics["torrust_backup_offsite_success"] == 0


def test_check_passes_then_reports_a_corrupted_repository(stack: Stack, sftp: SftpServer) -> None:
    stack.write_env(sftp.repository, sftp)
    assert stack.backup().returncode == 0
    check_file = stack.etc / "metrics" / "torrust_backup_check.prom"

    healthy = stack.backup("check", TORRUST_CHECK_SUBSET="100%")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "is healthy" in healthy.stdout
    assert read_metrics(check_file)["torrust_backup_check_last_run_success"] == 1

    packs = sorted(p for p in (sftp.repo_dir / "data").rglob("*") if p.is_file())
    assert packs
    for pack in packs:
        content = bytearray(pack.read_bytes())
        content[len(content) // 2] ^= 0xFF
        pack.write_bytes(bytes(content))

    broken = stack.backup("check", TORRUST_CHECK_SUBSET="100%")

    assert broken.returncode != 0
    assert "reported errors" in broken.stderr
    assert re.search(
        r"(?i)pack .* (contains \d+ errors|damaged)|hash does not match|ciphertext verification failed",
        broken.stdout + broken.stderr,
    )
    metrics = read_metrics(check_file)
    assert metrics["torrust_backup_check_last_run_success"] == 0
    assert metrics["torrust_backup_check_last_success_timestamp_seconds"] > 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    require_root()
    mount = require_tool("mount")
    umount = require_tool("umount")
    target = tmp_path / "small"
    target.mkdir()
    result = run([mount, "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(target)])
    if result.returncode != 0:
        missing(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield target
    finally:
        run([umount, str(target)], check=True)


def test_disk_full_on_restore_is_a_clear_error(stack: Stack, sftp: SftpServer, small_disk: Path) -> None:
    stack.write_env(sftp.repository, sftp)
    assert stack.backup().returncode == 0
    before = tree_digest(stack.root / "tracker")

    result = stack.restore("--target", str(small_disk / "restore"), "--apply")

    assert result.returncode != 0
    assert "disk full?" in result.stderr
    assert "nothing live was changed" in result.stderr
    assert tree_digest(stack.root / "tracker") == before
    assert not stack.docker_log.exists()


def test_metrics_file_is_valid_for_prometheus(stack: Stack, sftp: SftpServer) -> None:
    promtool = require_tool("promtool")
    stack.write_env(sftp.repository, sftp)
    assert stack.backup().returncode == 0
    assert stack.backup("check").returncode == 0
    for name in ("torrust_backup.prom", "torrust_backup_check.prom"):
        text = (stack.etc / "metrics" / name).read_text()
        result = subprocess.run(
            [promtool, "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert not list((stack.etc / "metrics").glob(".*")), "no temp files left behind"


def restic_json(stack: Stack, restic: str, *args: str) -> Any:
    """restic with the stack's env file (as the scripts source it), JSON output parsed."""
    env_file = stack.etc / "offsite.env"
    script = f'set -a; . {env_file}; set +a; exec "$0" -o "sftp.args=$TORRUST_RESTIC_SFTP_ARGS" "$@"'
    result = run(
        [stack.env["BASH"], "-c", script, restic, *args, "--json"], env=stack.env, timeout=120, check=True
    )
    # `backup --json` prints one JSON message per line, the summary last.
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_retention_forgets_and_prunes_old_snapshots(stack: Stack, sftp: SftpServer, restic: str) -> None:
    stack.write_env(sftp.repository, sftp)
    keep_one = {"TORRUST_KEEP_DAILY": "1", "TORRUST_KEEP_WEEKLY": "0", "TORRUST_KEEP_MONTHLY": "0"}
    assert stack.backup(**keep_one).returncode == 0
    time.sleep(1.1)  # a new stamp
    second = stack.backup(**keep_one)
    assert second.returncode == 0, second.stdout + second.stderr
    snapshots = restic_json(stack, restic, "snapshots")
    # Both runs were on the same day: --keep-daily 1 keeps the newer one only.
    assert len(snapshots) == 1
    assert snapshots[0]["hostname"] == "torrust-dev" and "torrust-backup" in snapshots[0]["tags"]
    stamp = next(tag for tag in snapshots[0]["tags"] if tag.startswith("stamp-"))
    assert stamp.removeprefix("stamp-") in second.stdout
    assert "remove 1 snapshots" in second.stdout.lower() or "removed" in second.stdout.lower()


def test_restore_refuses_a_snapshot_that_does_not_verify(
    stack: Stack, sftp: SftpServer, restic: str, tmp_path: Path
) -> None:
    stack.write_env(sftp.repository, sftp)
    assert stack.backup().returncode == 0
    # A snapshot the backup script would never make: a torn database, a certificate with the
    # wrong key, a broken acme.json.
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = stack.tracker_db.read_bytes()
    torn = bytearray(raw)
    torn[4096 : 4096 + 8192] = os.urandom(8192)
    (bad / "tracker-db.sqlite3.gz").write_bytes(gzip.compress(bytes(torn)))
    pingoo = bad / "pingoo"
    pingoo.mkdir()
    shutil.copy(stack.pingoo_tls / "api.example.com.pem", pingoo / "api.example.com.pem")
    shutil.copy(stack.letsencrypt / "archive" / "grafana" / "privkey1.pem", pingoo / "api.example.com.key")
    (pingoo / "acme.json").write_text('{"accounts": ')
    with tarfile.open(bad / "pingoo-tls.tar.gz", "w:gz") as tar:
        tar.add(pingoo, arcname=".")
    shutil.rmtree(pingoo)
    restic_json(stack, restic, "backup", "--host", "torrust-dev", "--tag", "torrust-backup", str(bad))
    before = tree_digest(stack.root / "tracker")

    result = stack.restore("--apply")

    assert result.returncode != 0
    assert "verify: tracker-db: integrity_check of" in result.stderr
    assert "verify: pingoo-tls: " in result.stderr and "api.example.com.pem does not match" in result.stderr
    assert "verify: pingoo-tls: acme.json is not valid JSON" in result.stderr
    assert "verification of snapshot" in result.stderr
    assert "nothing live was changed" in result.stderr
    assert tree_digest(stack.root / "tracker") == before
    assert not stack.docker_log.exists()


HOLDER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA wal_autocheckpoint=0")
con.execute("INSERT INTO torrents (info_hash) VALUES ('written-after-the-backup')")
print("written", flush=True)
time.sleep(600)
"""


def test_apply_over_live_state_discards_the_newer_write_ahead_log(stack: Stack, sftp: SftpServer) -> None:
    stack.write_env(sftp.repository, sftp)
    assert stack.backup().returncode == 0
    # A write after the backup that is still only in the -wal file (the writer dies without a
    # checkpoint, as a killed container would).
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(stack.tracker_db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "written"
    finally:
        holder.kill()
        holder.wait(10)
    wal = Path(f"{stack.tracker_db}-wal")
    assert wal.stat().st_size > 0

    result = stack.restore("--apply")

    assert result.returncode == 0, result.stdout + result.stderr
    assert not wal.exists()
    con = sqlite3.connect(stack.tracker_db)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    rows = con.execute(
        "SELECT count(*) FROM torrents WHERE info_hash = 'written-after-the-backup'"
    ).fetchone()
    con.close()
    assert rows == (0,), "the restored database is the snapshot, not the snapshot plus a stale WAL"


# --- Another backend: rest-server with credentials from the env file ------------------------------


@pytest.fixture
def rest_server(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """restic's rest-server on loopback with basic auth; (repository URL, user, password)."""
    if not real_tools_required() and not rest_server_cached():
        missing(f"rest-server {REST_SERVER_VERSION} is not built yet: python -m tests.restic_build")
    try:
        binary = str(build_rest_server())
    except (BuildError, OSError, subprocess.SubprocessError) as error:
        missing(f"cannot build rest-server {REST_SERVER_VERSION}: {error}")
    user, password = "torrust", "rest-password-0123456789abcdef"
    htpasswd = tmp_path / "htpasswd"
    # {SHA} entries are one of the two formats rest-server accepts (rest-server README, "Authentication").
    sha = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    htpasswd.write_text(f"{user}:{{SHA}}{sha}\n")
    port = free_port()
    proc = Proc(
        "rest-server",
        [binary, "--path", str(tmp_path / "rest-data"), "--listen", f"{LOOPBACK4}:{port}",
         "--htpasswd-file", str(htpasswd)],
        tmp_path,
    )  # fmt: skip
    try:
        proc.wait_for_port(LOOPBACK4, port)
        yield f"rest:http://{LOOPBACK4}:{port}/torrust", user, password
    finally:
        proc.stop()


def test_rest_server_repository_with_credentials(
    stack: Stack, rest_server: tuple[str, str, str], tmp_path: Path
) -> None:
    repository, user, password = rest_server

    def write_env(rest_password: str) -> None:
        password_file = stack.etc / "restic-password"
        password_file.write_text(PASSWORD + "\n")
        (stack.etc / "offsite.env").write_text(
            backup.offsite_env_file(
                repository,
                {"RESTIC_REST_USERNAME": user, "RESTIC_REST_PASSWORD": rest_password},
                None,
                password_file=str(password_file),
            )
        )

    write_env(password)
    pushed = stack.backup()
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert stack.metrics["torrust_backup_offsite_success"] == 1

    restored = stack.restore("--target", str(tmp_path / "scratch"))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "verify: tracker-db: integrity_check ok" in restored.stdout

    write_env("wrong-rest-password")
    refused = stack.backup()
    assert refused.returncode != 0
    assert "unreachable or unreadable" in refused.stderr and "401" in refused.stderr


def test_the_real_node_exporter_reads_the_metrics_file(
    stack: Stack, sftp: SftpServer, tmp_path: Path
) -> None:
    from services.monitoring import alerts
    from tests.test_real_node_exporter import scrape

    stack.write_env(sftp.repository, sftp)
    assert stack.backup().returncode == 0
    written = (stack.etc / "metrics" / "torrust_backup.prom").read_text()

    values, text = scrape(tmp_path / "exporter", rootfs=False, prom_text=written)

    assert "node_textfile_scrape_error 0" in text
    exported = {name: value for (name, _), value in values.items() if name.startswith("torrust_backup_")}
    assert exported[alerts.BACKUP_METRIC] == stack.metrics[alerts.BACKUP_METRIC] > 0
    assert exported["torrust_backup_offsite_success"] == 1
