-- One row per invoice line, with the chain and kind of the rated charge it rounds.
select
    l.invoice_id,
    l.line_no,
    i.contract_id,
    i.org_id,
    i.period_start,
    i.version,
    i.status,
    r.kind,
    r.chain,
    l.quantity,
    l.amount,
    l.currency
from {{ source('billing', 'invoice_lines') }} l
join {{ source('billing', 'invoices') }} i using (invoice_id)
join {{ source('billing', 'rated_charges') }} r
  on r.charge_id = l.charge_id and r.period_start = i.period_start
