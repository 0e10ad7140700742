{{
    config(
        engine='ReplacingMergeTree()',
        order_by=['account', 'symbol', 'trade_date'],
        partition_by='toYYYYMMDD(trade_date)',
        tags=['daily'],
    )
}}

-- depends_on: {{ ref('stg_flowforge__trades') }}

-- One row per (account, symbol) and every UTC day with trading from the pair's first trade on:
-- the position, average cost and cumulative realized PnL at the day's close, marked at the
-- symbol's last trade price at or before that close. PnL is path-dependent, so positions are
-- accumulated over the whole history; incrementally only the days from the earliest day with a
-- newly ingested trade onwards are replaced.

with

day_close as (
    select
        account,
        symbol,
        trade_date,
        (net_quantity, avg_cost, realized_pnl) as state
    from {{ ref('int_positions_accumulated_to_days') }}
),

trading_days as (
    select distinct trade_date from {{ ref('fct_trades') }}
),

marks as (
    select
        symbol,
        trade_date,
        argMax(price, tuple(event_time, trade_id)) as close_price
    from {{ ref('fct_trades') }}
    group by symbol, trade_date
),

pairs as (
    select account, symbol, min(trade_date) as first_date
    from day_close
    group by account, symbol
),

spine as (
    select pairs.account, pairs.symbol, trading_days.trade_date
    from pairs
    cross join trading_days
    where trading_days.trade_date >= pairs.first_date
    {% if is_incremental() %}
        and trading_days.trade_date >= (
            select minOrNull(trade_date)
            from {{ ref('stg_flowforge__trades') }}
            where {{ newly_ingested() }}
        )
    {% endif %}
),

carried as (
    select
        spine.account as account,
        spine.symbol as symbol,
        spine.trade_date as trade_date,
        day_close.state as state
    from spine
    asof left join day_close
        on spine.account = day_close.account
        and spine.symbol = day_close.symbol
        and spine.trade_date >= day_close.trade_date
),

marked as (
    select
        carried.*,
        marks.close_price as close_price
    from carried
    asof left join marks
        on carried.symbol = marks.symbol
        and carried.trade_date >= marks.trade_date
),

final as (
    select
        trade_date,
        account,
        symbol,
        tupleElement(state, 1) as net_quantity,
        cast(tupleElement(state, 2) as Nullable(Float64)) as avg_cost,
        cast(close_price as Nullable(Float64)) as close_price,
        tupleElement(state, 3) as realized_pnl,
        -- a pair exists only after a trade of its symbol, so an open position always has a mark
        if(
            net_quantity = 0 or close_price is null,
            0,
            net_quantity * (assumeNotNull(close_price) - assumeNotNull(avg_cost))
        ) as unrealized_pnl,
        realized_pnl + unrealized_pnl as total_pnl,
        {{ built_at() }} as built_at
    from marked
)

select * from final
