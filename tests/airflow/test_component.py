"""The Airflow component: process supervisor, admin password, migration stamp."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from flowforge_pipeline import orchestration
from flowforge_pipeline.settings import Settings

SUPERVISOR = [sys.executable, "-m", "flowforge_pipeline.orchestration"]


def _sleeper(pid_file: Path) -> list[str]:
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    return ["--", sys.executable, "-c", code]


def _pid(path: Path) -> int:
    for _ in range(200):
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


def test_one_process_exiting_stops_the_others_with_its_exit_code(tmp_path: Path) -> None:
    failing = ["--", sys.executable, "-c", "import time, sys; time.sleep(1); sys.exit(3)"]
    proc = subprocess.run(
        [*SUPERVISOR, *_sleeper(tmp_path / "a"), *failing],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 3
    assert "exited 3" in proc.stdout
    assert not psutil.pid_exists(_pid(tmp_path / "a"))


def test_a_stop_signal_to_the_supervisor_reaches_every_process(tmp_path: Path) -> None:
    proc = subprocess.Popen([*SUPERVISOR, *_sleeper(tmp_path / "a"), *_sleeper(tmp_path / "b")])
    pids = [_pid(tmp_path / "a"), _pid(tmp_path / "b")]
    assert all(psutil.pid_exists(p) for p in pids)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not any(psutil.pid_exists(p) for p in pids)


def test_the_admin_password_is_generated_once_into_a_private_file(tmp_path: Path) -> None:
    settings = Settings(FLOWFORGE_STATE_DIR=str(tmp_path))
    orchestration.airflow_home(settings).mkdir(parents=True)
    orchestration.ensure_password(settings)
    path = orchestration.password_file(settings)
    first = orchestration.admin_password(settings)
    assert first and len(first) >= 12
    assert path.stat().st_mode & 0o777 == 0o600
    orchestration.ensure_password(settings)
    assert orchestration.admin_password(settings) == first
    assert json.loads(path.read_text()) == {"admin": first}
    assert first not in orchestration.login_hint(settings)


def test_the_database_counts_as_migrated_only_for_this_airflow_version(tmp_path: Path) -> None:
    settings = Settings(FLOWFORGE_STATE_DIR=str(tmp_path))
    home = orchestration.airflow_home(settings)
    home.mkdir(parents=True)
    assert not orchestration.migrated(settings)
    (home / "airflow.db").touch()
    (home / orchestration.MIGRATED_STAMP).write_text("2.10.0\n")
    assert not orchestration.migrated(settings)  # an upgrade needs `airflow db migrate`
    version = orchestration.version("apache-airflow")
    (home / orchestration.MIGRATED_STAMP).write_text(version + "\n")
    assert orchestration.migrated(settings)


def test_the_processes_bind_the_api_to_localhost_and_serve_no_log_port(tmp_path: Path) -> None:
    settings = Settings(FLOWFORGE_STATE_DIR=str(tmp_path), LOCAL_AIRFLOW_PORT=28999)
    argvs = orchestration.process_argvs(settings)
    assert [a[1] for a in argvs] == ["api-server", "scheduler", "dag-processor"]
    assert argvs[0][2:] == ["--host", "127.0.0.1", "--port", "28999"]
    assert "--skip-serve-logs" in argvs[1]
