{{ config(tags=['daily']) }}

-- The position after every trade of an (account, symbol), average-cost method:
-- a trade that grows the position moves the average cost; one that shrinks it realizes
-- closed_quantity * (price - average cost) and leaves the average unchanged; one that crosses
-- zero closes the old position and opens the remainder at its own price.
-- Because shrinking trades never move the average, the average cost is the quantity-weighted
-- price of the quantities that opened or grew the current same-sign "episode" of the position,
-- which window sums compute without a row-by-row loop.

with trades as (
    select account, symbol, trade_id, event_time, trade_date, price, signed_quantity
    from {{ ref('fct_trades') }}
),

running as (
    select
        *,
        -- rounded so a flat position is exactly zero despite binary fractions of lot sizes
        round(sum(signed_quantity) over by_trade, 9) as position_after
    from trades
    window by_trade as (
        partition by account, symbol
        order by event_time, trade_id
        rows between unbounded preceding and current row
    )
),

classified as (
    select
        *,
        round(position_after - signed_quantity, 9) as position_before,
        position_after != 0 and sign(position_before) != sign(position_after) as opens_episode,
        multiIf(
            opens_episode, abs(position_after),
            sign(signed_quantity) = sign(position_before), abs(signed_quantity),
            0
        ) as added_quantity,
        if(
            position_before != 0 and sign(signed_quantity) != sign(position_before),
            least(abs(signed_quantity), abs(position_before)),
            0
        ) as closed_quantity
    from running
),

episodes as (
    select
        *,
        sum(toUInt64(opens_episode)) over by_trade as episode
    from classified
    window by_trade as (
        partition by account, symbol
        order by event_time, trade_id
        rows between unbounded preceding and current row
    )
),

costed as (
    select
        *,
        cast(
            if(
                position_after = 0,
                null,
                sum(added_quantity * price) over by_episode / sum(added_quantity) over by_episode
            )
            as Nullable(Float64)
        ) as avg_cost_after
    from episodes
    window by_episode as (
        partition by account, symbol, episode
        order by event_time, trade_id
        rows between unbounded preceding and current row
    )
),

realized as (
    select
        *,
        lagInFrame(avg_cost_after) over by_trade as avg_cost_before,
        if(
            closed_quantity > 0,
            closed_quantity * (price - assumeNotNull(avg_cost_before)) * sign(position_before),
            0
        ) as realized_increment
    from costed
    window by_trade as (
        partition by account, symbol
        order by event_time, trade_id
        rows between unbounded preceding and current row
    )
),

final as (
    select
        account,
        symbol,
        trade_id,
        event_time,
        trade_date,
        price,
        signed_quantity,
        position_before,
        position_after,
        avg_cost_before,
        avg_cost_after,
        realized_increment,
        sum(realized_increment) over by_trade as realized_pnl_after
    from realized
    window by_trade as (
        partition by account, symbol
        order by event_time, trade_id
        rows between unbounded preceding and current row
    )
)

select * from final
