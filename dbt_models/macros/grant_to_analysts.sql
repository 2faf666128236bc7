{# Analysts read the marts through the billing_analyst role (created by the pipeline's
   migrations): usage and select on every schema dbt writes, after each run. #}
{% macro grant_to_analysts() %}
  {% if execute %}
    {% set schemas = [target.schema ~ '_marts', target.schema ~ '_reference', target.schema ~ '_staging'] %}
    {% for schema in schemas %}
      {% set exists = run_query("select 1 from information_schema.schemata where schema_name = '" ~ schema ~ "'") %}
      {% if exists.rows | length > 0 %}
        {% do run_query("grant usage on schema " ~ schema ~ " to billing_analyst") %}
        {% do run_query("grant select on all tables in schema " ~ schema ~ " to billing_analyst") %}
      {% endif %}
    {% endfor %}
  {% endif %}
{% endmacro %}
