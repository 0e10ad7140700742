select * from {{ ref('instrument_table') }} where double_lot < 0
