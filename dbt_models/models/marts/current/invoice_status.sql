-- Every invoice document by month, status and kind, as of the run: how much of each month is
-- drafted, being issued, issued, paid, voided or corrected.
select period_start, status, kind, currency, count(*) as documents, sum(total) as total
from {{ ref('stg_invoices') }}
group by 1, 2, 3, 4
