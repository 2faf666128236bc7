-- The ten customers with the most requests each month (ties share a rank), from the rollups.
with usage as (
    select period_start, org_id, sum(requests) as requests, sum(bytes_out) as bytes_out,
           count(distinct chain) as chains
    from {{ ref('stg_usage_rollups') }}
    where {{ this_month() }}
    group by 1, 2
), ranked as (
    select *, rank() over (partition by period_start order by requests desc) as usage_rank from usage
)
select r.period_start, r.usage_rank, r.org_id, cu.legal_name, r.requests, r.bytes_out, r.chains
from ranked r
left join {{ billing_table('customers', 'contracts') }} cu using (org_id)
where r.usage_rank <= 10
