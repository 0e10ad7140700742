"""Hourly build of the FlowForge batch marts with dbt on ClickHouse.

1. **source_freshness**: `dbt source freshness` on raw_trades, raw_quotes, vwap_5min and
   rolling_volatility. Warns past the contract's promise; fails when a source is older than the
   daily marts' own promise (26 h), because then no build could meet it.
2. **hourly**: one task per dbt node tagged `hourly` (seed, staging views, `fct_trades`,
   `dim_instruments`, `hourly_rollup`), each `dbt build` of that node with its tests.
3. **day_closed**: lets the daily marts run only in the first run after 00:00 UTC (or a run
   triggered by hand), once the day is complete.
4. **daily**: one task per node tagged `daily` (`daily_rollup`, `int_positions_accumulated_to_days`,
   `rpt_daily_pnl`).

The marts are incremental: every run rebuilds each hour or day holding rows ingested since the
mart's last build, so a missed or failed run is caught up by the next one (`catchup=False`).
ClickHouse is the one the pipeline settings name (`CLICKHOUSE_URL`, or the local server on
`LOCAL_CLICKHOUSE_PORT`); see docs/batch.md.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import InvocationMode, LoadMode, TestBehavior

from flowforge_pipeline.dbt_runner import PROFILE, TARGET, dbt_env, dbt_executable, run_dbt
from flowforge_pipeline.settings import get_settings

DBT_PROJECT_DIR = Path(
    os.environ.get("FLOWFORGE_DBT_PROJECT_DIR", Path(__file__).resolve().parents[2] / "dbt")
)
SETTINGS = get_settings()
# cosmos runs each task in its own copy of the project: let it choose target/ and logs/
DBT_ENV = {
    **{k: v for k, v in dbt_env(SETTINGS).items() if k not in ("DBT_TARGET_PATH", "DBT_LOG_PATH")},
    # a test over several models (rollup volume = raw volume) runs in the task of the last of
    # them, not in the first one's task before the others are rebuilt
    "DBT_INDIRECT_SELECTION": "buildable",
}
DEFAULT_ARGS = {
    "owner": "flowforge",
    "retries": 3,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
}


def _manifest() -> Path:
    """A manifest of the project, re-parsed when a project file is newer than it.

    Rendering the task groups from a manifest keeps DAG parsing free of `dbt ls` calls.
    """
    manifest = SETTINGS.state_path / "dbt" / "target" / "manifest.json"
    newest = max(p.stat().st_mtime for p in DBT_PROJECT_DIR.rglob("*") if p.is_file())
    if not manifest.exists() or manifest.stat().st_mtime < newest:
        run_dbt(SETTINGS, ["parse", "--quiet"], check=True)
    return manifest


PROJECT = ProjectConfig(DBT_PROJECT_DIR, manifest_path=_manifest(), env_vars=DBT_ENV)
PROFILE_CONFIG = ProfileConfig(
    profile_name=PROFILE,
    target_name=TARGET,
    profiles_yml_filepath=DBT_PROJECT_DIR / "profiles.yml",
)
EXECUTION = ExecutionConfig(
    dbt_executable_path=dbt_executable(), invocation_mode=InvocationMode.DBT_RUNNER
)


def _render(tag: str) -> RenderConfig:
    return RenderConfig(
        load_method=LoadMode.DBT_MANIFEST,
        select=[f"tag:{tag}"],
        test_behavior=TestBehavior.BUILD,
    )


with DAG(
    dag_id="flowforge_dbt",
    doc_md=__doc__,
    schedule="5 * * * *",  # five minutes past the hour: the sinks have flushed the last hour
    start_date=datetime(2025, 1, 1),  # noqa: DTZ001 - Airflow reads naive dates as UTC
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["flowforge", "dbt"],
) as dag:

    @task
    def source_freshness() -> None:
        """Fail loudly when the stream has stopped feeding a source."""
        code = run_dbt(get_settings(), ["source", "freshness"])
        if code:
            raise RuntimeError(f"dbt source freshness exited {code}")

    @task.short_circuit(ignore_downstream_trigger_rules=True)
    def day_closed(**context: object) -> bool:
        """True in the first scheduled run of a UTC day, or in a run triggered by hand."""
        run = context["dag_run"]
        when = context.get("data_interval_end") or context["logical_date"]
        return str(getattr(run, "run_type", "")).endswith("manual") or when.hour == 0  # type: ignore[attr-defined]

    hourly = DbtTaskGroup(
        group_id="hourly",
        project_config=PROJECT,
        profile_config=PROFILE_CONFIG,
        execution_config=EXECUTION,
        render_config=_render("hourly"),
        operator_args={"install_deps": False},
    )
    daily = DbtTaskGroup(
        group_id="daily",
        project_config=PROJECT,
        profile_config=PROFILE_CONFIG,
        execution_config=EXECUTION,
        render_config=_render("daily"),
        operator_args={"install_deps": False},
    )

    source_freshness() >> hourly >> day_closed() >> daily
