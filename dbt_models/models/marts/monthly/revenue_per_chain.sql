-- Revenue per month, chain and invoice currency, and in USD at the month's reporting rate.
-- revenue: what the month bills (each contract-month's current version, drafts included);
-- revenue_issued: what customers received (invoices, credit notes and supplementary invoices
-- issued). Base fees, true-ups and discounts, tied to no chain, are under 'all chains'.
-- requests: the requests served on the chain in the month (its UTC days) to customers billed in
-- the currency, from the rollups, whatever their plans price (requests, egress, compute units):
-- summing the lines' quantities instead added gigabytes and compute units to the requests.
with lines as (
    select * from {{ ref('stg_invoice_lines') }} where {{ this_month() }}
), billed as (
    select
        l.period_start,
        l.chain,
        l.currency,
        sum(case when l.is_current then l.amount else 0 end) as revenue,
        sum(case when l.is_issued then l.amount else 0 end) as revenue_issued,
        count(distinct case when l.is_current then l.org_id end) as customers
    from lines l
    where l.is_current or l.is_issued
    group by l.period_start, l.chain, l.currency
), served as (
    select u.period_start, u.chain, c.currency, sum(u.requests) as requests
    from {{ ref('stg_usage_rollups') }} u
    join {{ ref('stg_contracts') }} c
      on c.org_id = u.org_id and u.day >= c.first_day and (c.end_day is null or u.day < c.end_day)
    where {{ this_month('u.period_start') }}
    group by 1, 2, 3
)
select
    coalesce(b.period_start, s.period_start) as period_start,
    coalesce(b.chain, s.chain) as chain,
    coalesce(b.currency, s.currency) as currency,
    coalesce(b.revenue, 0) as revenue,
    coalesce(b.revenue_issued, 0) as revenue_issued,
    {{ to_usd("coalesce(b.revenue, 0)") }} as revenue_usd,
    {{ to_usd("coalesce(b.revenue_issued, 0)") }} as revenue_issued_usd,
    coalesce(s.requests, 0) as requests,
    coalesce(b.customers, 0) as customers
from billed b
full join served s on s.period_start = b.period_start and s.chain = b.chain and s.currency = b.currency
left join {{ ref('reporting_fx_rates') }} fx
  on fx.period_start = coalesce(b.period_start, s.period_start) and fx.currency = coalesce(b.currency, s.currency)
