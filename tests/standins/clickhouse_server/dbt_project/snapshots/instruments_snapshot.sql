{% snapshot instruments_snapshot %}
{{ config(target_schema=target.schema, unique_key='symbol', strategy='check', check_cols=['lot_size']) }}
select symbol, name, lot_size from {{ ref('instruments') }}
{% endsnapshot %}
