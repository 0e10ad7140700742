-- Rollup volume and trade count equal those of the deduplicated raw trades for every
-- (symbol, hour), and no trading hour is missing from the rollup.
with raw as (
    select symbol, trade_hour as hour, sum(quantity) as volume, count() as trade_count
    from {{ ref('stg_flowforge__trades') }}
    group by symbol, hour
),

rollup as (
    select symbol, hour, volume, trade_count
    from {{ ref('hourly_rollup') }}
)

select raw.symbol, raw.hour, raw.volume, rollup.volume as rollup_volume
from raw
left join rollup on raw.symbol = rollup.symbol and raw.hour = rollup.hour
where abs(raw.volume - rollup.volume) > 1e-6 * greatest(raw.volume, 1)
    or raw.trade_count != rollup.trade_count
