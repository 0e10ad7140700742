{{
    config(
        unique_key=['symbol', 'trade_date'],
        engine='ReplacingMergeTree()',
        order_by=['symbol', 'trade_date'],
        tags=['daily'],
    )
}}

-- depends_on: {{ ref('stg_flowforge__trades') }}

{{ rollup('day') }}
