{{
    config(
        unique_key=['symbol', 'hour'],
        engine='ReplacingMergeTree()',
        order_by=['symbol', 'hour'],
        tags=['hourly'],
    )
}}

-- depends_on: {{ ref('stg_flowforge__trades') }}

{{ rollup('hour') }}
