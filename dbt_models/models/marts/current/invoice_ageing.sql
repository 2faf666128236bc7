-- Issued documents still unpaid, as of the run: due date (issue + the contract's payment terms)
-- and days overdue, in the usual receivables buckets. Credit notes owe nothing and are left out.
with open_documents as (
    select d.invoice_id, d.org_id, c.legal_name, d.kind, d.currency, d.total, d.sink, d.external_number,
           coalesce(d.issued_at::date, d.issue_date) as issued_on,
           coalesce(d.issued_at::date, d.issue_date) + coalesce(c.days_until_due, 30) as due_on
    from {{ ref('stg_invoices') }} d
    join {{ ref('stg_contracts') }} c using (contract_id)
    where d.status = 'ISSUED' and d.kind <> 'CREDIT_NOTE' and d.total > 0
)
select *,
       greatest(current_date - due_on, 0) as days_overdue,
       case when current_date <= due_on then 'not due'
            when current_date - due_on <= 30 then '1-30'
            when current_date - due_on <= 60 then '31-60'
            when current_date - due_on <= 90 then '61-90'
            else 'over 90' end as ageing_bucket
from open_documents
