-- The reconciliation side of usage_rollups: per UTC day, the billable requests, successful ones
-- and bytes out computed the plain way (each request_id once, its first copy by the full tuple
-- deciding the day, copies looked for from {lookback_start}), independently of the rollup's
-- deliveries-minus-duplicates path. Quarantined rows (not usage_billable.sql) are left out
-- before copies are compared, as the rollups leave them out.
SELECT toDate(timestamp) AS day, count() AS requests, countIf(http_status < 400) AS successful_requests,
       sum(bytes_out) AS bytes_out
FROM
(
    -- each request's first copy: the smallest full tuple (a hash aggregation, not a sort)
    SELECT first.1 AS timestamp, first.5 AS http_status, first.6 AS bytes_out
    FROM
    (
        SELECT min((timestamp, org_id, project_id, chain, http_status, bytes_out)) AS first
        FROM requests_raw
        WHERE timestamp >= {lookback_start:DateTime64(3, 'UTC')} AND timestamp < {window_end:DateTime64(3, 'UTC')}
          AND (/* include usage_billable */)
        GROUP BY request_id
    )
)
WHERE timestamp >= {window_start:DateTime64(3, 'UTC')}
GROUP BY day
ORDER BY day
