{{ config(materialized='incremental', incremental_strategy='append', order_by='id') }}
select number as id, toString(number) as label from numbers(5)
{% if is_incremental() %} where id >= (select count() from {{ this }}) - 2 {% endif %}
