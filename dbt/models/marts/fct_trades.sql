{{
    config(
        unique_key='trade_id',
        engine='MergeTree()',
        order_by=['symbol', 'event_time', 'trade_id'],
        tags=['hourly'],
    )
}}

-- Incremental by UTC hour: every hour with a newly ingested trade, and every hour a newly
-- ingested quote could be the prevailing quote in (its own and the next), is rebuilt in full.

{% set max_age = var('prevailing_quote_max_age_seconds') | int %}

with

{% if is_incremental() %}
affected_hours as (
    select trade_hour as hour
    from {{ ref('stg_flowforge__trades') }}
    where {{ newly_ingested() }}
    union distinct
    select arrayJoin([quote_hour, quote_hour + toIntervalHour(1)]) as hour
    from {{ ref('stg_flowforge__quotes') }}
    where {{ newly_ingested() }}
),
{% endif %}

trades as (
    select *
    from {{ ref('stg_flowforge__trades') }}
    {% if is_incremental() %}
        where trade_hour in (select hour from affected_hours)
    {% endif %}
),

quotes as (
    select symbol, event_time as quote_time, bid, ask
    from {{ ref('stg_flowforge__quotes') }}
    {% if is_incremental() %}
        -- a prevailing quote is at most one hour old, so the hour before is enough
        where quote_hour in (select hour from affected_hours)
            or quote_hour + toIntervalHour(1) in (select hour from affected_hours)
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
