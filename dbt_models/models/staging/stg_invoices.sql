-- Every invoice document. is_current: the contract-month's version in force, what the month bills
-- (as `billing invoices` shows it, summary.versions_in_force): its latest issued version (a
-- corrected one counts: its documents carry the difference) or, if none was ever issued, its
-- latest draft. A draft made after the month was issued is not in force until the dispute flow
-- issues it; counting it moved an issued month's revenue by a discount never sent to the customer.
-- is_issued: a document the customer received (an invoice, a credit note or a supplementary
-- invoice), whose amounts the month's issued revenue sums.
with versions as (
    select invoice_id,
           row_number() over (partition by contract_id, period_start
                              order by status in ('ISSUED', 'PAID', 'CORRECTING', 'CORRECTED') desc,
                                       version desc) as recency
    from {{ source('billing', 'invoices') }}
    where kind = 'INVOICE' and status <> 'VOID'
)
select i.invoice_id, i.contract_id, i.org_id, i.period_start, i.version, i.kind, i.corrects_invoice_id, i.status,
       i.currency, i.subtotal, i.tax, i.credits_applied, i.total, i.issue_date, i.issued_at, i.paid_at, i.sink,
       i.external_number,
       coalesce(v.recency = 1, false) as is_current,
       i.status in ('ISSUED', 'PAID') as is_issued
from {{ source('billing', 'invoices') }} i
left join versions v using (invoice_id)
