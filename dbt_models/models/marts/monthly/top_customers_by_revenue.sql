-- The ten customers billed the most each month, in USD at the month's reporting rate (ties share
-- a rank). A customer billed nothing is no top customer: ranked too, the demo's 33 customers on
-- free usage tied for eighth and the "ten" were 40.
with billed as (
    select d.period_start, d.org_id, sum({{ to_usd('d.subtotal') }}) as revenue_usd
    from {{ ref('stg_invoices') }} d
    left join {{ ref('reporting_fx_rates') }} fx on fx.period_start = d.period_start and fx.currency = d.currency
    where {{ this_month('d.period_start') }} and d.is_current
    group by 1, 2
    -- in the invoice currency: a month without its reporting rate still fails revenue_usd's not_null
    having sum(d.subtotal) > 0
), ranked as (
    select *, rank() over (partition by period_start order by revenue_usd desc) as revenue_rank from billed
)
select r.period_start, r.revenue_rank, r.org_id, cu.legal_name, r.revenue_usd
from ranked r
left join {{ billing_table('customers', 'contracts') }} cu using (org_id)
where r.revenue_rank <= 10
