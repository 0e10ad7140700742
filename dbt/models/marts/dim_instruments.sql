{{ config(materialized='table', engine='MergeTree()', order_by=['symbol'], tags=['hourly']) }}

-- The seed is src/flowforge_pipeline/generator/instruments.csv, the file the generator reads.
with instruments as (
    select * from {{ ref('instruments') }}
),

final as (
    select
        symbol,
        name,
        asset_class,
        venue,
        currency,
        tick_size,
        lot_size,
        reference_price,
        annual_volatility,
        session_timezone,
        session_open,
        session_close,
        {{ built_at() }} as built_at
    from instruments
)

select * from final
