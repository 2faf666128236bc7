-- Margin per chain and month, in USD: revenue against infrastructure cost (seed infra_costs:
-- a fixed monthly cost plus a cost per million requests, effective from valid_from).
-- Revenue tied to no chain (base fees, true-ups, discounts) is shared out over a contract's
-- chains by its requests on each, on the days it covers (an org's contract that ended mid-month
-- and its successor each share their own fee by their own days' traffic); a contract with no
-- requests keeps it under 'unallocated'.
with lines as (
    select l.*, {{ to_usd('l.amount') }} as amount_usd
    from {{ ref('stg_invoice_lines') }} l
    left join {{ ref('reporting_fx_rates') }} fx on fx.period_start = l.period_start and fx.currency = l.currency
    where {{ this_month('l.period_start') }} and l.is_current
), usage as (
    select u.period_start, c.contract_id, u.chain, sum(u.requests) as requests
    from {{ ref('stg_usage_rollups') }} u
    join {{ ref('stg_contracts') }} c
      on c.org_id = u.org_id and u.day >= c.first_day and (c.end_day is null or u.day < c.end_day)
    where {{ this_month('u.period_start') }}
    group by 1, 2, 3
), shares as (
    select *, requests::numeric / nullif(sum(requests) over (partition by period_start, contract_id), 0) as share
    from usage
), revenue as (
    select period_start, chain, sum(amount_usd) as revenue_usd from lines where chain <> 'all chains' group by 1, 2
    union all
    select l.period_start, coalesce(s.chain, 'unallocated'), sum(l.amount_usd * coalesce(s.share, 1))
    from lines l left join shares s on s.period_start = l.period_start and s.contract_id = l.contract_id
    where l.chain = 'all chains'
    group by 1, 2
), requests as (
    select period_start, chain, sum(requests) as requests
    from {{ ref('stg_usage_rollups') }} where {{ this_month() }} group by 1, 2
), chains as (
    select period_start, chain from revenue union select period_start, chain from requests
), costs as (
    select ch.period_start, ch.chain, c.fixed_monthly_usd, c.usd_per_million_requests,
           row_number() over (partition by ch.period_start, ch.chain order by c.valid_from desc) as latest
    from chains ch
    join {{ ref('infra_costs') }} c on c.chain = ch.chain and c.valid_from <= ch.period_start
)
select
    ch.period_start,
    ch.chain,
    coalesce(q.requests, 0) as requests,
    round(coalesce(sum(r.revenue_usd), 0), 4) as revenue_usd,
    round(coalesce(max(k.fixed_monthly_usd), 0) + coalesce(q.requests, 0) / 1000000.0 * coalesce(max(k.usd_per_million_requests), 0), 4)
        as infra_cost_usd,
    round(coalesce(sum(r.revenue_usd), 0) - coalesce(max(k.fixed_monthly_usd), 0)
          - coalesce(q.requests, 0) / 1000000.0 * coalesce(max(k.usd_per_million_requests), 0), 4) as margin_usd
from chains ch
left join revenue r on r.period_start = ch.period_start and r.chain = ch.chain
left join requests q on q.period_start = ch.period_start and q.chain = ch.chain
left join costs k on k.period_start = ch.period_start and k.chain = ch.chain and k.latest = 1
group by ch.period_start, ch.chain, q.requests
