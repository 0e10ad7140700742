{% macro rollup(grain) -%}
{#-
  Per symbol and `grain` ('hour' or 'day'): OHLC, VWAP, volume, notional, trades from fct_trades
  and quoted-spread statistics from every quote of the period. Incrementally only the UTC days
  holding a newly ingested trade or quote are recomputed, in full, and replace their partitions
  (insert_overwrite), so late rows for a closed period are folded in exactly.
-#}
{%- set period = 'hour' if grain == 'hour' else 'trade_date' -%}
{%- set quote_period = 'quote_hour' if grain == 'hour' else 'quote_date' -%}
{%- set of_event = "toStartOfHour(event_time, 'UTC')" if grain == 'hour' else "trade_date" -%}

with

{% if is_incremental() %}
affected_days as (
    select trade_date as day
    from {{ ref('stg_flowforge__trades') }}
    where {{ newly_ingested() }}
    union distinct
    select quote_date as day
    from {{ ref('stg_flowforge__quotes') }}
    where {{ newly_ingested() }}
),
{% endif %}

trades as (
    select symbol, {{ of_event }} as period, trade_id, event_time, price, quantity, notional
    from {{ ref('fct_trades') }}
    {% if is_incremental() %}
        where trade_date in (select day from affected_days)
    {% endif %}
),

quotes as (
    select symbol, {{ quote_period }} as period, spread, spread_bps
    from {{ ref('stg_flowforge__quotes') }}
    {% if is_incremental() %}
        where quote_date in (select day from affected_days)
    {% endif %}
),

trade_stats as (
    select
        symbol,
        period,
        argMin(price, (event_time, trade_id)) as open,
        max(price) as high,
        min(price) as low,
        argMax(price, (event_time, trade_id)) as close,
        sum(quantity) as volume,
        sum(notional) as notional,
        count() as trade_count
    from trades
    group by symbol, period
),

spread_stats as (
    select
        symbol,
        period,
        cast(avg(spread) as Nullable(Float64)) as avg_spread,
        cast(min(spread) as Nullable(Float64)) as min_spread,
        cast(max(spread) as Nullable(Float64)) as max_spread,
        cast(avg(spread_bps) as Nullable(Float64)) as avg_spread_bps
    from quotes
    group by symbol, period
),

final as (
    select
        trade_stats.symbol as symbol,
        {% if grain == 'hour' -%}
        toDateTime(trade_stats.period, 'UTC') as hour,
        {%- else -%}
        trade_stats.period as trade_date,
        {%- endif %}
        trade_stats.open as open,
        trade_stats.high as high,
        trade_stats.low as low,
        trade_stats.close as close,
        cast(
            if(trade_stats.volume > 0, trade_stats.notional / trade_stats.volume, null)
            as Nullable(Float64)
        ) as vwap,
        trade_stats.volume as volume,
        trade_stats.notional as notional,
        toUInt64(trade_stats.trade_count) as trade_count,
        spread_stats.avg_spread as avg_spread,
        spread_stats.min_spread as min_spread,
        spread_stats.max_spread as max_spread,
        spread_stats.avg_spread_bps as avg_spread_bps,
        {{ built_at() }} as built_at
    from trade_stats
    left join spread_stats
        on trade_stats.symbol = spread_stats.symbol
        and trade_stats.period = spread_stats.period
)

select * from final
{%- endmacro %}
