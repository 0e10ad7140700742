-- A day's volume, trade count, high and low are those of its hours.
with hours as (
    select
        symbol,
        toDate(hour, 'UTC') as trade_date,
        sum(volume) as volume,
        sum(trade_count) as trade_count,
        max(high) as high,
        min(low) as low
    from {{ ref('hourly_rollup') }}
    group by symbol, trade_date
)

select hours.*
from hours
left join {{ ref('daily_rollup') }} as days
    on hours.symbol = days.symbol and hours.trade_date = days.trade_date
where abs(hours.volume - days.volume) > 1e-6 * greatest(hours.volume, 1)
    or hours.trade_count != days.trade_count
    or hours.high != days.high
    or hours.low != days.low
