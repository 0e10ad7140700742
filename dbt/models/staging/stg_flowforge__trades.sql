-- One row per trade_id: FINAL collapses records the sink stored more than once (at-least-once
-- delivery) because raw_trades is a ReplacingMergeTree keyed by (symbol, event_time, trade_id).
with source as (
    select * from {{ source('flowforge', 'raw_trades') }} final
),

renamed as (
    select
        trade_id,
        cast(symbol as String) as symbol,
        cast(account as String) as account,
        cast(venue as String) as venue,
        cast(side as String) as side,
        price,
        quantity,
        if(side = 'buy', quantity, -quantity) as signed_quantity,
        price * quantity as notional,
        event_time,
        toDate(event_time, 'UTC') as trade_date,
        toStartOfHour(event_time, 'UTC') as trade_hour,
        ingested_at
    from source
)

select * from renamed
