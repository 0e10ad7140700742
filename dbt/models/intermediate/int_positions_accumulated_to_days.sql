{{ config(materialized='table', engine='MergeTree()', order_by=['account', 'symbol', 'trade_date'], tags=['daily']) }}

-- Position, average cost and cumulative realized PnL of each (account, symbol) at the close of
-- every UTC day it traded, by the average-cost method the live positions use:
--   a trade on the side of the position (or from flat) moves the average cost;
--   one against it realizes min(|q|, |position|) * (price - average) * sign(position);
--   one that crosses zero opens the remainder at its own price.
-- The average cost depends on the order of every earlier trade, so each pair's trades are folded
-- in (event_time, trade_id) order; the fold records the state whenever the day changes.
-- State: (position, average cost (0 when flat), realized, day, closes of earlier days).

with trades as (
    select account, symbol, trade_id, event_time, trade_date, price, signed_quantity
    from {{ ref('fct_trades') }}
),

tapes as (
    select
        account,
        symbol,
        arraySort(
            t -> (t.1, t.2),
            groupArray((event_time, trade_id, trade_date, price, signed_quantity))
        ) as tape
    from trades
    group by account, symbol
),

folded as (
    select
        account,
        symbol,
        arrayFold(
            (acc, t) -> (
                round(acc.1 + t.5, 9),
                multiIf(
                    acc.1 = 0 or sign(acc.1) = sign(t.5),
                    (acc.2 * abs(acc.1) + t.4 * abs(t.5)) / (abs(acc.1) + abs(t.5)),
                    round(acc.1 + t.5, 9) = 0, 0,
                    sign(round(acc.1 + t.5, 9)) != sign(acc.1), t.4,
                    acc.2
                ),
                acc.3 + if(
                    acc.1 = 0 or sign(acc.1) = sign(t.5),
                    0,
                    least(abs(t.5), abs(acc.1)) * (t.4 - acc.2) * sign(acc.1)
                ),
                t.3,
                -- a new day: keep the close of the previous one (1970-01-01 = no day yet)
                if(
                    acc.4 != t.3 and acc.4 != toDate(0),
                    arrayPushBack(acc.5, (acc.4, acc.1, acc.2, acc.3)),
                    acc.5
                )
            ),
            tape,
            (
                toFloat64(0),
                toFloat64(0),
                toFloat64(0),
                toDate(0),
                cast([], 'Array(Tuple(Date, Float64, Float64, Float64))')
            )
        ) as state
    from tapes
),

days as (
    select
        account,
        symbol,
        arrayJoin(arrayPushBack(state.5, (state.4, state.1, state.2, state.3))) as close
    from folded
),

final as (
    select
        account,
        symbol,
        close.1 as trade_date,
        close.2 as net_quantity,
        cast(if(close.2 = 0, null, close.3) as Nullable(Float64)) as avg_cost,
        close.4 as realized_pnl
    from days
)

select * from final
