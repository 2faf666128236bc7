-- The reconciliation side of usage_rollups: per UTC day, the billable requests, successful ones
-- and bytes out computed the plain way (each request_id once, its first copy by the full tuple
-- deciding the day, copies looked for from {lookback_start}), independently of the rollup's
-- deliveries-minus-duplicates path. Quarantined rows (no org or project, unknown chain) are out.
SELECT toDate(timestamp) AS day, count() AS requests, countIf(http_status < 400) AS successful_requests,
       sum(bytes_out) AS bytes_out
FROM
(
    SELECT timestamp, org_id, project_id, chain, http_status, bytes_out
    FROM requests_raw
    WHERE timestamp >= {lookback_start:DateTime64(3, 'UTC')} AND timestamp < {window_end:DateTime64(3, 'UTC')}
    ORDER BY request_id, timestamp, org_id, project_id, chain, http_status, bytes_out
    LIMIT 1 BY request_id
)
WHERE timestamp >= {window_start:DateTime64(3, 'UTC')}
  AND org_id != '' AND project_id != '' AND has({known_chains:Array(String)}, chain)
GROUP BY day
ORDER BY day
