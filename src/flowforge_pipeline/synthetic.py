"""Raw trades and quotes generated inside ClickHouse, for the batch layer's tests and benchmark.

A full day at the default rates is ~860k trades and ~4.3M quotes; producing that through the
generator and the broker takes far longer than the dbt build being measured, so these rows are
made by one `INSERT ... SELECT FROM numbers()` per table. Prices follow a deterministic
per-symbol wave on the instrument's tick grid, quotes straddle them, and ids are
`<seed>-<sequence>` like the generator's, so reruns insert the same rows.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from clickhouse_connect.driver.client import Client

from flowforge_pipeline.stores.clickhouse import quote_identifier

#: Accounts trades are spread over.
ACCOUNTS: tuple[str, ...] = tuple(f"acct-{i:02d}" for i in range(8))


@dataclass(frozen=True)
class Universe:
    """Instrument columns as parallel arrays, passed to ClickHouse as query parameters."""

    symbols: list[str]
    venues: list[str]
    reference_prices: list[float]
    tick_sizes: list[float]
    lot_sizes: list[float]


def universe() -> Universe:
    """The instruments of the reference file the generator and dbt's seed use."""
    text = resources.files("flowforge_pipeline.generator").joinpath("instruments.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    return Universe(
        symbols=[r["symbol"] for r in rows],
        venues=[r["venue"] for r in rows],
        reference_prices=[float(r["reference_price"]) for r in rows],
        tick_sizes=[float(r["tick_size"]) for r in rows],
        lot_sizes=[float(r["lot_size"]) for r in rows],
    )


def _params(
    start: datetime, seconds: float, count: int, first: int, seed: int
) -> dict[str, object]:
    u = universe()
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware UTC")
    return {
        "symbols": u.symbols,
        "venues": u.venues,
        "prices": u.reference_prices,
        "ticks": u.tick_sizes,
        "lots": u.lot_sizes,
        "accounts": list(ACCOUNTS),
        "start_us": int(start.timestamp() * 1_000_000),
        "step_us": seconds * 1_000_000 / max(count, 1),
        "count": count,
        "first": first,
        "seed": seed,
    }


# Row n (0-based within the batch) has sequence first+n and event time start + n*step (+ a
# deterministic jitter below one step); k = 1-based symbol index from a hash of the sequence.
_COMMON = """
    {first:UInt64} + number AS seq,
    (cityHash64({seed:UInt64}, seq) % length({symbols:Array(String)})) + 1 AS k,
    {symbols:Array(String)}[k] AS sym,
    {ticks:Array(Float64)}[k] AS tick,
    {prices:Array(Float64)}[k]
        * (1 + 0.02 * sin(seq / 50000.0 + k) + 0.002 * sin(seq / 97.0)) AS wave,
    fromUnixTimestamp64Micro(toInt64({start_us:Int64} + number * {step_us:Float64}
        + (cityHash64(seq, 7) % 1000) / 1000.0 * {step_us:Float64} * 0.9), 'UTC') AS ts
"""


def insert_trades(
    client: Client,
    table: str,
    start: datetime,
    seconds: float,
    count: int,
    *,
    first: int = 0,
    seed: int = 42,
) -> None:
    """Insert `count` trades spread over [start, start+seconds), sequences from `first`."""
    sql = f"""
        INSERT INTO {quote_identifier(table)}
            (trade_id, symbol, price, quantity, side, account, venue, event_time,
             kafka_partition, kafka_offset)
        SELECT
            concat(toString({{seed:UInt64}}), '-t-', toString(seq)),
            sym,
            round(wave / tick) * tick,
            {{lots:Array(Float64)}}[k] * (1 + cityHash64(seq, 1) % 10),
            if(cityHash64(seq, 2) % 2 = 0, 'buy', 'sell'),
            {{accounts:Array(String)}}[1 + cityHash64(seq, 3) % length({{accounts:Array(String)}})],
            {{venues:Array(String)}}[k],
            ts,
            toInt32(cityHash64(sym) % 3),
            toInt64(seq)
        FROM (SELECT {_COMMON} FROM numbers({{count:UInt64}}))
    """
    client.command(sql, parameters=_params(start, seconds, count, first, seed))


def insert_quotes(
    client: Client,
    table: str,
    start: datetime,
    seconds: float,
    count: int,
    *,
    first: int = 0,
    seed: int = 42,
) -> None:
    """Insert `count` quotes over [start, start+seconds): bid < ask, one to five ticks apart."""
    sql = f"""
        INSERT INTO {quote_identifier(table)}
            (quote_id, symbol, bid, ask, bid_size, ask_size, event_time,
             kafka_partition, kafka_offset)
        SELECT
            concat(toString({{seed:UInt64}}), '-q-', toString(seq)),
            sym,
            floor(wave / tick) * tick - tick * (cityHash64(seq, 4) % 2),
            floor(wave / tick) * tick + tick * (1 + cityHash64(seq, 5) % 4),
            {{lots:Array(Float64)}}[k] * (1 + cityHash64(seq, 6) % 50),
            {{lots:Array(Float64)}}[k] * (1 + cityHash64(seq, 8) % 50),
            ts,
            toInt32(cityHash64(sym) % 3),
            toInt64(seq)
        FROM (SELECT {_COMMON} FROM numbers({{count:UInt64}}))
    """
    client.command(sql, parameters=_params(start, seconds, count, first, seed))
