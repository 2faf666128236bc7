-- Revenue per month, chain and invoice currency, and in USD at the month's reporting rate.
-- revenue: what the month bills (each contract-month's current version, drafts included);
-- revenue_issued: what customers received (invoices, credit notes and supplementary invoices
-- issued). Base fees, true-ups and discounts, tied to no chain, are under 'all chains'.
with lines as (
    select * from {{ ref('stg_invoice_lines') }} where {{ this_month() }}
)
select
    l.period_start,
    l.chain,
    l.currency,
    sum(case when l.is_current then l.amount else 0 end) as revenue,
    sum(case when l.is_issued then l.amount else 0 end) as revenue_issued,
    {{ to_usd("sum(case when l.is_current then l.amount else 0 end)") }} as revenue_usd,
    {{ to_usd("sum(case when l.is_issued then l.amount else 0 end)") }} as revenue_issued_usd,
    sum(case when l.is_current and l.kind in ('USAGE', 'USAGE_INFO') then l.quantity else 0 end) as requests,
    count(distinct case when l.is_current then l.org_id end) as customers
from lines l
left join {{ ref('reporting_fx_rates') }} fx on fx.period_start = l.period_start and fx.currency = l.currency
where l.is_current or l.is_issued
group by l.period_start, l.chain, l.currency, fx.usd_per_unit
