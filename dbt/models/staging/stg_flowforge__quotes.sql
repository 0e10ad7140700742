-- One row per quote: FINAL collapses re-delivered records (ReplacingMergeTree on
-- (symbol, event_time, quote_id)); spread and mid are derived once, here.
with source as (
    select * from {{ source('flowforge', 'raw_quotes') }} final
),

renamed as (
    select
        quote_id,
        cast(symbol as String) as symbol,
        bid,
        ask,
        bid_size,
        ask_size,
        (bid + ask) / 2 as mid,
        ask - bid as spread,
        (ask - bid) / ((bid + ask) / 2) * 10000 as spread_bps,
        event_time,
        toDate(event_time, 'UTC') as quote_date,
        toStartOfHour(event_time, 'UTC') as quote_hour,
        ingested_at
    from source
)

select * from renamed
