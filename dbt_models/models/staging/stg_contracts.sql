-- One row per contract, with its customer and plan. It covers its org's usage on the UTC days
-- [first_day, end_day) (end_day null: open-ended or auto-renewing), as rating reads them.
select c.contract_id, c.org_id, cu.legal_name, cu.country, c.plan_id, p.name as plan_name, c.contract_type,
       c.currency, c.region, c.days_until_due, c.collection_method,
       (c.start_at at time zone 'UTC')::date as first_day,
       (case when c.auto_renew then null else c.end_at end at time zone 'UTC')::date as end_day
from {{ source('billing', 'contracts') }} c
join {{ billing_table('customers', 'contracts') }} cu using (org_id)
join {{ billing_table('plans', 'contracts') }} p using (plan_id)
