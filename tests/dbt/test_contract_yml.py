"""dbt's model contracts and source freshness agree with the serving-layer catalog."""

from __future__ import annotations

import math

import pytest
import yaml

from flowforge_pipeline.contract import catalog
from flowforge_pipeline.dbt_runner import DBT_PROJECT_DIR

DBT_TABLES = [t for t in catalog.CLICKHOUSE_TABLES if t.owner == "dbt"]


def _models() -> dict[str, dict]:
    data = yaml.safe_load((DBT_PROJECT_DIR / "models" / "marts" / "_marts.yml").read_text())
    return {m["name"]: m for m in data["models"]}


def test_every_dbt_owned_table_is_a_contracted_mart() -> None:
    assert sorted(_models()) == sorted(t.name for t in DBT_TABLES)


@pytest.mark.parametrize("table", DBT_TABLES, ids=lambda t: t.name)
def test_mart_contract_equals_catalog(table: catalog.Table) -> None:
    model = _models()[table.name]
    assert model["config"]["contract"]["enforced"] is True
    declared = [(c["name"], c["data_type"]) for c in model["columns"]]
    assert declared == [(c.name, c.clickhouse) for c in table.columns]
    sql = (DBT_PROJECT_DIR / "models" / "marts" / f"{table.name}.sql").read_text()
    for key in table.order_by:
        assert f"'{key}'" in sql.split("}}", 1)[0], f"{table.name} order_by lacks {key}"


def test_source_freshness_matches_the_contract_promises() -> None:
    data = yaml.safe_load(
        (DBT_PROJECT_DIR / "models" / "staging" / "_flowforge__sources.yml").read_text()
    )
    (source,) = data["sources"]
    tables = {t["name"]: t for t in source["tables"]}
    assert sorted(tables) == ["raw_quotes", "raw_trades", "rolling_volatility", "vwap_5min"]
    assert source["loaded_at_field"] == "ingested_at"
    for name, spec in tables.items():
        promise = catalog.table(name).freshness
        assert promise.column == "ingested_at"
        warn = spec["config"]["freshness"]["warn_after"]
        # dbt's smallest period is a minute: the promise rounded up to whole minutes
        assert warn == {"count": math.ceil(promise.max_age_seconds / 60), "period": "minute"}
