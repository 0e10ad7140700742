{{
    config(
        engine='ReplacingMergeTree()',
        order_by=['symbol', 'trade_date'],
        partition_by='toYYYYMMDD(trade_date)',
        tags=['daily'],
    )
}}

-- depends_on: {{ ref('stg_flowforge__trades') }}

{{ rollup('day') }}
