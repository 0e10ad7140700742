select symbol, name, lot_size from {{ ref('instruments') }}
