-- For orgs billed in a timezone other than UTC: the part of each UTC day's usage sent before the
-- local midnight inside that day (cut_keys/cut_ms: 'org|YYYY-MM-DD' -> epoch ms), per
-- (day, org, project, chain). Together with the whole-day rollups this gives usage per local day.
-- Requests are deduplicated on request_id exactly (first copy wins, as in usage_duplicates.sql);
-- only the orgs in tz_orgs are read, so this stays small.
SELECT
    toDate(copy.1)                  AS day,
    copy.2                          AS org_id,
    copy.3                          AS project_id,
    copy.4                          AS chain,
    count()                         AS requests /* declared meters */
FROM
(
    SELECT min((timestamp, org_id, project_id, chain, http_status, bytes_out, method, latency_ms,
                api_key_id)) AS copy
    FROM requests_raw
    WHERE timestamp >= {window_start:DateTime64(3, 'UTC')} - toIntervalHour({dedup_lookback_hours:UInt32})
      AND timestamp < {window_end:DateTime64(3, 'UTC')}
      AND has({tz_orgs:Array(String)}, org_id)
      AND project_id != '' AND has({known_chains:Array(String)}, chain)
    GROUP BY request_id
)
WHERE copy.1 >= {window_start:DateTime64(3, 'UTC')}
  AND toUnixTimestamp64Milli(copy.1) < transform(concat(copy.2, '|', toString(toDate(copy.1))),
                                                 {cut_keys:Array(String)}, {cut_ms:Array(Int64)}, toInt64(0))
GROUP BY day, org_id, project_id, chain
