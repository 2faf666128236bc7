-- Per-day source totals of requests_raw for [window_start, window_end): what the rollups of each
-- day must reconcile to. raw_rows counts every delivery; quarantined_rows those that cannot be
-- billed (usage_billable.sql: a missing or malformed id, an unknown chain, an impossible status or
-- byte count), which usage_quarantine.sql lists with their reasons.
SELECT
    toDate(timestamp)                          AS day,
    count()                                    AS raw_rows,
    countIf(NOT (/* include usage_billable */)) AS quarantined_rows,
    -- about how many rollup rows the day makes (an estimate, to size the rollup's chunks)
    uniq(org_id, project_id, chain)            AS rollup_keys
FROM requests_raw
WHERE timestamp >= {window_start:DateTime64(3, 'UTC')}
  AND timestamp < {window_end:DateTime64(3, 'UTC')}
GROUP BY day
ORDER BY day
