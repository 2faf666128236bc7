-- One row per invoice line, with its document's flags and the chain, kind and plan of the rated
-- charge it rounds. A line of a charge since re-rated away keeps no chain ('all chains') and no
-- plan (nor does a charge rated before charges named their plan): revenue_per_plan then takes the
-- contract's.
select
    l.invoice_id,
    l.line_no,
    i.contract_id,
    i.org_id,
    i.period_start,
    i.version,
    i.kind as document_kind,
    i.status,
    i.is_current,
    i.is_issued,
    r.kind,
    coalesce(r.chain, 'all chains') as chain,
    r.plan_id,
    l.quantity,
    l.amount,
    l.currency
from {{ billing_table('invoice_lines', 'invoices') }} l
join {{ ref('stg_invoices') }} i using (invoice_id)
left join {{ source('billing', 'rated_charges') }} r
  on r.charge_id = l.charge_id and r.period_start = i.period_start
