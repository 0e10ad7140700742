"""Background processes of the local stack: spawn with a log and a pid file, check, stop.

A pid file records the pid *and* the process's start time, so a pid reused by an unrelated
process after a crash is recognised as stale and never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil


@dataclass(frozen=True)
class ProcessRecord:
    """What `up` wrote about a process it started."""

    name: str
    pid: int
    create_time: float
    argv: list[str]
    port: int | None
    started_at: str
    log: str


def run_dir(state: Path) -> Path:
    """Directory of pid files."""
    return state / "run"


def log_dir(state: Path) -> Path:
    """Directory of component logs."""
    return state / "logs"


def log_path(state: Path, name: str) -> Path:
    """Log file of one component."""
    return log_dir(state) / f"{name}.log"


def exit_path(state: Path, name: str) -> Path:
    """Where a component that may finish records its exit code."""
    return run_dir(state) / f"{name}.exit"


def finished_code(state: Path, name: str) -> int | None:
    """Exit code a finished component recorded, or None if it has not finished."""
    try:
        return int(exit_path(state, name).read_text())
    except (OSError, ValueError):
        return None


def skip(state: Path, name: str, skipped: bool) -> None:
    """Record (or clear) that `up` left `name` out on purpose, e.g. `--no-generator`."""
    path = run_dir(state) / f"{name}.skipped"
    if skipped:
        run_dir(state).mkdir(parents=True, exist_ok=True)
        path.touch()
    else:
        path.unlink(missing_ok=True)


def skipped(state: Path, name: str) -> bool:
    """True if `up` left `name` out on purpose."""
    return (run_dir(state) / f"{name}.skipped").exists()


def _pid_path(state: Path, name: str) -> Path:
    return run_dir(state) / f"{name}.pid.json"


def read_record(state: Path, name: str) -> ProcessRecord | None:
    """The pid file of `name`, or None (a corrupt pid file counts as absent)."""
    path = _pid_path(state, name)
    try:
        data = json.loads(path.read_text())
        return ProcessRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def records(state: Path) -> list[ProcessRecord]:
    """Every pid file, in start order."""
    out = []
    for path in run_dir(state).glob("*.pid.json"):
        rec = read_record(state, path.name.removesuffix(".pid.json"))
        if rec:
            out.append(rec)
    return sorted(out, key=lambda r: r.create_time)


def is_alive(rec: ProcessRecord) -> bool:
    """True if the recorded process still runs (same pid *and* same start time)."""
    try:
        proc = psutil.Process(rec.pid)
        same = abs(float(proc.create_time()) - rec.create_time) < 0.5
        return bool(same and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def forget(state: Path, name: str) -> None:
    """Remove the pid file (and recorded exit code) of `name`."""
    _pid_path(state, name).unlink(missing_ok=True)
    exit_path(state, name).unlink(missing_ok=True)


def spawn(
    state: Path,
    name: str,
    argv: list[str],
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: tuple[int, int] | None = None,
    may_finish: bool = False,
) -> ProcessRecord:
    """Start `argv` in its own session, output appended to its log, and record it.

    With `may_finish`, the command runs under `run_once` so its exit code is kept.
    """
    run_dir(state).mkdir(parents=True, exist_ok=True)
    exit_path(state, name).unlink(missing_ok=True)
    if may_finish:
        argv = [
            sys.executable,
            "-m",
            "flowforge_pipeline.stack.run_once",
            str(exit_path(state, name)),
            "--",
            *argv,
        ]
    log_dir(state).mkdir(parents=True, exist_ok=True)
    log = log_path(state, name)
    with log.open("ab") as out:
        out.write(f"\n--- {datetime.now(UTC).isoformat()} starting {name}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            user=user[0] if user else None,
            group=user[1] if user else None,
            extra_groups=[] if user else None,
        )
    rec = ProcessRecord(
        name=name,
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        argv=argv,
        port=port,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        log=str(log),
    )
    tmp = _pid_path(state, name).with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rec)))
    tmp.replace(_pid_path(state, name))
    return rec


def exited_code(rec: ProcessRecord) -> int | None:
    """Exit code if the process was our child and has exited, else None."""
    try:
        pid, status = os.waitpid(rec.pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if pid == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def stop(rec: ProcessRecord, sig: int = signal.SIGTERM, timeout: float = 20.0) -> str:
    """Stop gracefully with `sig`, then SIGKILL after `timeout`; returns how it ended."""
    if not is_alive(rec):
        return "not running"
    try:
        pgid = os.getpgid(rec.pid)
    except ProcessLookupError:
        return "not running"
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return "not running"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited_code(rec)  # reap if it is our child
        if not is_alive(rec):
            return "stopped"
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped"
    for _ in range(50):
        exited_code(rec)
        if not is_alive(rec):
            break
        time.sleep(0.1)
    return "killed"


def tail(path: Path, lines: int = 20) -> list[str]:
    """Last `lines` lines of a log (for error messages and `logs`)."""
    try:
        data = path.read_bytes()[-64_000:]
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]
