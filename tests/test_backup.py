"""Backups: rendered script and units, the install script, the component under mocks, and the real
script run with sqlite3 and bash against a temporary data root (a live writer, symlinks, retention,
missing and corrupt sources)."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command
import pytest
from pulumi.runtime import settings as pulumi_settings

from core import layout
from core.settings import PROJECT, StackSettings, load_settings
from services.backups import backup
from services.backups.backups import Backups, BackupsArgs
from tests.conftest import dev_config
from tests.realtools import require_tool
from tools.mocks import (
    EXAMPLE_HOST_PUBLIC_KEY,
    EXAMPLE_IPV4,
    DeploymentMocks,
    RecordingMonitor,
    is_secret,
    reveal,
)

COMMAND = "command:remote:Command"
HEREDOC = re.compile(r"^install -m (\d{4}) -o root -g root /dev/stdin (\S+) <<'(\w+)'\n", re.MULTILINE)
STAMP = r"\d{8}T\d{6}Z"
DAY = 24 * 3600


def settings(**backup_changes: object) -> StackSettings:
    config = dev_config()
    if backup_changes:
        config["backup"] = dict(backup_changes)
    return load_settings("dev", config.get)


def heredocs(script: str) -> dict[str, tuple[str, str]]:
    """Installed path -> (mode, content) for every `install ... /dev/stdin <<'EOF'` in the script."""
    files: dict[str, tuple[str, str]] = {}
    for match in HEREDOC.finditer(script):
        mode, path, delimiter = match.groups()
        end = script.index(f"\n{delimiter}\n", match.end() - 1)
        files[path] = (mode, script[match.end() : end + 1])
    return files


# --- Rendering -----------------------------------------------------------------------------------


def test_timer_runs_on_the_configured_schedule() -> None:
    for schedule in ("*-*-* 03:15:00", "daily", "Mon *-*-* 04:00:00"):
        timer = backup.render_backup_timer(settings(schedule=schedule))
        assert re.findall(r"^OnCalendar=(.*)$", timer, re.MULTILINE) == [schedule]
        assert "\nPersistent=true\n" in timer
        assert "\nRandomizedDelaySec=10m\n" in timer
        assert f"\nUnit={backup.SERVICE_NAME}\n" in timer
        assert "\nWantedBy=timers.target\n" in timer


def test_service_runs_the_installed_script_when_idle() -> None:
    service = backup.render_backup_service(settings())
    assert re.findall(r"^ExecStart=(.*)$", service, re.MULTILINE) == [backup.SCRIPT_PATH]
    assert "\nType=oneshot\n" in service
    assert "\nIOSchedulingClass=idle\n" in service
    assert "\nNice=19\n" in service
    assert f"\nRequiresMountsFor={layout.DATA_ROOT}\n" in service
    assert f"\nReadWritePaths={layout.DATA_ROOT} {backup.METRICS_DIR}\n" in service
    # Local backups only: no network at all.
    assert "\nPrivateNetwork=yes\n" in service


def test_script_defaults_are_the_layout_paths_and_the_retention() -> None:
    script = backup.render_backup_script(settings(retentionDays=9))
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail\numask 077\n" in script
    defaults = dict(re.findall(r"^([A-Z_0-9]+)=\$\{TORRUST_\w+:-(.*)\}$", script, re.MULTILINE))
    assert defaults["DATA_ROOT"] == layout.DATA_ROOT
    expanded = {key: value.replace('"$DATA_ROOT"', layout.DATA_ROOT) for key, value in defaults.items()}
    assert expanded["BACKUP_DIR"] == layout.BACKUP_DIR
    assert expanded["TRACKER_DB"] == layout.TRACKER_DATABASE_FILE
    assert expanded["GRAFANA_DB"] == f"{layout.GRAFANA_DATA_DIR}/grafana.db"
    assert expanded["PINGOO_TLS_DIR"] == layout.PINGOO_TLS_DIR
    assert expanded["LETSENCRYPT_DIR"] == layout.LETSENCRYPT_DIR
    assert defaults["RETENTION_DAYS"] == "9"
    assert defaults["SQLITE3"] == "sqlite3"
    assert ".backup main '" in script
    assert "PRAGMA integrity_check" in script


def test_install_script_writes_the_three_files_verbatim_and_enables_the_timer() -> None:
    stack = settings(schedule="hourly")
    script = backup.backup_install_script(stack)
    files = heredocs(script)
    assert files == {
        backup.SCRIPT_PATH: ("0755", backup.render_backup_script(stack)),
        backup.SERVICE_PATH: ("0644", backup.render_backup_service(stack)),
        backup.TIMER_PATH: ("0644", backup.render_backup_timer(stack)),
    }
    # Quoted delimiters: the shell expands nothing inside ($DATA_ROOT etc. stay literal).
    assert len(HEREDOC.findall(script)) == 3
    assert "<<EOF" not in script and '<<"' not in script
    assert script.startswith("#!/bin/bash\n")
    assert "set -euo pipefail\n" in script
    assert f"install -d -m 0700 -o root -g root {layout.BACKUP_DIR}\n" in script
    lines = script.splitlines()
    reload = lines.index("systemctl daemon-reload")
    enable = lines.index(f"systemctl enable --now {backup.TIMER_NAME}")
    assert reload < enable
    last_heredoc = max(script.index(f"/dev/stdin {path} ") for path in files)
    assert last_heredoc < script.index("systemctl daemon-reload")


def test_a_delimiter_inside_a_file_is_avoided() -> None:
    text = "before\nTORRUST_BACKUP_EOF\nafter\n"
    snippet = backup._heredoc_install("/tmp/x", "0644", text)
    assert snippet.startswith("install -m 0644 -o root -g root /dev/stdin /tmp/x <<'TORRUST_BACKUP_EOF_1'\n")
    assert heredocs(snippet) == {"/tmp/x": ("0644", text)}


def test_remove_script_disables_the_timer_and_keeps_the_backups() -> None:
    script = backup.backup_remove_script()
    assert f"systemctl disable --now {backup.TIMER_NAME}" in script
    for path in (backup.SCRIPT_PATH, backup.SERVICE_PATH, backup.TIMER_PATH):
        assert path in script
    assert "rm -rf" not in script
    assert f"rm -f {layout.BACKUP_DIR}" not in script


def test_digest_follows_the_schedule_and_the_retention() -> None:
    base = backup.install_script_digest(settings())
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert backup.install_script_digest(settings()) == base
    assert backup.install_script_digest(settings(schedule="hourly")) != base
    assert backup.install_script_digest(settings(retentionDays=30)) != base


def test_rendered_scripts_pass_bash_syntax_check(tmp_path: Path) -> None:
    bash = require_tool("bash")
    stack = settings()
    for name, text in (
        ("torrust-backup", backup.render_backup_script(stack)),
        ("install.sh", backup.backup_install_script(stack)),
        ("remove.sh", backup.backup_remove_script()),
    ):
        path = tmp_path / name
        path.write_text(text)
        result = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_rendered_scripts_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    stack = settings()
    script = tmp_path / "torrust-backup"
    script.write_text(backup.render_backup_script(stack))
    install = tmp_path / "install.sh"
    install.write_text(backup.backup_install_script(stack))
    remove = tmp_path / "remove.sh"
    remove.write_text(backup.backup_remove_script())
    result = subprocess.run(
        [shellcheck, "--shell=bash", str(script), str(install), str(remove)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- The component under mocks -------------------------------------------------------------------


def test_component_installs_after_readiness_and_reinstalls_on_change() -> None:
    pulumi_settings.reset_options(project=PROJECT, stack="dev")
    mocks = DeploymentMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="dev", preview=False, monitor=monitor)
    stack = settings()

    @pulumi.runtime.test
    def program() -> pulumi.Output[None]:
        connection = command.remote.ConnectionArgs(
            host=EXAMPLE_IPV4, user="root", host_key=EXAMPLE_HOST_PUBLIC_KEY
        )
        ready = command.remote.Command("docker-ready", connection=connection, create="true")
        backups = Backups("backups", BackupsArgs(settings=stack, connection=connection, ready=ready))
        return backups.install.stdout.apply(lambda _: None)

    program()

    component = monitor.one("torrust:index:Backups", "backups")
    ready = monitor.one(COMMAND, "docker-ready")
    install = monitor.one(COMMAND, "backups-install")
    assert install.parent == component.urn
    assert ready.urn in install.options["dependsOn"]
    assert install.options["deleteBeforeReplace"] is True
    assert install.inputs["create"] == backup.backup_install_script(stack)
    assert f"systemctl enable --now {backup.TIMER_NAME}" in install.inputs["create"]
    assert "OnCalendar=*-*-* 03:15:00" in install.inputs["create"]
    assert install.inputs["delete"] == backup.backup_remove_script()
    triggers = install.inputs["triggers"]
    digests = [t for t in triggers if isinstance(t, str) and re.fullmatch(r"[0-9a-f]{64}", t)]
    assert digests == [backup.install_script_digest(stack)]
    # A replaced server has a new readiness Command ID: the timer is installed there too.
    assert triggers == [digests[0], monitor.resources[ready.urn].id]
    # The SDK marks the whole connection secret (it may carry a private key).
    assert is_secret(install.inputs["connection"])
    assert reveal(install.inputs["connection"])["host"] == EXAMPLE_IPV4


# --- The real script -----------------------------------------------------------------------------


@dataclass
class ScratchDataRoot:
    """A scratch folder standing for the data volume, with the paths the backup job reads."""

    root: Path

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def tracker_db(self) -> Path:
        return self.root / Path(layout.TRACKER_DATABASE_FILE).relative_to(layout.DATA_ROOT)

    @property
    def grafana_db(self) -> Path:
        return self.root / "grafana" / "grafana.db"

    @property
    def pingoo_tls(self) -> Path:
        return self.root / Path(layout.PINGOO_TLS_DIR).relative_to(layout.DATA_ROOT)

    @property
    def letsencrypt(self) -> Path:
        return self.root / Path(layout.LETSENCRYPT_DIR).relative_to(layout.DATA_ROOT)


@dataclass
class DataRoot(ScratchDataRoot):
    script: Path
    env: dict[str, str]
    bash: str
    sqlite3: str

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.bash, str(self.script)],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def artefacts(self, label: str) -> list[Path]:
        extension = backup.ARTEFACTS[label]
        pattern = re.compile(rf"^{label}-{STAMP}\.{re.escape(extension)}$")
        return sorted(p for p in self.backups.iterdir() if pattern.match(p.name))


@pytest.fixture
def data_root(tmp_path: Path) -> DataRoot:
    bash = require_tool("bash")
    sqlite3_cli = require_tool("sqlite3")
    root = tmp_path / "srv-torrust"
    script = tmp_path / "torrust-backup"
    script.write_text(backup.render_backup_script(settings(retentionDays=14)))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "TORRUST_DATA_ROOT": str(root),
        "TORRUST_REQUIRE_MOUNT": "0",
        "TORRUST_SQLITE3": sqlite3_cli,
        "TORRUST_METRICS_DIR": str(tmp_path / "metrics"),
    }
    data = DataRoot(root, script, env, bash, sqlite3_cli)
    data.tracker_db.parent.mkdir(parents=True)
    data.grafana_db.parent.mkdir(parents=True)
    # Pingoo: ACME account, certificate chain and key per name.
    data.pingoo_tls.mkdir(parents=True)
    (data.pingoo_tls / "acme.json").write_text('{"accounts": {}}\n')
    (data.pingoo_tls / "api.example.com.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (data.pingoo_tls / "api.example.com.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    # certbot: live/ links into archive/.
    archive = data.letsencrypt / "archive" / "grafana"
    live = data.letsencrypt / "live" / "grafana"
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    (archive / "fullchain1.pem").write_text("chain\n")
    (archive / "privkey1.pem").write_text("key\n")
    (live / "fullchain.pem").symlink_to("../../archive/grafana/fullchain1.pem")
    (live / "privkey.pem").symlink_to("../../archive/grafana/privkey1.pem")
    (data.letsencrypt / "renewal").mkdir()
    (data.letsencrypt / "renewal" / "grafana.conf").write_text("cert = live/grafana/cert.pem\n")
    return data


COMMITTED_ROWS = 3000


def create_tracker_db(path: Path, journal_mode: str = "wal") -> None:
    with sqlite3.connect(path) as con:
        mode = con.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0]
        assert mode == journal_mode
        con.execute("CREATE TABLE torrents (info_hash TEXT PRIMARY KEY, completed INTEGER NOT NULL)")
        con.executemany(
            "INSERT INTO torrents VALUES (?, ?)",
            ((f"{i:040x}", i) for i in range(COMMITTED_ROWS)),
        )
        # Bigger than one `.backup` step (100 pages).
        con.execute("CREATE TABLE padding (data BLOB)")
        con.executemany("INSERT INTO padding VALUES (?)", ((os.urandom(2000),) for _ in range(500)))
    con.close()


WRITER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
con.execute("BEGIN " + sys.argv[2])
con.execute("INSERT INTO torrents VALUES ('uncommitted', 1)")
print("locked", flush=True)
hold = float(sys.argv[3])
if hold > 0:
    time.sleep(hold)
    con.execute("UPDATE torrents SET info_hash = 'committed-after-lock' WHERE info_hash = 'uncommitted'")
    con.execute("COMMIT")
else:
    sys.stdin.readline()
    con.execute("ROLLBACK")
print("released", flush=True)
"""


