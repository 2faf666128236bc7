-- One row per day, org, project and chain, with the month it belongs to.
select day, date_trunc('month', day)::date as period_start, org_id, project_id, chain,
       requests, successful_requests, error_requests, bytes_out
from {{ source('billing', 'usage_rollups') }}
