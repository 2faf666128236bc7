-- Revenue per month, plan and invoice currency (and USD), with the number of contracts billed.
-- Summed from the invoice lines by the plan that priced each line's charge: a contract amended
-- to another plan mid-month bills its days before under the old plan and its days after under
-- the new one, and is counted under both (summing its documents under the contract's signed plan
-- put the whole month there).
with lines as (
    select l.*, coalesce(l.plan_id, c.plan_id) as priced_by
    from {{ ref('stg_invoice_lines') }} l
    join {{ ref('stg_contracts') }} c using (contract_id)
    where {{ this_month('l.period_start') }} and (l.is_current or l.is_issued)
)
select
    l.period_start,
    l.priced_by as plan_id,
    p.name as plan_name,
    l.currency,
    count(distinct case when l.is_current then l.contract_id end) as contracts,
    sum(case when l.is_current then l.amount else 0 end) as revenue,
    sum(case when l.is_issued then l.amount else 0 end) as revenue_issued,
    {{ to_usd("sum(case when l.is_current then l.amount else 0 end)") }} as revenue_usd,
    {{ to_usd("sum(case when l.is_issued then l.amount else 0 end)") }} as revenue_issued_usd
from lines l
join {{ billing_table('plans', 'contracts') }} p on p.plan_id = l.priced_by
left join {{ ref('reporting_fx_rates') }} fx on fx.period_start = l.period_start and fx.currency = l.currency
group by l.period_start, l.priced_by, p.name, l.currency, fx.usd_per_unit
