"""`contract check`: compare a running deployment with the catalog, one line per difference."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from flowforge_pipeline.contract.catalog import (
    CLICKHOUSE_TABLES,
    POSTGRES_TABLES,
    REDIS_KEYS,
    TOPICS,
    Column,
    RedisKey,
    Table,
)
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stores import clickhouse, kafka, postgres
from flowforge_pipeline.stores import redis as redis_store

_PG_TYPES = {
    "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "int": "integer",
    "int8": "bigint",
    "float8": "double precision",
}
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "object": (dict,),
    "null": (type(None),),
    "boolean": (bool,),
}


@dataclass
class Report:
    """Differences (each fails the check) and notes (informational)."""

    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        """True when the deployment matches the contract."""
        return not self.differences


def _norm_ch(t: str) -> str:
    return t.replace(" ", "").replace('"', "'")


def _norm_pg(t: str) -> str:
    t = t.strip().lower()
    return _PG_TYPES.get(t, t)


def compare_columns(
    where: str, expected: tuple[Column, ...], actual: dict[str, str], store: str
) -> list[str]:
    """Differences between the contract's columns and a live table's columns."""
    out: list[str] = []
    norm = _norm_ch if store == "clickhouse" else _norm_pg
    for col in expected:
        want = col.clickhouse if store == "clickhouse" else col.postgres
        if col.name not in actual:
            out.append(f"{where}: missing column {col.name} ({want})")
        elif norm(actual[col.name]) != norm(want):
            out.append(f"{where}: column {col.name} is {actual[col.name]}, contract says {want}")
    names = {c.name for c in expected}
    for name, typ in actual.items():
        if name not in names:
            out.append(f"{where}: extra column {name} ({typ})")
    return out


def check_clickhouse(settings: Settings, report: Report, require_dbt: bool) -> None:
    """Compare every ClickHouse table of the contract with the live database."""
    db = settings.clickhouse_database
    c = clickhouse.client(settings, database="")
    try:
        live = clickhouse.table_columns(c, db)
    finally:
        c.close()
    for t in CLICKHOUSE_TABLES:
        where = f"clickhouse {db}.{t.name}"
        report.checked += 1
        if t.name not in live:
            if t.owner == "dbt" and not require_dbt:
                report.notes.append(f"{where}: not built yet (dbt owns it)")
            else:
                report.differences.append(f"{where}: table missing")
            continue
        report.differences.extend(compare_columns(where, t.columns, live[t.name], "clickhouse"))


def check_postgres(
    settings: Settings, report: Report, tables: tuple[Table, ...] = POSTGRES_TABLES
) -> None:
    """Compare the live-views tables (or Materialize views) with the contract."""
    with postgres.connect(settings) as conn:
        live = postgres.table_columns(conn)
    for t in tables:
        where = f"postgres {t.name}"
        report.checked += 1
        if t.name not in live:
            report.differences.append(f"{where}: table missing")
            continue
        report.differences.extend(compare_columns(where, t.columns, live[t.name], "postgres"))


def _json_type_ok(value: object, spec: str) -> bool:
    kinds = tuple(k for part in spec.split("|") for k in _JSON_TYPES.get(part, (object,)))
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def compare_value(where: str, item: RedisKey, raw: str) -> list[str]:
    """Differences between one Redis value and the contract's value fields."""
    try:
        value = json.loads(raw)
    except ValueError:
        return [f"{where}: value is not JSON"]
    if not isinstance(value, dict):
        return [f"{where}: value is not a JSON object"]
    out = []
    for f in item.fields:
        if f.name not in value:
            out.append(f"{where}: missing field {f.name} ({f.json})")
        elif not _json_type_ok(value[f.name], f.json):
            out.append(
                f"{where}: field {f.name} is {type(value[f.name]).__name__}, contract says {f.json}"
            )
    names = {f.name for f in item.fields}
    out.extend(f"{where}: extra field {k}" for k in value if k not in names)
    return out


def check_redis(settings: Settings, report: Report, sample: int = 20) -> None:
    """Check a sample of the keys of every Redis pattern."""
    r = redis_store.client(settings)
    try:
        for item in REDIS_KEYS:
            report.checked += 1
            keys = []
            for key in r.scan_iter(match=item.glob, count=500):
                keys.append(key)
                if len(keys) >= sample:
                    break
            if not keys:
                report.notes.append(f"redis {item.pattern}: no keys yet")
                continue
            for key in keys:
                kind = str(r.type(key))
                if kind != "string":
                    report.differences.append(
                        f"redis {key}: is a {kind}, contract says string (JSON)"
                    )
                    continue
                raw = r.get(key)
                if raw is not None:
                    report.differences.extend(compare_value(f"redis {key}", item, str(raw)))
    finally:
        r.close()


def check_kafka(settings: Settings, report: Report) -> None:
    """Every contract topic exists."""
    live = kafka.topic_partitions(settings)
    for t in TOPICS:
        report.checked += 1
        if t.name not in live:
            report.differences.append(f"kafka topic {t.name}: missing")


def run_check(settings: Settings, *, require_dbt: bool = False) -> Report:
    """Check every store; an unreachable store is one difference naming it."""
    report = Report()
    for fn in (check_kafka, check_postgres, check_redis):
        try:
            fn(settings, report)
        except (
            kafka.BrokerUnavailable,
            postgres.PostgresUnavailable,
            redis_store.RedisUnavailable,
        ) as exc:
            report.differences.append(str(exc))
    try:
        check_clickhouse(settings, report, require_dbt)
    except clickhouse.ClickHouseUnavailable as exc:
        report.differences.append(str(exc))
    return report
