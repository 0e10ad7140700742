"""Airflow standalone as a component of the local stack, running `airflow/dags/flowforge_dbt.py`.

Airflow keeps its home (metadata database, logs, generated admin password) under the state
directory, so `down` and `up` keep run history and a test stack never touches a developer's.
Its API and UI bind 127.0.0.1 on `LOCAL_AIRFLOW_PORT`; the task runners reach the execution API
on that same address, which Airflow would otherwise expect on localhost:8080.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import click

from flowforge_pipeline.dbt_runner import dbt_env
from flowforge_pipeline.settings import LOCALHOST, Settings
from flowforge_pipeline.stack.components import Component, UpOptions

#: The folder holding the one DAG file.
DAGS_DIR = Path(__file__).resolve().parents[2] / "airflow" / "dags"

#: Where `airflow standalone` writes the generated admin password (simple auth manager).
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"  # noqa: S105 - a file name

ADMIN_USER = "admin"


def airflow_home(settings: Settings) -> Path:
    """AIRFLOW_HOME of the local stack."""
    return settings.state_path / "airflow"


def ui_url(settings: Settings) -> str:
    """The Airflow UI and API base URL."""
    return f"http://{LOCALHOST}:{settings.local_airflow_port}"


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment of the Airflow processes: home, bind address, DAG folder, dbt profile."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **dbt_env(settings),
        # standalone spawns `airflow` from PATH: the venv's must come first
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "AIRFLOW_HOME": str(airflow_home(settings)),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__HOST": LOCALHOST,
        "AIRFLOW__API__PORT": str(settings.local_airflow_port),
        "AIRFLOW__API__BASE_URL": ui_url(settings),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{ui_url(settings)}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "DO_NOT_TRACK": "1",
        # the DAG reads the same settings as the rest of the pipeline
        "FLOWFORGE_STATE_DIR": str(settings.state_path),
        "LOCAL_CLICKHOUSE_PORT": str(settings.local_clickhouse_port),
        "CLICKHOUSE_DATABASE": settings.clickhouse_database,
    }


def login_hint(settings: Settings) -> str:
    """How to log in: the user and the file holding the generated password."""
    path = airflow_home(settings) / PASSWORD_FILE
    return f"login {ADMIN_USER}, password in {path}"


def admin_password(settings: Settings) -> str | None:
    """The generated admin password, once standalone has written it."""
    try:
        data = json.loads((airflow_home(settings) / PASSWORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    value = data.get(ADMIN_USER) if isinstance(data, dict) else None
    return str(value) if value else None


def _argv(settings: Settings, _: UpOptions) -> list[str]:
    return [str(Path(sys.executable).with_name("airflow")), "standalone"]


def _prepare(settings: Settings) -> None:
    airflow_home(settings).mkdir(parents=True, exist_ok=True)


def _ready(settings: Settings) -> None:
    url = f"{ui_url(settings)}/api/v2/monitor/health"
    with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - our own local URL
        health = json.loads(resp.read())
    if health.get("metadatabase", {}).get("status") != "healthy":
        raise RuntimeError(f"airflow not healthy yet: {health}")


def _announce(settings: Settings) -> None:
    click.echo(f"airflow UI   {ui_url(settings)}  ({login_hint(settings)})")


AIRFLOW = Component(
    name="airflow",
    description="Airflow standalone scheduling the dbt build (DAG flowforge_dbt)",
    stage="app",
    argv=_argv,
    ready=_ready,
    prepare=_prepare,
    after_ready=_announce,
    env=airflow_env,
    port=lambda s: s.local_airflow_port,
    port_setting="LOCAL_AIRFLOW_PORT",
    url=lambda s: f"{ui_url(s)} ({login_hint(s)})",
    start_timeout=180,
    stop_timeout=30,
)
