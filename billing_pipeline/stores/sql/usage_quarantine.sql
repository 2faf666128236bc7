-- Rows of requests_raw in [window_start, window_end) that cannot be billed, with the reason, so the
-- data team can fix the source: kept in quarantined_usage and counted, never silently dropped.
SELECT
    toDate(timestamp)                                       AS day,
    multiIf(org_id = '', 'missing org_id', project_id = '', 'missing project_id', 'unknown chain') AS reason,
    org_id,
    project_id,
    chain,
    count()                                                 AS raw_rows
FROM requests_raw
WHERE timestamp >= {window_start:DateTime64(3, 'UTC')}
  AND timestamp < {window_end:DateTime64(3, 'UTC')}
  AND (org_id = '' OR project_id = '' OR NOT has({known_chains:Array(String)}, chain))
GROUP BY day, reason, org_id, project_id, chain
ORDER BY day, reason, org_id, project_id, chain
