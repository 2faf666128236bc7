select c.contract_id, c.org_id, cu.legal_name, cu.country, c.plan_id, p.name as plan_name, c.contract_type,
       c.currency, c.region, c.days_until_due
from {{ source('billing', 'contracts') }} c
join {{ billing_table('customers', 'contracts') }} cu using (org_id)
join {{ billing_table('plans', 'contracts') }} p using (plan_id)
