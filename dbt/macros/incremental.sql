{% macro newly_ingested() -%}
{#-
  Predicate on a staging model: rows ingested since this model's newest build, minus an overlap
  (var ingest_overlap_minutes) so a row committed while that build ran is still seen. Late rows
  are found by when they arrived, not by their event time, so a late trade for an hour built
  long ago marks that hour for rebuilding. Outside incremental runs every row counts.
-#}
{%- if is_incremental() -%}
ingested_at >= (
    select max(built_at) - toIntervalMinute({{ var('ingest_overlap_minutes') | int }})
    from {{ this }}
)
{%- else -%}
1 = 1
{%- endif -%}
{%- endmacro %}


{% macro built_at() -%}
now64(3, 'UTC')
{%- endmacro %}
