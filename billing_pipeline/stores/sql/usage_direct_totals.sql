-- The reconciliation side of usage_rollups: per UTC day, the billable requests, successful ones
-- and bytes out computed the plain way, each request once (its first copy by the full tuple
-- deciding the day, copies looked for from {lookback_start}), independently of the rollup's
-- deliveries-minus-copies path: a request delivered once is its own first copy and is counted as
-- it is; the requests delivered more than once (candidates by request_key, then grouped on
-- request_id itself, so a hash collision merges nothing) are counted by their first copy.
-- Quarantined rows (not usage_billable.sql) are left out before copies are compared, as the
-- rollups leave them out.
-- the keys delivered more than once in reach of the window's copies
WITH repeated AS
(
    SELECT request_key FROM requests_raw
    WHERE timestamp >= {lookback_start:DateTime64(3, 'UTC')} AND timestamp < {window_end:DateTime64(3, 'UTC')}
      AND (/* include usage_billable */)
    GROUP BY request_key HAVING count() > 1
)
SELECT day, sum(requests) AS requests, sum(successful_requests) AS successful_requests,
       sum(bytes_out) AS bytes_out /* meter sums */
FROM
(
    SELECT toDate(timestamp) AS day, count() AS requests, countIf(http_status < 400) AS successful_requests,
           sum(bytes_out) AS bytes_out /* declared meters */
    FROM requests_raw
    WHERE timestamp >= {window_start:DateTime64(3, 'UTC')} AND timestamp < {window_end:DateTime64(3, 'UTC')}
      AND (/* include usage_billable */)
      AND request_key NOT IN repeated
    GROUP BY day

    UNION ALL

    SELECT toDate(copy.1) AS day, count() AS requests, countIf(copy.5 < 400) AS successful_requests,
           sum(copy.6) AS bytes_out /* copy meters */
    FROM
    (
        -- each repeated request's first copy: the smallest full tuple (usage_duplicates.sql's order)
        SELECT min((timestamp, org_id, project_id, chain, http_status, bytes_out, method, latency_ms,
                    api_key_id)) AS copy
        FROM requests_raw
        WHERE timestamp >= {lookback_start:DateTime64(3, 'UTC')} AND timestamp < {window_end:DateTime64(3, 'UTC')}
          AND (/* include usage_billable */)
          AND request_key IN repeated
        GROUP BY request_id
    )
    WHERE copy.1 >= {window_start:DateTime64(3, 'UTC')}
    GROUP BY day
)
GROUP BY day
ORDER BY day
-- The repeated keys' hash table spills to disk past 512 MiB, as usage_duplicates.sql's does (which
-- says why 512 MiB).
SETTINGS max_bytes_before_external_group_by = 536870912
