"""`flowforge-pipeline dbt ARGS...`: dbt with the project's profile, pointed by the settings.

The dbt profile (`dbt/profiles.yml`) reads only environment variables; this module is the one
place they are derived from the settings, so `CLICKHOUSE_URL` (or the local server's port)
points the flows, dbt and Airflow at the same server. Airflow's component and the DAG reuse
`dbt_env` for the same reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from flowforge_pipeline.settings import Settings, get_settings

#: The dbt project shipped in the repository (`<repo>/dbt`).
DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"

#: The profile and target names `dbt/profiles.yml` defines.
PROFILE = "flowforge"
TARGET = "default"


def project_dir() -> Path:
    """The dbt project directory; `FLOWFORGE_DBT_PROJECT_DIR` overrides it for installed copies."""
    return Path(os.environ.get("FLOWFORGE_DBT_PROJECT_DIR", DBT_PROJECT_DIR)).resolve()


def dbt_env(settings: Settings) -> dict[str, str]:
    """Environment variables `dbt/profiles.yml` reads, derived from the settings.

    The password goes into a `DBT_ENV_SECRET_` variable so dbt scrubs it from its logs.
    """
    url = urlsplit(settings.clickhouse_http_url)
    secure = url.scheme == "https"
    user, password = settings.clickhouse_credentials
    return {
        "FLOWFORGE_DBT_HOST": url.hostname or "127.0.0.1",
        "FLOWFORGE_DBT_PORT": str(url.port or (443 if secure else 80)),
        "FLOWFORGE_DBT_SECURE": "true" if secure else "false",
        "FLOWFORGE_DBT_USER": user,
        "DBT_ENV_SECRET_FLOWFORGE_DBT_PASSWORD": password,
        "FLOWFORGE_DBT_SCHEMA": settings.clickhouse_database,
        # empty: one server; a name: dbt's DDL runs ON CLUSTER (docs/scaling.md)
        "FLOWFORGE_DBT_CLUSTER": settings.clickhouse_cluster,
        "DBT_PROFILES_DIR": str(project_dir()),
        "DBT_PROJECT_DIR": str(project_dir()),
        # dbt writes logs and target/ into the project unless told otherwise.
        "DBT_LOG_PATH": str(settings.state_path / "dbt" / "logs"),
        "DBT_TARGET_PATH": str(settings.state_path / "dbt" / "target"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def dbt_executable() -> str:
    """The `dbt` next to this interpreter, so the venv's dbt-core is the one that runs."""
    beside = Path(sys.executable).with_name("dbt")
    if beside.exists():
        return str(beside)
    found = shutil.which("dbt")
    if not found:
        raise click.ClickException("dbt is not installed: pip install 'dbt-clickhouse==1.10.3'")
    return found


def run_dbt(settings: Settings, args: list[str], *, check: bool = False) -> int:
    """Run `dbt ARGS` with the project's profile and the settings' ClickHouse; the exit code."""
    (settings.state_path / "dbt").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **dbt_env(settings)}
    proc = subprocess.run([dbt_executable(), *args], env=env, cwd=project_dir(), check=check)
    return proc.returncode


@click.command(
    "dbt",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dbt_command(args: tuple[str, ...]) -> None:
    """Run dbt ARGS (e.g. `build`, `docs generate`) against the configured ClickHouse."""
    code = run_dbt(get_settings(), list(args) or ["--help"])
    if code:
        sys.exit(code)
