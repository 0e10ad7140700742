{{
    config(
        engine='ReplacingMergeTree()',
        order_by=['symbol', 'hour'],
        partition_by='toYYYYMMDD(hour)',
        tags=['hourly'],
    )
}}

-- depends_on: {{ ref('stg_flowforge__trades') }}

{{ rollup('hour') }}
