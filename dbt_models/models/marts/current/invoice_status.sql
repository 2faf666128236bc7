-- Every invoice document by month, status and kind, as of the run: how much of each month is
-- drafted, being issued, issued, paid, voided or corrected. is_current splits the versions in force
-- (what the month bills) from the rest: summed together, an issued month's draft made since (a
-- discount not yet decided) and its superseded versions were counted beside the invoice in force.
select period_start, status, kind, is_current, currency, count(*) as documents, sum(total) as total
from {{ ref('stg_invoices') }}
group by 1, 2, 3, 4, 5
