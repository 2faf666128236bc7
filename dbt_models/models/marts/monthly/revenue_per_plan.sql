-- Revenue per month, plan and invoice currency (and USD), with the number of contracts billed.
with documents as (
    select * from {{ ref('stg_invoices') }} where {{ this_month() }} and (is_current or is_issued)
)
select
    d.period_start,
    c.plan_id,
    c.plan_name,
    d.currency,
    count(distinct case when d.is_current then d.contract_id end) as contracts,
    sum(case when d.is_current then d.subtotal else 0 end) as revenue,
    sum(case when d.is_issued then d.subtotal else 0 end) as revenue_issued,
    {{ to_usd("sum(case when d.is_current then d.subtotal else 0 end)") }} as revenue_usd,
    {{ to_usd("sum(case when d.is_issued then d.subtotal else 0 end)") }} as revenue_issued_usd
from documents d
join {{ ref('stg_contracts') }} c using (contract_id)
left join {{ ref('reporting_fx_rates') }} fx on fx.period_start = d.period_start and fx.currency = d.currency
group by d.period_start, c.plan_id, c.plan_name, d.currency, fx.usd_per_unit
