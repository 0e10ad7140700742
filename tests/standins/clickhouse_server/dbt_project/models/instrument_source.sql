{{ config(materialized='table', engine='MergeTree()', order_by='symbol') }}
select symbol, lot_size from {{ ref('instruments') }}
