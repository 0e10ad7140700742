{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='id', order_by='id') }}
select number as id, '{{ var("run_label", "first") }}' as label from numbers(4)
