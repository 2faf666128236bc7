-- Issued documents still unpaid, as of the run: what each still has open, its due date and days
-- overdue, in the usual receivables buckets. The due date is the one the customer was given:
-- Parasut's is the invoice's issue date plus the contract's payment terms (the e-invoice's
-- due_date), Stripe's counts from finalization (issued_at), and an invoice charged automatically
-- is due at once. Counting Parasut's from when the sink ran put it days late. A credit note
-- owes nothing: it reduces what the invoice it corrects has open (Stripe credits an open invoice
-- before anything else; in Parasut the refund offsets the customer's account), and an invoice
-- credited in full is no longer open. Listing invoices at their full total overstated receivables.
with credited as (
    select corrects_invoice_id as invoice_id, sum(total) as credited  -- a credit note's total is negative
    from {{ ref('stg_invoices') }}
    where kind = 'CREDIT_NOTE' and status in ('ISSUED', 'PAID')
    group by 1
), open_documents as (
    select d.invoice_id, d.org_id, c.legal_name, d.kind, d.currency, d.total,
           coalesce(cr.credited, 0) as credited, d.total + coalesce(cr.credited, 0) as amount_due,
           d.sink, d.external_number,
           issued.on as issued_on,
           issued.on + case when c.collection_method = 'charge_automatically' then 0 else c.days_until_due end
               as due_on
    from {{ ref('stg_invoices') }} d
    join {{ ref('stg_contracts') }} c using (contract_id)
    left join credited cr using (invoice_id)
    cross join lateral (select case when d.sink = 'PARASUT' then coalesce(d.issue_date, d.issued_at::date)
                                    else coalesce(d.issued_at::date, d.issue_date) end as on) issued
    where d.status = 'ISSUED' and d.kind <> 'CREDIT_NOTE' and d.total + coalesce(cr.credited, 0) > 0
)
select *,
       greatest(current_date - due_on, 0) as days_overdue,
       case when current_date <= due_on then 'not due'
            when current_date - due_on <= 30 then '1-30'
            when current_date - due_on <= 60 then '31-60'
            when current_date - due_on <= 90 then '61-90'
            else 'over 90' end as ageing_bucket
from open_documents
