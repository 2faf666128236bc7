-- Daily usage per (day, org, project, chain) for the UTC window [window_start, window_end), counting
-- every delivered row. The billable rollup is this minus usage_duplicates.sql (copies of a request
-- already counted), subtracted in Arrow. Splitting it this way keeps the big aggregation on
-- LowCardinality keys and confines request-level deduplication to the few duplicated ids.
-- Every meter of catalog/meters.yaml is added as one more aggregate where the marker stands. The
-- row filter marker narrows the rows for the split at customers' local midnights (meter_sql.py).
-- Rows that cannot be billed (usage_billable.sql) are quarantined: counted by
-- usage_source_totals.sql and listed by usage_quarantine.sql, never silently dropped.
SELECT
    toDate(timestamp)               AS day,
    org_id,
    project_id,
    chain,
    count()                         AS requests,
    countIf(http_status < 400)      AS successful_requests,
    countIf(http_status >= 400)     AS error_requests,
    sum(bytes_out)                  AS bytes_out /* declared meters */
FROM requests_raw
WHERE timestamp >= {window_start:DateTime64(3, 'UTC')}
  AND timestamp < {window_end:DateTime64(3, 'UTC')}
  AND (/* include usage_billable */) /* row filter */
GROUP BY day, org_id, project_id, chain
-- requests_raw is sorted by (toDate(timestamp), org_id, project_id, chain, ...): aggregating in that
-- order streams sorted groups, which PostgreSQL's primary key then appends. Reading in order merges
-- every part that holds the window, a block of each at a time: a day of a freshly loaded
-- billion-request month lies in 50 parts (a gateway's steady inserts leave a day in many parts
-- too), and their default 65 k-row blocks took 1,164 MiB. Blocks of 4,096 rows take 371 MiB in the
-- same time (13.8 s against 15.9 s; hashing took 231 MiB and 15.1 s, but 3.5 s instead of 2.4 s
-- for a three-day chunk of 100M requests in five parts).
ORDER BY day, org_id, project_id, chain
SETTINGS optimize_aggregation_in_order = 1, max_block_size = 4096
