{{ config(materialized='table', engine='MergeTree()', order_by='symbol') }}
select symbol, name, lot_size * 2 as double_lot from {{ ref('stg_instruments') }}
