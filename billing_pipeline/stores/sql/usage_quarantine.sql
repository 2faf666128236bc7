-- Rows of requests_raw in [window_start, window_end) that cannot be billed (usage_billable.sql),
-- with the reason (usage_quarantine_reason.sql), so the data team can fix the source: kept in
-- quarantined_usage and counted, never silently dropped. The ids are shown as PostgreSQL can store
-- and a person can read them: over 256 bytes cut to their first 64 and their size, bytes that are
-- not UTF-8 replaced by U+FFFD, control characters by '?'.
SELECT day, reason, shown_org_id AS org_id, shown_project_id AS project_id, shown_chain AS chain,
       count() AS raw_rows
FROM
(
    SELECT
        toDate(timestamp) AS day,
        (/* include usage_quarantine_reason */) AS reason,
        replaceRegexpAll(toValidUTF8(if(length(org_id) > 256,
            concat(substring(org_id, 1, 64), '... (', toString(length(org_id)), ' bytes)'), org_id)),
            '[\\x00-\\x1F\\x7F]', '?') AS shown_org_id,
        replaceRegexpAll(toValidUTF8(if(length(project_id) > 256,
            concat(substring(project_id, 1, 64), '... (', toString(length(project_id)), ' bytes)'), project_id)),
            '[\\x00-\\x1F\\x7F]', '?') AS shown_project_id,
        replaceRegexpAll(toValidUTF8(if(length(chain) > 256,
            concat(substring(chain, 1, 64), '... (', toString(length(chain)), ' bytes)'), chain)),
            '[\\x00-\\x1F\\x7F]', '?') AS shown_chain
    FROM requests_raw
    WHERE timestamp >= {window_start:DateTime64(3, 'UTC')}
      AND timestamp < {window_end:DateTime64(3, 'UTC')}
      AND NOT (/* include usage_billable */)
)
GROUP BY day, reason, org_id, project_id, chain
ORDER BY day, reason, org_id, project_id, chain
