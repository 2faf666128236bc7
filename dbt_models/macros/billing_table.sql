{# A billing table written by the same Dagster asset as a declared source: invoice_lines with
   invoices (invoice_drafts), customers and plans with contracts. Each Dagster asset maps to one
   dbt source; this keeps the dependency on that source, so the lineage stays one graph. #}
{% macro billing_table(name, written_with) %}
  {%- set relation = source('billing', written_with) -%}
  {{ adapter.quote(relation.schema) }}.{{ adapter.quote(name) }}
{%- endmacro %}
