-- Per-day source totals of requests_raw for [window_start, window_end): what the rollups of each
-- day must reconcile to. raw_rows counts every delivery; quarantined_rows those without org or
-- project or on a chain not in catalog/chains.yaml, which cannot be billed (usage_quarantine.sql
-- lists them).
SELECT
    toDate(timestamp)                          AS day,
    count()                                    AS raw_rows,
    countIf(org_id = '' OR project_id = '' OR NOT has({known_chains:Array(String)}, chain)) AS quarantined_rows
FROM requests_raw
WHERE timestamp >= {window_start:DateTime64(3, 'UTC')}
  AND timestamp < {window_end:DateTime64(3, 'UTC')}
GROUP BY day
ORDER BY day
