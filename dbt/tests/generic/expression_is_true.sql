{% test expression_is_true(model, expression, column_name=None, where=None) %}
{#- Rows that break an invariant; the test passes when there are none. -#}
select *
from {{ model }}
where not ({{ expression }})
{%- if where %} and ({{ where }}){% endif %}
{% endtest %}
