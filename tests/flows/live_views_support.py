"""Live-views test support: a private Postgres schema, the Materialize view bodies on it."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from flowforge_pipeline.contract.catalog import LIVE_PNL, LIVE_POSITIONS, LIVE_QUOTES, Table
from flowforge_pipeline.contract.ddl import postgres_create
from flowforge_pipeline.generator.instruments import load_instruments
from flowforge_pipeline.generator.tape import Tape, to_us
from flowforge_pipeline.live_views.materialize import views
from flowforge_pipeline.settings import Settings

TABLES: tuple[Table, ...] = (LIVE_QUOTES, LIVE_POSITIONS, LIVE_PNL)


def schema_settings(base: Settings, schema: str) -> Settings:
    """Settings whose live-views URL puts every unqualified name in `schema`."""
    url = base.postgres + "?options=" + quote(f"-c search_path={schema}")
    return base.model_copy(update={"live_views_url": SecretStr(url)})


def create_schema(base: Settings) -> tuple[str, Settings]:
    """A fresh schema holding the contract's live tables; settings pointing at it."""
    schema = f"lv_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base.postgres, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    settings = schema_settings(base, schema)
    with psycopg.connect(settings.postgres, autocommit=True) as conn:
        for t in TABLES:
            conn.execute(postgres_create(t).encode())
    return schema, settings


def create_sql_views(base: Settings, payloads: dict[str, list[bytes]]) -> Settings:
    """A second schema where the raw topics are jsonb tables and the Materialize views run."""
    schema = f"mz_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base.postgres, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    settings = schema_settings(base, schema)
    with psycopg.connect(settings.postgres, autocommit=True) as conn:
        for name in ("trades_raw", "quotes_raw"):
            conn.execute(
                sql.SQL("CREATE TABLE {} (data jsonb NOT NULL)").format(sql.Identifier(name))
            )
            with (
                conn.cursor() as cur,
                cur.copy(sql.SQL("COPY {} (data) FROM STDIN").format(sql.Identifier(name))) as copy,
            ):
                for p in payloads[name.removesuffix("_raw")]:
                    copy.write_row((p.decode(),))
        for view in views():
            conn.execute(
                sql.SQL("CREATE VIEW {} AS ").format(sql.Identifier(view.name)) + sql.SQL(view.body)
            )  # type: ignore[arg-type]
    return settings


def read_table(settings: Settings, t: Table) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rows by primary key, every column but updated_at."""
    cols = [c.name for c in t.columns if c.name != "updated_at"]
    with psycopg.connect(settings.postgres, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in cols), sql.Identifier(t.name)
            )
        ).fetchall()
    out = {}
    for r in rows:
        rec = dict(zip(cols, r, strict=True))
        out[tuple(rec[k] for k in t.primary_key)] = rec
    return out


def assert_same_numbers(flow: Settings, views_: Settings) -> dict[str, int]:
    """Every live table equal between the flow's schema and the views' schema."""
    counts = {}
    for t in TABLES:
        got, want = read_table(flow, t), read_table(views_, t)
        assert set(got) == set(want), f"{t.name}: keys differ {set(got) ^ set(want)}"
        for key, row in want.items():
            for col, value in row.items():
                if isinstance(value, float):
                    scale = max(1.0, abs(value))
                    assert got[key][col] == pytest.approx(value, rel=1e-7, abs=1e-6 * scale), (
                        t.name,
                        key,
                        col,
                    )
                else:
                    assert got[key][col] == value, (t.name, key, col)
        counts[t.name] = len(want)
    return counts


def generated(
    seed: int,
    start: str,
    minutes: int,
    symbols: set[str] | None = None,
    tps: float = 10.0,
    qps: float = 50.0,
) -> dict[str, list[tuple[str, bytes]]]:
    """The generator's tape over a window: per topic, (key, value) in tape order."""
    from datetime import datetime, timedelta

    insts = tuple(i for i in load_instruments() if symbols is None or i.symbol in symbols)
    tape = Tape(insts, seed, tps, qps)
    t0 = datetime.fromisoformat(start)
    out: dict[str, list[tuple[str, bytes]]] = {"trades": [], "quotes": []}
    for _, recs in tape.records(to_us(t0), to_us(t0 + timedelta(minutes=minutes))):
        for topic, key, _, value in recs:
            if topic in out:
                out[topic].append((key, value.encode()))
    return out


def values_only(tape: dict[str, list[tuple[str, bytes]]]) -> dict[str, list[bytes]]:
    return {k: [v for _, v in recs] for k, recs in tape.items()}


def payload_json(value: bytes) -> dict[str, Any]:
    return json.loads(value)
