"""dbt on the real embedded ClickHouse: build, incremental slices with late data, PnL."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flowforge_pipeline.contract import catalog
from flowforge_pipeline.contract.apply import init_clickhouse
from flowforge_pipeline.dbt_runner import run_dbt
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stores.clickhouse import client, table_columns
from flowforge_pipeline.synthetic import insert_quotes, insert_trades

DAY = datetime(2025, 3, 3, tzinfo=UTC)
MARTS = [t for t in catalog.CLICKHOUSE_TABLES if t.owner == "dbt"]
HOUR = 3600
# A small slice of the default rates (10 trades/s, 50 quotes/s): a tenth, two hours per slice.
TRADES_PER_HOUR = 3600
QUOTES_PER_HOUR = 18000


def _fresh_database(settings: Settings) -> Settings:
    own = settings.model_copy(update={"clickhouse_database": f"dbt_{uuid.uuid4().hex[:10]}"})
    init_clickhouse(own)
    return own


def _slice(settings: Settings, start: datetime, hours: int, first: int) -> None:
    c = client(settings)
    try:
        insert_trades(c, "raw_trades", start, hours * HOUR, hours * TRADES_PER_HOUR, first=first)
        insert_quotes(c, "raw_quotes", start, hours * HOUR, hours * QUOTES_PER_HOUR, first=first)
    finally:
        c.close()


def _dbt(settings: Settings, *args: str) -> None:
    assert run_dbt(settings, list(args)) == 0, f"dbt {' '.join(args)} failed"


def _contents(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every mart's rows without built_at, in key order."""
    c = client(settings)
    try:
        out = {}
        for t in MARTS:
            cols = [col.name for col in t.columns if col.name != "built_at"]
            order = ", ".join(t.order_by)
            out[t.name] = c.query(
                f"SELECT {', '.join(cols)} FROM {t.name} ORDER BY {order}"
            ).result_rows
        return out
    finally:
        c.close()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        # sums may be merged in another order across threads: equal to the last few bits
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)
    return bool(a == b)


@pytest.fixture(scope="module")
def sliced(stack_settings: Settings) -> Iterator[tuple[Settings, dict[str, list[tuple]]]]:
    """A database built in three incremental slices plus late and re-delivered rows."""
    settings = _fresh_database(stack_settings)
    evening = DAY + timedelta(hours=20)
    _slice(settings, evening, 2, first=0)  # day 1, 20:00-22:00
    _dbt(settings, "build")
    _slice(settings, evening + timedelta(hours=2), 2, first=10_000_000)  # 22:00-24:00
    _dbt(settings, "run")
    _slice(settings, evening + timedelta(hours=4), 2, first=20_000_000)  # day 2, 00:00-02:00
    _dbt(settings, "run")
    # late rows for 21:00-22:00 of day 1, already built, and 20:00-21:00 delivered again
    _slice(settings, evening + timedelta(hours=1), 1, first=30_000_000)
    _slice(settings, evening, 1, first=0)
    _dbt(settings, "build")
    yield settings, _contents(settings)


def test_three_slices_with_late_rows_equal_a_full_refresh(sliced: tuple[Settings, dict]) -> None:
    settings, incremental = sliced
    assert all(incremental[t.name] for t in MARTS), "a mart is empty"
    _dbt(settings, "build", "--full-refresh")
    full = _contents(settings)
    for t in MARTS:
        rows_i, rows_f = incremental[t.name], full[t.name]
        assert len(rows_i) == len(rows_f), t.name
        for ri, rf in zip(rows_i, rows_f, strict=True):
            assert all(_same(a, b) for a, b in zip(ri, rf, strict=True)), (t.name, ri, rf)


def test_late_rows_reach_the_built_hour(sliced: tuple[Settings, dict]) -> None:
    settings, _ = sliced
    c = client(settings)
    try:
        raw = c.query(
            "SELECT symbol, count(DISTINCT trade_id), sum(quantity) FROM "
            "(SELECT * FROM raw_trades FINAL) WHERE toStartOfHour(event_time) = {h:DateTime} "
            "GROUP BY symbol ORDER BY symbol",
            parameters={"h": DAY + timedelta(hours=21)},
        ).result_rows
        mart = c.query(
            "SELECT symbol, trade_count, volume FROM hourly_rollup WHERE hour = {h:DateTime} "
            "ORDER BY symbol",
            parameters={"h": DAY + timedelta(hours=21)},
        ).result_rows
        # the hour holds its original trades plus a whole hour of late ones; re-delivered
        # rows (same ids) are not counted twice
        assert sum(r[1] for r in raw) == 2 * TRADES_PER_HOUR
        assert [(s, n) for s, n, _ in mart] == [(s, n) for s, n, _ in raw]
        for (_, _, v_mart), (_, _, v_raw) in zip(mart, raw, strict=True):
            assert math.isclose(v_mart, v_raw, rel_tol=1e-12)
        dupes = c.command("SELECT count() - uniqExact(trade_id) FROM fct_trades")
        assert int(str(dupes)) == 0
    finally:
        c.close()


def test_built_marts_have_the_catalog_schema(sliced: tuple[Settings, dict]) -> None:
    settings, _ = sliced
    c = client(settings)
    try:
        live = table_columns(c, settings.clickhouse_database)
    finally:
        c.close()
    for t in MARTS:
        assert list(live[t.name].items()) == [(col.name, col.clickhouse) for col in t.columns]


def _reference_positions(trades: list[tuple]) -> dict[tuple[str, str], tuple[float, float, float]]:
    """Average-cost positions computed trade by trade, as the streaming positions flow does."""
    state: dict[tuple[str, str], tuple[float, float, float]] = {}
    for account, symbol, price, qty in trades:
        pos, avg, realized = state.get((account, symbol), (0.0, 0.0, 0.0))
        new = round(pos + qty, 9)
        if pos == 0 or (pos > 0) == (qty > 0):
            avg = (avg * abs(pos) + price * abs(qty)) / (abs(pos) + abs(qty))
        else:
            realized += min(abs(qty), abs(pos)) * (price - avg) * (1 if pos > 0 else -1)
            if new == 0:
                avg = 0.0
            elif (new > 0) != (pos > 0):
                avg = price
        state[(account, symbol)] = (new, avg, realized)
    return state


def test_daily_pnl_matches_trade_by_trade_average_cost(sliced: tuple[Settings, dict]) -> None:
    settings, _ = sliced
    c = client(settings)
    try:
        trades = c.query(
            "SELECT account, symbol, price, signed_quantity FROM fct_trades "
            "ORDER BY event_time, trade_id"
        ).result_rows
        last_day = c.query(
            "SELECT account, symbol, net_quantity, avg_cost, realized_pnl FROM rpt_daily_pnl "
            "WHERE trade_date = (SELECT max(trade_date) FROM rpt_daily_pnl)"
        ).result_rows
    finally:
        c.close()
    expected = _reference_positions(trades)
    assert len(last_day) == len(expected)
    for account, symbol, qty, avg, realized in last_day:
        e_qty, e_avg, e_realized = expected[(account, symbol)]
        assert qty == e_qty
        assert (avg is None) == (e_qty == 0)
        if avg is not None:
            assert math.isclose(avg, e_avg, rel_tol=1e-9)
        assert math.isclose(realized, e_realized, rel_tol=1e-9, abs_tol=1e-6)


def test_docs_generate(sliced: tuple[Settings, dict]) -> None:
    settings, _ = sliced
    _dbt(settings, "docs", "generate")
    catalog_json = settings.state_path / "dbt" / "target" / "catalog.json"
    assert "rpt_daily_pnl" in catalog_json.read_text()
