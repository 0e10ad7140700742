"""The serving-layer contract: every table, key, channel and topic FlowForge relies on.

This module is the one place a name, column, type or freshness promise is written down.
DDL (`contract.ddl`), the JSON schema catalog (`contract export`), the live comparison
(`contract check`) and the dbt model contracts are all derived from or tested against it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Store = Literal["clickhouse", "postgres", "redis", "kafka"]
Owner = Literal["pipeline", "dbt"]


@dataclass(frozen=True)
class Column:
    """One column (or message/value field) with its type in each store that holds it."""

    name: str
    clickhouse: str = ""
    postgres: str = ""
    json: str = ""
    description: str = ""
    default: str = ""  # ClickHouse DEFAULT expression, when the writer does not send it


@dataclass(frozen=True)
class Freshness:
    """The promise: the newest write is at most `max_age_seconds` old while the stack runs."""

    max_age_seconds: int
    column: str  # the column/field holding the write time the promise is measured on


@dataclass(frozen=True)
class Table:
    """A table in ClickHouse or in the live-views Postgres."""

    name: str
    store: Literal["clickhouse", "postgres"]
    columns: tuple[Column, ...]
    writer: str
    owner: Owner
    freshness: Freshness
    description: str
    engine: str = ""
    order_by: tuple[str, ...] = ()
    partition_by: str = ""
    primary_key: tuple[str, ...] = ()

    def column(self, name: str) -> Column:
        """The column called `name`."""
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name}")


@dataclass(frozen=True)
class RedisKey:
    """A Redis key pattern whose value is a JSON object with the listed fields (SET/GET)."""

    pattern: str
    fields: tuple[Column, ...]
    writer: str
    freshness: Freshness
    description: str
    store: Literal["redis"] = "redis"

    def key(self, **parts: str) -> str:
        """The concrete key, e.g. `VWAP_KEY.key(symbol="AAPL")`."""
        return self.pattern.format(**parts)

    @property
    def glob(self) -> str:
        """The SCAN pattern matching every key of this item."""
        head = self.pattern.split("{", 1)[0]
        return head + "*"


@dataclass(frozen=True)
class Channel:
    """A Redis pub/sub channel and the JSON message published on it."""

    name: str
    fields: tuple[Column, ...]
    writer: str
    description: str
    store: Literal["redis"] = "redis"


@dataclass(frozen=True)
class Topic:
    """A Kafka topic with its key and JSON message schema."""

    name: str
    key: str
    fields: tuple[Column, ...]
    writer: str
    description: str
    retention_ms: int = -1  # -1: never delete by age (backfilled events carry old timestamps)
    store: Literal["kafka"] = "kafka"


def _c(name: str, ch: str, pg: str, js: str, desc: str, default: str = "") -> Column:
    return Column(name, ch, pg, js, desc, default)


def _ch(name: str, ch: str, desc: str, default: str = "") -> Column:
    js = "string"
    if ch.startswith(("Float", "Int", "UInt", "Decimal")) or ch.startswith("Nullable(Float"):
        js = "number"
    return Column(name, clickhouse=ch, json=js, description=desc, default=default)


def _js(name: str, js: str, desc: str) -> Column:
    return Column(name, json=js, description=desc)


TS6 = "DateTime64(6, 'UTC')"
TS3 = "DateTime64(3, 'UTC')"
NOW = "now64(3)"
SYM = "LowCardinality(String)"

# ------------------------------------------------------------------------------- topics
TRADES_TOPIC = Topic(
    name="trades",
    key="symbol",
    writer="generator",
    description=(
        "One JSON object per trade; Kafka record timestamp = event_time. "
        "Records with type='heartbeat' carry only symbol and event_time (plus type and "
        "schema_version) and advance event time for quiet instruments; consumers that "
        "store trades skip them."
    ),
    fields=(
        _js("schema_version", "integer", "payload version (1)"),
        _js("type", "string", "'trade' or 'heartbeat'"),
        _js("trade_id", "string", "deterministic id: '<seed>-<UTC yyyymmdd>-<sequence>'"),
        _js("symbol", "string", "instrument symbol (dim_instruments.symbol)"),
        _js("price", "number", "trade price, on the instrument's tick grid"),
        _js("quantity", "number", "trade size, a multiple of the lot size, > 0"),
        _js("side", "string", "'buy' or 'sell' from the account's point of view"),
        _js("account", "string", "trading account"),
        _js("venue", "string", "execution venue"),
        _js("event_time", "string", "ISO 8601 UTC timestamp with microseconds"),
    ),
)
QUOTES_TOPIC = Topic(
    name="quotes",
    key="symbol",
    writer="generator",
    description="Top-of-book quote updates; Kafka record timestamp = event_time.",
    fields=(
        _js("schema_version", "integer", "payload version (1)"),
        _js("quote_id", "string", "deterministic id: '<seed>-<UTC yyyymmdd>-<sequence>'"),
        _js("symbol", "string", "instrument symbol"),
        _js("bid", "number", "best bid price"),
        _js("ask", "number", "best ask price (> bid unless the book is crossed: bad input)"),
        _js("bid_size", "number", "size at the bid"),
        _js("ask_size", "number", "size at the ask"),
        _js("event_time", "string", "ISO 8601 UTC timestamp with microseconds"),
    ),
)
GROUND_TRUTH_TOPIC = Topic(
    name="ground_truth",
    key="symbol",
    writer="generator",
    description="Labels of injected anomalies; never read by the detector.",
    fields=(
        _js("schema_version", "integer", "payload version (1)"),
        _js("anomaly_id", "string", "deterministic label id"),
        _js("symbol", "string", "instrument symbol"),
        _js("type", "string", "injected anomaly type"),
        _js("severity", "string", "'low', 'medium' or 'high' (the severe grade); 'mild' or "
            "'moderate' below it"),
        _js("start_time", "string",
            "ISO 8601 UTC start of the episode: the first record it changes"),
        _js("end_time", "string", "ISO 8601 UTC end of the episode"),
        _js("magnitude", "number", "size of the injection in its natural unit"),
    ),
)
ALERTS_TOPIC = Topic(
    name="alerts",
    key="symbol",
    writer="flows.anomaly",
    description="Anomaly alerts, the same rows as ClickHouse anomaly_alerts.",
    fields=(
        _js("alert_id", "string", "deterministic id of the alert episode"),
        _js("symbol", "string", "instrument symbol"),
        _js("alert_type", "string", "spread, volume or price anomaly kind"),
        _js("severity", "string", "'low', 'medium' or 'high'"),
        _js("observed", "number", "observed value"),
        _js("baseline", "number", "baseline it was compared with"),
        _js("threshold", "number", "threshold that was crossed"),
        _js("event_time", "string", "ISO 8601 UTC event time of the observation"),
    ),
)
DLQ_TOPIC = Topic(
    name="dlq",
    key="source_topic",
    writer="every flow",
    description="Dead letters: input a flow could not use, with the reason; never dropped.",
    fields=(
        _js("flow", "string", "flow that rejected the record"),
        _js("source_topic", "string", "topic the record came from"),
        _js("partition", "integer", "source partition"),
        _js("offset", "integer", "source offset"),
        _js("reason", "string", "why it was rejected, e.g. 'late' or a parse error"),
        _js("payload", "string", "the record's value as received"),
        _js("failed_at", "string", "ISO 8601 UTC time of rejection"),
    ),
)
TOPICS: tuple[Topic, ...] = (
    TRADES_TOPIC,
    QUOTES_TOPIC,
    GROUND_TRUTH_TOPIC,
    ALERTS_TOPIC,
    DLQ_TOPIC,
)

# --------------------------------------------------------------------- ClickHouse tables
_KAFKA_POS = (
    _ch("kafka_partition", "Int32", "source partition (idempotent restart)"),
    _ch("kafka_offset", "Int64", "source offset (idempotent restart)"),
    _ch("ingested_at", TS3, "when the sink inserted the row", NOW),
)

RAW_TRADES = Table(
    name="raw_trades",
    store="clickhouse",
    writer="flows.raw_sink",
    owner="pipeline",
    freshness=Freshness(10, "ingested_at"),
    description="Every trade as received, batch-flushed (50 records or ~1 s).",
    engine="ReplacingMergeTree(ingested_at)",
    order_by=("symbol", "event_time", "trade_id"),
    partition_by="toYYYYMM(event_time)",
    columns=(
        _ch("trade_id", "String", "deterministic trade id"),
        _ch("symbol", SYM, "instrument symbol"),
        _ch("price", "Float64", "trade price"),
        _ch("quantity", "Float64", "trade size"),
        _ch("side", SYM, "'buy' or 'sell'"),
        _ch("account", SYM, "trading account"),
        _ch("venue", SYM, "execution venue"),
        _ch("event_time", TS6, "event time (UTC)"),
        *_KAFKA_POS,
    ),
)
RAW_QUOTES = Table(
    name="raw_quotes",
    store="clickhouse",
    writer="flows.raw_sink",
    owner="pipeline",
    freshness=Freshness(10, "ingested_at"),
    description="Every quote as received, batch-flushed (50 records or ~1 s).",
    engine="ReplacingMergeTree(ingested_at)",
    order_by=("symbol", "event_time", "quote_id"),
    partition_by="toYYYYMM(event_time)",
    columns=(
        _ch("quote_id", "String", "deterministic quote id"),
        _ch("symbol", SYM, "instrument symbol"),
        _ch("bid", "Float64", "best bid"),
        _ch("ask", "Float64", "best ask"),
        _ch("bid_size", "Float64", "size at the bid"),
        _ch("ask_size", "Float64", "size at the ask"),
        _ch("event_time", TS6, "event time (UTC)"),
        *_KAFKA_POS,
    ),
)
VWAP_5MIN = Table(
    name="vwap_5min",
    store="clickhouse",
    writer="flows.vwap",
    owner="pipeline",
    freshness=Freshness(420, "ingested_at"),
    description="Per-symbol VWAP of 5-minute tumbling event-time windows aligned to the clock.",
    engine="ReplacingMergeTree(ingested_at)",
    order_by=("symbol", "window_start"),
    partition_by="toYYYYMM(window_start)",
    columns=(
        _ch("symbol", SYM, "instrument symbol"),
        _ch("window_start", TS3, "window start (inclusive, UTC)"),
        _ch("window_end", TS3, "window end (exclusive, UTC)"),
        _ch("vwap", "Float64", "sum(price*quantity)/sum(quantity)"),
        _ch("volume", "Float64", "sum(quantity)"),
        _ch("notional", "Float64", "sum(price*quantity)"),
        _ch("trade_count", "UInt64", "number of trades"),
        _ch("high", "Float64", "highest trade price"),
        _ch("low", "Float64", "lowest trade price"),
        _ch("ingested_at", TS3, "when the row was inserted", NOW),
    ),
)
ROLLING_VOLATILITY = Table(
    name="rolling_volatility",
    store="clickhouse",
    writer="flows.volatility",
    owner="pipeline",
    freshness=Freshness(180, "ingested_at"),
    description=(
        "Rolling realized volatility of 1-minute log returns of the last trade price, "
        "annualized by the instrument's trading minutes per year, over 1h and 24h windows; "
        "null until the window holds its minimum number of returns."
    ),
    engine="ReplacingMergeTree(ingested_at)",
    order_by=("symbol", "window", "as_of"),
    partition_by="toYYYYMM(as_of)",
    columns=(
        _ch("symbol", SYM, "instrument symbol"),
        _ch("window", SYM, "'1h' or '24h'"),
        _ch("as_of", TS3, "end of the minute the figure is computed at (UTC)"),
        _ch("volatility", "Nullable(Float64)", "annualized realized volatility"),
        _ch("n_obs", "UInt32", "number of returns in the window"),
        _ch("ingested_at", TS3, "when the row was inserted", NOW),
    ),
)
ANOMALY_ALERTS = Table(
    name="anomaly_alerts",
    store="clickhouse",
    writer="flows.anomaly",
    owner="pipeline",
    freshness=Freshness(3600, "ingested_at"),
    description="Spread, volume and price anomaly alerts (one row per merged episode).",
    engine="ReplacingMergeTree(ingested_at)",
    order_by=("symbol", "event_time", "alert_id"),
    partition_by="toYYYYMM(event_time)",
    columns=(
        _ch("alert_id", "String", "deterministic id of the alert episode"),
        _ch("symbol", SYM, "instrument symbol"),
        _ch("alert_type", SYM, "anomaly kind"),
        _ch("severity", SYM, "'low', 'medium' or 'high'"),
        _ch("observed", "Float64", "observed value"),
        _ch("baseline", "Float64", "baseline"),
        _ch("threshold", "Float64", "threshold crossed"),
        _ch("event_time", TS6, "event time of the observation (UTC)"),
        _ch("ingested_at", TS3, "when the row was inserted", NOW),
    ),
)

# dbt-owned marts: the contract fixes their columns; dbt creates and fills them.
_BUILT = _ch("built_at", TS3, "when dbt built the row")
FCT_TRADES = Table(
    name="fct_trades",
    store="clickhouse",
    writer="dbt",
    owner="dbt",
    freshness=Freshness(7200, "built_at"),
    description="Deduplicated trades with the prevailing quote at execution.",
    engine="MergeTree",
    order_by=("symbol", "event_time", "trade_id"),
    columns=(
        _ch("trade_id", "String", "trade id"),
        _ch("symbol", "String", "instrument symbol"),
        _ch("account", "String", "trading account"),
        _ch("venue", "String", "execution venue"),
        _ch("side", "String", "'buy' or 'sell'"),
        _ch("price", "Float64", "trade price"),
        _ch("quantity", "Float64", "trade size"),
        _ch("signed_quantity", "Float64", "+quantity for buys, -quantity for sells"),
        _ch("notional", "Float64", "price*quantity"),
        _ch("event_time", TS6, "event time (UTC)"),
        _ch("trade_date", "Date", "UTC date of the trade"),
        _ch("prevailing_bid", "Nullable(Float64)", "last bid at or before the trade"),
        _ch("prevailing_ask", "Nullable(Float64)", "last ask at or before the trade"),
        _BUILT,
    ),
)
DIM_INSTRUMENTS = Table(
    name="dim_instruments",
    store="clickhouse",
    writer="dbt",
    owner="dbt",
    freshness=Freshness(86400 * 365, "built_at"),
    description="Instrument reference, from the same file the generator uses.",
    engine="MergeTree",
    order_by=("symbol",),
    columns=(
        _ch("symbol", "String", "instrument symbol"),
        _ch("name", "String", "instrument name"),
        _ch("asset_class", "String", "'equity', 'fx' or 'crypto'"),
        _ch("venue", "String", "primary venue"),
        _ch("currency", "String", "quote currency"),
        _ch("tick_size", "Float64", "price grid step"),
        _ch("lot_size", "Float64", "size grid step"),
        _ch("reference_price", "Float64", "starting price of the simulation"),
        _ch("annual_volatility", "Float64", "long-run annualized volatility"),
        _ch("session_timezone", "String", "IANA timezone of the session hours"),
        _ch("session_open", "String", "HH:MM local open, '00:00' for 24h instruments"),
        _ch("session_close", "String", "HH:MM local close, '24:00' for 24h instruments"),
        _BUILT,
    ),
)
_ROLLUP_STATS = (
    _ch("open", "Float64", "first trade price"),
    _ch("high", "Float64", "highest trade price"),
    _ch("low", "Float64", "lowest trade price"),
    _ch("close", "Float64", "last trade price"),
    _ch("vwap", "Nullable(Float64)", "volume-weighted average price"),
    _ch("volume", "Float64", "sum of quantity"),
    _ch("notional", "Float64", "sum of price*quantity"),
    _ch("trade_count", "UInt64", "number of trades"),
    _ch("avg_spread", "Nullable(Float64)", "mean quoted spread"),
    _ch("min_spread", "Nullable(Float64)", "smallest quoted spread"),
    _ch("max_spread", "Nullable(Float64)", "largest quoted spread"),
    _ch("avg_spread_bps", "Nullable(Float64)", "mean quoted spread in basis points of mid"),
    _BUILT,
)
HOURLY_ROLLUP = Table(
    name="hourly_rollup",
    store="clickhouse",
    writer="dbt",
    owner="dbt",
    freshness=Freshness(7200, "built_at"),
    description="Per symbol and UTC hour: OHLC, VWAP, volume, notional, trades, spreads.",
    engine="ReplacingMergeTree",
    order_by=("symbol", "hour"),
    columns=(
        _ch("symbol", "String", "instrument symbol"),
        _ch("hour", "DateTime('UTC')", "UTC hour"),
        *_ROLLUP_STATS,
    ),
)
DAILY_ROLLUP = Table(
    name="daily_rollup",
    store="clickhouse",
    writer="dbt",
    owner="dbt",
    freshness=Freshness(86400 + 7200, "built_at"),
    description="Per symbol and UTC day: OHLC, VWAP, volume, notional, trades, spreads.",
    engine="ReplacingMergeTree",
    order_by=("symbol", "trade_date"),
    columns=(
        _ch("symbol", "String", "instrument symbol"),
        _ch("trade_date", "Date", "UTC date"),
        *_ROLLUP_STATS,
    ),
)
RPT_DAILY_PNL = Table(
    name="rpt_daily_pnl",
    store="clickhouse",
    writer="dbt",
    owner="dbt",
    freshness=Freshness(86400 + 7200, "built_at"),
    description="Per account, symbol and UTC day: position, realized and unrealized PnL.",
    engine="ReplacingMergeTree",
    order_by=("account", "symbol", "trade_date"),
    columns=(
        _ch("trade_date", "Date", "UTC date"),
        _ch("account", "String", "trading account"),
        _ch("symbol", "String", "instrument symbol"),
        _ch("net_quantity", "Float64", "position at the close"),
        _ch("avg_cost", "Nullable(Float64)", "average cost of the open position"),
        _ch("close_price", "Nullable(Float64)", "mark: last trade price of the day"),
        _ch("realized_pnl", "Float64", "cumulative realized PnL up to the close"),
        _ch("unrealized_pnl", "Float64", "open position marked at close_price"),
        _ch("total_pnl", "Float64", "realized + unrealized"),
        _BUILT,
    ),
)

CLICKHOUSE_TABLES: tuple[Table, ...] = (
    RAW_TRADES,
    RAW_QUOTES,
    VWAP_5MIN,
    ROLLING_VOLATILITY,
    ANOMALY_ALERTS,
    FCT_TRADES,
    DIM_INSTRUMENTS,
    HOURLY_ROLLUP,
    DAILY_ROLLUP,
    RPT_DAILY_PNL,
)

# ----------------------------------------------------------------- live views (Postgres)
_UPD = _c("updated_at", "", "timestamptz", "string", "when the row last changed")
LIVE_QUOTES = Table(
    name="live_quotes",
    store="postgres",
    writer="flows.live_views",
    owner="pipeline",
    freshness=Freshness(2, "updated_at"),
    description="Latest top of book per symbol.",
    primary_key=("symbol",),
    columns=(
        _c("symbol", "", "text", "string", "instrument symbol"),
        _c("bid", "", "double precision", "number", "best bid"),
        _c("ask", "", "double precision", "number", "best ask"),
        _c("bid_size", "", "double precision", "number", "size at the bid"),
        _c("ask_size", "", "double precision", "number", "size at the ask"),
        _c("mid", "", "double precision", "number", "(bid+ask)/2"),
        _c("spread", "", "double precision", "number", "ask-bid"),
        _c("spread_bps", "", "double precision", "number", "spread/mid*10000"),
        _c("quote_time", "", "timestamptz", "string", "event time of the quote"),
        _UPD,
    ),
)
LIVE_POSITIONS = Table(
    name="live_positions",
    store="postgres",
    writer="flows.live_views",
    owner="pipeline",
    freshness=Freshness(2, "updated_at"),
    description="Net position per account and symbol (average-cost method).",
    primary_key=("account", "symbol"),
    columns=(
        _c("account", "", "text", "string", "trading account"),
        _c("symbol", "", "text", "string", "instrument symbol"),
        _c("net_quantity", "", "double precision", "number", "signed net position"),
        _c("avg_cost", "", "double precision", "number", "average cost of the open position"),
        _c("cost_basis", "", "double precision", "number", "net_quantity*avg_cost"),
        _c("last_trade_time", "", "timestamptz", "string", "event time of the last trade"),
        _UPD,
    ),
)
LIVE_PNL = Table(
    name="live_pnl",
    store="postgres",
    writer="flows.live_views",
    owner="pipeline",
    freshness=Freshness(2, "updated_at"),
    description=(
        "PnL per account and symbol, unrealized marked to the live mid; "
        "a row with symbol '*' per account holds the account total."
    ),
    primary_key=("account", "symbol"),
    columns=(
        _c("account", "", "text", "string", "trading account"),
        _c("symbol", "", "text", "string", "instrument symbol, '*' for the account total"),
        _c("net_quantity", "", "double precision", "number", "signed net position"),
        _c("avg_cost", "", "double precision", "number", "average cost"),
        _c("mark_price", "", "double precision", "number", "live mid used as mark"),
        _c("realized_pnl", "", "double precision", "number", "realized PnL"),
        _c("unrealized_pnl", "", "double precision", "number", "net_quantity*(mark-avg_cost)"),
        _c("total_pnl", "", "double precision", "number", "realized + unrealized"),
        _UPD,
    ),
)
POSTGRES_TABLES: tuple[Table, ...] = (LIVE_QUOTES, LIVE_POSITIONS, LIVE_PNL)

# ---------------------------------------------------------------------------- Redis
VWAP_KEY = RedisKey(
    pattern="latest:vwap:{symbol}",
    writer="flows.vwap",
    freshness=Freshness(420, "updated_at"),
    description="The newest closed 5-minute VWAP window of a symbol (same numbers as vwap_5min).",
    fields=(
        _js("symbol", "string", "instrument symbol"),
        _js("window_start", "string", "ISO 8601 UTC window start"),
        _js("window_end", "string", "ISO 8601 UTC window end"),
        _js("vwap", "number", "volume-weighted average price"),
        _js("volume", "number", "sum of quantity"),
        _js("notional", "number", "sum of price*quantity"),
        _js("trade_count", "integer", "number of trades"),
        _js("high", "number", "highest price"),
        _js("low", "number", "lowest price"),
        _js("updated_at", "string", "ISO 8601 UTC time of the write"),
    ),
)
POSITION_KEY = RedisKey(
    pattern="latest:position:{symbol}",
    writer="flows.positions",
    freshness=Freshness(10, "updated_at"),
    description="Net position of a symbol over all accounts, with the per-account breakdown.",
    fields=(
        _js("symbol", "string", "instrument symbol"),
        _js("net_quantity", "number", "signed net position over all accounts"),
        _js("avg_cost", "number", "average cost of the net open position (0 when flat)"),
        _js("realized_pnl", "number", "realized PnL over all accounts"),
        _js("last_trade_time", "string", "ISO 8601 UTC event time of the last trade"),
        _js("accounts", "object", "account -> {net_quantity, avg_cost, realized_pnl}"),
        _js("updated_at", "string", "ISO 8601 UTC time of the write"),
    ),
)
VOLATILITY_KEY = RedisKey(
    pattern="latest:volatility:{symbol}",
    writer="flows.volatility",
    freshness=Freshness(180, "updated_at"),
    description="Newest rolling volatility figures of a symbol (same as rolling_volatility).",
    fields=(
        _js("symbol", "string", "instrument symbol"),
        _js("as_of", "string", "ISO 8601 UTC end of the minute"),
        _js("vol_1h", "number|null", "annualized 1h realized volatility"),
        _js("vol_24h", "number|null", "annualized 24h realized volatility"),
        _js("n_obs_1h", "integer", "returns in the 1h window"),
        _js("n_obs_24h", "integer", "returns in the 24h window"),
        _js("updated_at", "string", "ISO 8601 UTC time of the write"),
    ),
)
REDIS_KEYS: tuple[RedisKey, ...] = (VWAP_KEY, POSITION_KEY, VOLATILITY_KEY)

TABLE_UPDATE_CHANNEL = Channel(
    name="flowforge:broadcast:table_update",
    writer="every flow that inserts into ClickHouse, after the insert succeeded",
    description="Tells dashboards a table has new rows; never published for a failed insert.",
    fields=(
        _js("type", "string", "always 'table_update'"),
        _js("table", "string", "ClickHouse table that received rows"),
        _js("rows", "integer", "rows in the insert"),
        _js("min_event_time", "string", "ISO 8601 UTC oldest event time in the insert"),
        _js("max_event_time", "string", "ISO 8601 UTC newest event time in the insert"),
        _js("flushed_at", "string", "ISO 8601 UTC time the insert succeeded"),
    ),
)
CHANNELS: tuple[Channel, ...] = (TABLE_UPDATE_CHANNEL,)


def table(name: str) -> Table:
    """The ClickHouse or Postgres table called `name`."""
    for t in (*CLICKHOUSE_TABLES, *POSTGRES_TABLES):
        if t.name == name:
            return t
    raise KeyError(f"no table {name!r} in the contract")


def catalog_json() -> dict[str, Any]:
    """The whole catalog as plain data: the schema catalog FlowForge reads."""

    def _clean(obj: Any) -> Any:
        data = asdict(obj)
        for col in data.get("columns", ()) + data.get("fields", ()):
            for k in [k for k, v in col.items() if v == ""]:
                del col[k]
        return {k: v for k, v in data.items() if v not in ("", ())}

    return {
        "version": 1,
        "clickhouse": [_clean(t) for t in CLICKHOUSE_TABLES],
        "postgres": [_clean(t) for t in POSTGRES_TABLES],
        "redis_keys": [_clean(k) for k in REDIS_KEYS],
        "channels": [_clean(c) for c in CHANNELS],
        "topics": [_clean(t) for t in TOPICS],
    }
