{# The month a partitioned run builds: Dagster passes --vars '{"period_start": "2026-10-01"}'.
   Without it (a full build) every month is built. #}
{% macro this_month(column='period_start') %}
  {%- if var('period_start') -%} {{ column }} = '{{ var("period_start") }}'::date {%- else -%} true {%- endif -%}
{% endmacro %}

{# Amount in USD at the month's reporting rate (reference.reporting_fx_rates). #}
{% macro to_usd(amount, rates_alias='fx') %}
  round({{ amount }} * {{ rates_alias }}.usd_per_unit, 4)
{% endmacro %}
