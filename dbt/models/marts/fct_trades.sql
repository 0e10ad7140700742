{{
    config(
        engine='MergeTree()',
        order_by=['symbol', 'event_time', 'trade_id'],
        partition_by='toYYYYMMDD(trade_date)',
        tags=['hourly'],
    )
}}

-- Incremental by UTC day (the table's partition): every day holding a newly ingested trade, or
-- an hour a newly ingested quote could be the prevailing quote in (its own and the next), is
-- rebuilt in full and replaces its partition.

{% set max_age = var('prevailing_quote_max_age_seconds') | int %}

with

{% if is_incremental() %}
affected_days as (
    select trade_date as day
    from {{ ref('stg_flowforge__trades') }}
    where {{ newly_ingested() }}
    union distinct
    select toDate(arrayJoin([quote_hour, quote_hour + toIntervalHour(1)]), 'UTC') as day
    from {{ ref('stg_flowforge__quotes') }}
    where {{ newly_ingested() }}
),
{% endif %}

trades as (
    select *
    from {{ ref('stg_flowforge__trades') }}
    {% if is_incremental() %}
        where trade_date in (select day from affected_days)
    {% endif %}
),

quotes as (
    select symbol, event_time as quote_time, bid, ask
    from {{ ref('stg_flowforge__quotes') }}
    {% if is_incremental() %}
        -- a prevailing quote is at most one hour old, so the hour before the day is enough
        where quote_date in (select day from affected_days)
            or toDate(quote_hour + toIntervalHour(1), 'UTC') in (select day from affected_days)
    {% endif %}
),

joined as (
    select
        trades.*,
        quotes.quote_time,
        quotes.bid,
        quotes.ask
    from trades
    asof left join quotes
        on trades.symbol = quotes.symbol
        and trades.event_time >= quotes.quote_time
),

final as (
    select
        trade_id,
        symbol,
        account,
        venue,
        side,
        price,
        quantity,
        signed_quantity,
        notional,
        event_time,
        trade_date,
        -- a quote older than the bound (or none: the join's default time) is not prevailing
        cast(
            if(quote_time >= event_time - toIntervalSecond({{ max_age }}), bid, null)
            as Nullable(Float64)
        ) as prevailing_bid,
        cast(
            if(quote_time >= event_time - toIntervalSecond({{ max_age }}), ask, null)
            as Nullable(Float64)
        ) as prevailing_ask,
        {{ built_at() }} as built_at
    from joined
)

select * from final
