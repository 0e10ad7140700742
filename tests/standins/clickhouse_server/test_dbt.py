"""dbt-clickhouse against the server, the way the pipeline's dbt build uses it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import clickhouse_connect

from flowforge_pipeline.standins.clickhouse_server import ClickHouseHTTPServer

PROJECT = Path(__file__).parent / "dbt_project"
DBT = str(Path(sys.executable).parent / "dbt")


def run_dbt(args: list[str], project: Path, profiles: Path) -> str:
    env = dict(
        os.environ, DBT_TARGET_PATH=str(project / "target"), DBT_SEND_ANONYMOUS_USAGE_STATS="false"
    )
    proc = subprocess.run(
        [DBT, *args, "--project-dir", str(project), "--profiles-dir", str(profiles)],
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def test_dbt_build_end_to_end(server: ClickHouseHTTPServer, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "profiles.yml").write_text(
        "chserver_check:\n  target: dev\n  outputs:\n    dev:\n"
        "      type: clickhouse\n      host: 127.0.0.1\n"
        f"      port: {server.port}\n      user: alice\n      password: s3cret\n"
        "      schema: dbt_check\n      threads: 2\n"
    )
    assert "All checks passed" in run_dbt(["debug"], project, profiles)
    run_dbt(["seed"], project, profiles)
    run_dbt(["run"], project, profiles)
    run_dbt(["run", "--vars", "{run_label: second}"], project, profiles)
    run_dbt(["test"], project, profiles)
    run_dbt(["snapshot"], project, profiles)
    run_dbt(["docs", "generate"], project, profiles)
    assert (project / "target" / "catalog.json").exists()

    c = clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, username="alice", password="s3cret"
    )
    assert c.command("SELECT count() FROM dbt_check.instrument_table") == 3
    assert (
        c.command(
            "SELECT engine FROM system.tables"
            " WHERE database = 'dbt_check' AND name = 'stg_instruments'"
        )
        == "View"
    )
    # append ran twice: 5 rows, then ids 3 and 4 again
    assert c.command("SELECT count() FROM dbt_check.trades_append") == 7
    # delete+insert replaced every id with the second run's label
    assert c.query("SELECT DISTINCT label FROM dbt_check.trades_delete_insert").result_rows == [
        ("second",)
    ]
    assert c.command("SELECT count() FROM dbt_check.trades_delete_insert") == 4
    assert c.command("SELECT count() FROM dbt_check.lots_mv") == 3
    assert c.command("SELECT count() FROM dbt_check.instruments_snapshot") == 3
