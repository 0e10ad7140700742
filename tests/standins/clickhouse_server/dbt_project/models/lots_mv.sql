{{ config(materialized='materialized_view', engine='MergeTree()', order_by='symbol') }}
select symbol, lot_size from {{ ref('instrument_source') }}
