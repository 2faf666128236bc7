-- Invoiced revenue per month, chain and currency (latest version of each invoice). Base fees
-- and overage not tied to one chain are reported under chain 'all chains'.
with latest as (
    select invoice_id
    from (
        select invoice_id, rank() over (partition by contract_id, period_start order by version desc) as rnk
        from {{ source('billing', 'invoices') }}
        where status <> 'VOID' and kind = 'INVOICE'  -- a version, not its correction documents
    ) v
    where rnk = 1
)
select
    l.period_start,
    coalesce(l.chain, 'all chains') as chain,
    l.currency,
    sum(l.amount) as revenue,
    sum(case when l.kind in ('USAGE', 'USAGE_INFO') then l.quantity else 0 end) as requests,
    count(distinct l.org_id) as customers
from {{ ref('stg_invoice_lines') }} l
join latest using (invoice_id)
group by 1, 2, 3
