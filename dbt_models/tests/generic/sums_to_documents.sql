{# The mart's revenue per month and currency equals the invoice documents' subtotals:
   measure 'revenue_issued' against issued documents, 'revenue' against current versions.
   Only the months the mart holds are compared. #}
{% test sums_to_documents(model, measure, documents) %}
with mart as (
    select period_start, currency, sum({{ measure }}) as amount from {{ model }} group by 1, 2
), documents as (
    select period_start, currency, sum(subtotal) as amount
    from {{ ref('stg_invoices') }}
    where {{ documents }} and period_start in (select period_start from mart)
    group by 1, 2
)
select coalesce(m.period_start, d.period_start) as period_start, coalesce(m.currency, d.currency) as currency,
       m.amount as mart_amount, d.amount as documents_amount
from mart m full join documents d on m.period_start = d.period_start and m.currency = d.currency
where coalesce(m.amount, 0) <> coalesce(d.amount, 0)
{% endtest %}