@pytest.fixture
def writer() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def start_writer(
    processes: list[subprocess.Popen[str]], db: Path, begin: str, hold: float = 0
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), begin, str(hold)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    processes.append(process)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "locked"
    return process


def restore(gz: Path, target: Path) -> sqlite3.Connection:
    with gzip.open(gz, "rb") as source, target.open("wb") as out:
        shutil.copyfileobj(source, out)
    con = sqlite3.connect(target)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    return con


def test_backup_of_a_live_wal_database_with_an_open_write_transaction(
    data_root: DataRoot, writer: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    create_tracker_db(data_root.tracker_db, "wal")
    holder = start_writer(writer, data_root.tracker_db, "IMMEDIATE")

    result = data_root.run()

    assert holder.poll() is None, "the writer must still hold its transaction during the backup"
    assert result.returncode == 0, result.stdout + result.stderr
    [archive] = data_root.artefacts("tracker-db")
    con = restore(archive, tmp_path / "restored.db")
    assert con.execute("SELECT count(*) FROM torrents").fetchone() == (COMMITTED_ROWS,)
    assert con.execute("SELECT count(*) FROM torrents WHERE info_hash = 'uncommitted'").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM padding").fetchone() == (500,)
    con.close()
    assert re.search(
        rf"tracker-db: .*tracker-db-{STAMP}\.sqlite3\.gz .*\(\d+ bytes\).*integrity ok", result.stdout
    )
    # The writer is unaffected and the live database still works.
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(10) == 0
    with sqlite3.connect(data_root.tracker_db) as live:
        assert live.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    live.close()
    # Nothing but finished artefacts and the lock file are left behind.
    leftovers = {p.name for p in data_root.backups.iterdir()} - {
        p.name for label in backup.ARTEFACTS for p in data_root.artefacts(label)
    }
    assert leftovers == {".torrust-backup.lock"}
    assert all(p.stat().st_mode & 0o077 == 0 for p in data_root.backups.iterdir())


def test_backup_waits_for_an_exclusive_lock_instead_of_failing(
    data_root: DataRoot, writer: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    # Rollback journal: an EXCLUSIVE transaction keeps every reader out until it commits.
    create_tracker_db(data_root.tracker_db, "delete")
    start_writer(writer, data_root.tracker_db, "EXCLUSIVE", hold=60)
    impatient = data_root.run(TORRUST_SQLITE_TIMEOUT_MS="0")
    assert impatient.returncode != 0, "the lock is real: without .timeout the backup fails"
    assert "tracker-db: FAILED" in impatient.stderr
    writer[0].kill()
    writer[0].wait(10)

    holder = start_writer(writer, data_root.tracker_db, "EXCLUSIVE", hold=1.5)
    began = time.monotonic()
    result = data_root.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - began >= 1.0, "sqlite3 must have waited for the lock"
    assert holder.wait(10) == 0
    [archive] = data_root.artefacts("tracker-db")
    con = restore(archive, tmp_path / "restored.db")
    # The backup ran after the writer committed, and holds its row.
    assert con.execute("SELECT count(*) FROM torrents").fetchone() == (COMMITTED_ROWS + 1,)
    con.close()


def test_grafana_database_is_backed_up_when_present(data_root: DataRoot, tmp_path: Path) -> None:
    with sqlite3.connect(data_root.grafana_db) as con:
        con.execute("CREATE TABLE dashboard (id INTEGER PRIMARY KEY, title TEXT)")
        con.execute("INSERT INTO dashboard (title) VALUES ('Tracker overview')")
    con.close()
    result = data_root.run()
    assert result.returncode == 0, result.stdout + result.stderr
    [archive] = data_root.artefacts("grafana-db")
    restored = restore(archive, tmp_path / "grafana.db")
    assert restored.execute("SELECT title FROM dashboard").fetchall() == [("Tracker overview",)]
    restored.close()


def test_tls_tarballs_keep_symlinks_modes_and_owners(data_root: DataRoot) -> None:
    result = data_root.run()
    assert result.returncode == 0, result.stdout + result.stderr
    [pingoo] = data_root.artefacts("pingoo-tls")
    with tarfile.open(pingoo) as tar:
        names = {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
        assert names == {"acme.json", "api.example.com.pem", "api.example.com.key"}
        acme = tar.getmember("./acme.json")
        source = (data_root.pingoo_tls / "acme.json").stat()
        assert (acme.uid, acme.gid, acme.mode) == (source.st_uid, source.st_gid, source.st_mode & 0o7777)
    [letsencrypt] = data_root.artefacts("letsencrypt")
    with tarfile.open(letsencrypt) as tar:
        link = tar.getmember("./live/grafana/fullchain.pem")
        assert link.issym()
        assert link.linkname == "../../archive/grafana/fullchain1.pem"
        assert tar.getmember("./archive/grafana/fullchain1.pem").isfile()
        assert tar.getmember("./renewal/grafana.conf").isfile()
    for label in ("pingoo-tls", "letsencrypt"):
        assert re.search(rf"{label}: .*{label}-{STAMP}\.tar\.gz .*\(\d+ bytes\)", result.stdout)


def test_missing_sources_are_skipped_not_fatal(data_root: DataRoot) -> None:
    shutil.rmtree(data_root.letsencrypt)
    result = data_root.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"tracker-db: skipped, {data_root.tracker_db} does not exist" in result.stdout
    assert "grafana-db: skipped" in result.stdout
    assert "letsencrypt: skipped" in result.stdout
    assert not data_root.tracker_db.exists(), "sqlite3 must not create an empty database"
    assert data_root.artefacts("tracker-db") == []
    assert len(data_root.artefacts("pingoo-tls")) == 1


def age(path: Path, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when))


def test_retention_deletes_only_old_backups_of_ours(data_root: DataRoot) -> None:
    create_tracker_db(data_root.tracker_db)
    data_root.backups.mkdir(mode=0o700)
    old = [
        data_root.backups / "tracker-db-20200101T031500Z.sqlite3.gz",
        data_root.backups / "grafana-db-20200101T031500Z.sqlite3.gz",
        data_root.backups / "pingoo-tls-20200101T031500Z.tar.gz",
        data_root.backups / "letsencrypt-20200101T031500Z.tar.gz",
    ]
    recent = data_root.backups / "tracker-db-20200102T031500Z.sqlite3.gz"
    foreign = data_root.backups / "operator-notes.txt"
    for path in (*old, recent, foreign):
        path.write_bytes(b"x")
    for path in (*old, foreign):
        age(path, 30)
    age(recent, 13)

    result = data_root.run(TORRUST_RETENTION_DAYS="14")

    assert result.returncode == 0, result.stdout + result.stderr
    assert not any(path.exists() for path in old)
    assert recent.exists() and foreign.exists()
    assert len(data_root.artefacts("tracker-db")) == 2  # the recent one and today's
    assert "pruned 4 backup file(s) older than 14 days" in result.stdout


def test_corrupt_database_fails_the_run_and_prunes_nothing(data_root: DataRoot) -> None:
    data_root.tracker_db.write_bytes(os.urandom(64 * 1024))
    data_root.backups.mkdir(mode=0o700)
    old = data_root.backups / "tracker-db-20200101T031500Z.sqlite3.gz"
    old.write_bytes(b"x")
    age(old, 30)

    result = data_root.run()

    assert result.returncode != 0
    assert "tracker-db: FAILED" in result.stderr
    assert "older backups were not pruned" in result.stderr
    assert old.exists()
    assert [p for p in data_root.artefacts("tracker-db") if p != old] == []
    # The other artefacts were still written.
    assert len(data_root.artefacts("pingoo-tls")) == 1
    assert len(data_root.artefacts("letsencrypt")) == 1
    assert not [p for p in data_root.backups.iterdir() if p.name.startswith(".work.")]


def test_unmounted_data_root_is_refused(data_root: DataRoot) -> None:
    result = data_root.run(TORRUST_REQUIRE_MOUNT="1")
    assert result.returncode != 0
    assert "is not a mount point" in result.stderr
    assert not data_root.backups.exists()


def test_invalid_retention_is_refused(data_root: DataRoot) -> None:
    result = data_root.run(TORRUST_RETENTION_DAYS="0")
    assert result.returncode != 0
    assert "at least 1" in result.stderr


def prom(path: Path) -> dict[str, float]:
    return {
        line.split()[0]: float(line.split()[1])
        for line in path.read_text().splitlines()
        if line and not line.startswith("#")
    }


def test_every_run_records_its_outcome_for_the_textfile_collector(data_root: DataRoot) -> None:
    metrics_file = Path(data_root.env["TORRUST_METRICS_DIR"]) / "torrust_backup.prom"
    create_tracker_db(data_root.tracker_db)

    ok = data_root.run()

    assert ok.returncode == 0, ok.stdout + ok.stderr
    first = prom(metrics_file)
    assert first["torrust_backup_last_run_success"] == 1
    assert first["torrust_backup_local_success"] == 1
    assert first["torrust_backup_failures_total"] == 0
    assert first["torrust_backup_offsite_enabled"] == 0
    assert first["torrust_backup_last_success_timestamp_seconds"] >= time.time() - 300
    written = sum(p.stat().st_size for p in data_root.backups.iterdir() if p.is_file() and "-20" in p.name)
    assert first["torrust_backup_size_bytes"] == written

    data_root.tracker_db.write_bytes(os.urandom(64 * 1024))
    failed = data_root.run()

    assert failed.returncode != 0
    second = prom(metrics_file)
    assert second["torrust_backup_last_run_success"] == 0
    assert second["torrust_backup_local_success"] == 0
    assert second["torrust_backup_failures_total"] == 1
    # The last success is remembered across a failed run (what "backup too old" alerts on).
    assert (
        second["torrust_backup_last_success_timestamp_seconds"]
        == first["torrust_backup_last_success_timestamp_seconds"]
    )
    assert [p.name for p in metrics_file.parent.iterdir()] == ["torrust_backup.prom"]


def test_an_unmounted_volume_is_a_recorded_failure(data_root: DataRoot) -> None:
    result = data_root.run(TORRUST_REQUIRE_MOUNT="1")
    assert result.returncode != 0
    metrics = prom(Path(data_root.env["TORRUST_METRICS_DIR"]) / "torrust_backup.prom")
    assert metrics["torrust_backup_last_run_success"] == 0
    assert metrics["torrust_backup_failures_total"] == 1
